"""Records on the `events` and `deadletter` topics.

`events` carries one record per accepted hit once the sessionizer has placed it: a
`pageview` or `event` with its session_id, or a `late_hit` with the reason it fits no
session (SPEC rule 6). So every accepted hit reaches the sink exactly once through one
topic, which is what makes the end-to-end accounting exact.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas import SCHEMA_VERSION


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


EventsTopicRecord = Annotated[PageviewRecord | EventRecord | LateHitRecord, Field(discriminator="kind")]


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
