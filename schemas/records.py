"""Records on the `events` and `deadletter` topics.

`events` carries one record per accepted hit once the sessionizer has placed it: a
`pageview` or `event` with its session_id, or a `late_hit` with the reason it fits no
session (SPEC rule 6). So every accepted hit reaches the sink exactly once through one
topic, which is what makes the end-to-end accounting exact. When a late hit merges or splits
sessions, `move` (one hit) and `move_range` records re-point earlier hits: they follow the
hit's own record on the same partition (keyed by guid), so the sink applies them after it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas import SCHEMA_VERSION
from schemas.hit import Currency, Money


class PageviewRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = SCHEMA_VERSION
    kind: Literal["pageview"] = "pageview"
    hit_id: str
    session_id: str
    guid: str
    site: str
    occurred_at: datetime
    received_at: datetime
    url: str
    path: str
    referrer: str = ""
    title: str | None = None
    # Identity (SPEC section 5, `identities` and `device_links`): forwarded from the hit as sent.
    user_id: str | None = None
    previous_guid: str | None = None


class EventRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = SCHEMA_VERSION
    kind: Literal["event"] = "event"
    hit_id: str
    session_id: str
    guid: str
    site: str
    occurred_at: datetime
    received_at: datetime
    name: str
    module: str | None = None
    url: str
    properties: dict[str, Any] = Field(default_factory=dict)
    value: Money = None  # a conversion's value (SPEC section 2: event.value), with its currency
    currency: Currency = None
    user_id: str | None = None
    previous_guid: str | None = None


class LateHitRecord(BaseModel):
    """A hit that fits no session: it arrived after its session closed and outside the rejoin window."""

    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = SCHEMA_VERSION
    kind: Literal["late_hit"] = "late_hit"
    hit_id: str
    guid: str
    occurred_at: datetime
    received_at: datetime
    reason: str
    hit: dict[str, Any]  # the enriched hit as it was on `hits`


class HitMoveRecord(BaseModel):
    """An earlier hit now belongs to another session (SPEC rule 6: a late hit merged or split
    sessions). The sink re-points the hit's row, found by its primary key (occurred_at, hit_id)."""

    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = SCHEMA_VERSION
    kind: Literal["move"] = "move"
    hit_id: str
    guid: str
    type: Literal["pageview", "event"]
    occurred_at: datetime
    session_id: str


class RangeMoveRecord(BaseModel):
    """Hits the sessionizer no longer keeps one by one (a block of a device that sent more than
    it retains) now belong to another session: the device's rows of `from_session_id` with
    occurred_at in [`first_at`, `last_at`] are re-pointed to `session_id`."""

    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = SCHEMA_VERSION
    kind: Literal["move_range"] = "move_range"
    guid: str
    from_session_id: str
    first_at: datetime
    last_at: datetime
    session_id: str


EventsTopicRecord = Annotated[
    PageviewRecord | EventRecord | LateHitRecord | HitMoveRecord | RangeMoveRecord, Field(discriminator="kind")
]


class DeadLetter(BaseModel):
    """Anything refused, with why and the original bytes (base64 on the wire: they may not be UTF-8)."""

    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = SCHEMA_VERSION
    source: Literal["ingest", "sessionizer", "sink"]
    reason: str
    errors: list[dict[str, str]] = Field(default_factory=list)
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    hit_id: str | None = None
    payload_b64: str
    at: datetime
