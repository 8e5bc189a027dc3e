"""Record factories for the sink's tests and benchmark: wire bytes as the sessionizer writes them.

Not used by the sink itself. Every factory returns the model; `encode(...)` gives the bytes,
`FakeRecord` wraps them as a consumed Kafka record.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from schemas.records import EventRecord, HitMoveRecord, LateHitRecord, PageviewRecord, RangeMoveRecord
from schemas.session import SessionRetraction, SessionSnapshot
from schemas.timefmt import UTC, to_ms
from schemas.wire import encode

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SITE = "www.oakridge-apts.com"


@dataclass(frozen=True, slots=True)
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0


def new_id() -> str:
    return str(uuid.uuid4())


def session(
    *,
    session_id: str | None = None,
    guid: str | None = None,
    started_at: datetime = T0,
    version: int = 1,
    channel: str = "Direct",
    utm_source: str | None = None,
    utm_medium: str | None = None,
    utm_campaign: str | None = None,
    session_index: int = 1,
    status: str = "open",
    pageviews: int = 1,
    events: int = 0,
    last_seen_at: datetime | None = None,
    **extra: Any,
) -> SessionSnapshot:
    last = last_seen_at or started_at
    closed = status == "closed"
    fields: dict[str, Any] = {
        "session_id": session_id or new_id(),
        "guid": guid or new_id(),
        "session_index": session_index,
        "site": SITE,
        "status": status,
        "started_at": started_at,
        "last_seen_at": last,
        "ended_at": last if closed else None,
        "end_reason": "inactivity" if closed else None,
        "duration_s": (last - started_at).total_seconds(),
        "landing_url": f"https://{SITE}/",
        "landing_path": "/",
        "exit_url": f"https://{SITE}/",
        "referrer": "",
        "utm_source": utm_source,
        "utm_medium": utm_medium,
        "utm_campaign": utm_campaign,
        "channel": channel,
        "ip": "203.0.113.0",
        "user_agent": "Mozilla/5.0",
        "browser": "Firefox",
        "os": "Linux",
        "device_type": "desktop",
        "is_bot": False,
        "pageviews": pageviews,
        "events": events,
        "hits": pageviews + events,
        "is_bounce": pageviews == 1 and events == 0,
        "version": version,
    }
    fields.update(extra)
    return SessionSnapshot(**fields)


def pageview(*, session_id: str | None = None, guid: str | None = None, occurred_at: datetime = T0,
             hit_id: str | None = None, **extra: Any) -> PageviewRecord:
    fields: dict[str, Any] = {
        "hit_id": hit_id or new_id(),
        "session_id": session_id or new_id(),
        "guid": guid or new_id(),
        "site": SITE,
        "occurred_at": occurred_at,
        "received_at": occurred_at + timedelta(milliseconds=40),
        "url": f"https://{SITE}/floorplans?unit=2b",
        "path": "/floorplans",
        "referrer": "https://www.google.com/",
        "title": "Floor plans | Oakridge Apartments",
    }
    fields.update(extra)
    return PageviewRecord(**fields)


def event(*, name: str = "chat_open", session_id: str | None = None, guid: str | None = None,
          occurred_at: datetime = T0, hit_id: str | None = None, module: str | None = "chat",
          properties: dict[str, Any] | None = None, **extra: Any) -> EventRecord:
    fields: dict[str, Any] = {
        "hit_id": hit_id or new_id(),
        "session_id": session_id or new_id(),
        "guid": guid or new_id(),
        "site": SITE,
        "occurred_at": occurred_at,
        "received_at": occurred_at + timedelta(milliseconds=40),
        "name": name,
        "module": module,
        "url": f"https://{SITE}/contact",
        "properties": {"unit": "2b", "beds": 2} if properties is None else properties,
    }
    fields.update(extra)
    return EventRecord(**fields)


def late_hit(*, guid: str | None = None, occurred_at: datetime = T0, hit_id: str | None = None,
             reason: str = "too_late") -> LateHitRecord:
    hit_id = hit_id or new_id()
    guid = guid or new_id()
    return LateHitRecord(hit_id=hit_id, guid=guid, occurred_at=occurred_at,
                         received_at=occurred_at + timedelta(hours=3), reason=reason,
                         hit={"hit_id": hit_id, "guid": guid, "url": f"https://{SITE}/"})


def retraction(*, session_id: str, guid: str, merged_into: str, version: int) -> SessionRetraction:
    return SessionRetraction(session_id=session_id, guid=guid, merged_into=merged_into, version=version)


def move(hit: PageviewRecord | EventRecord, session_id: str) -> HitMoveRecord:
    """`hit` now belongs to `session_id`."""
    return HitMoveRecord(hit_id=hit.hit_id, guid=hit.guid, type=hit.kind, occurred_at=hit.occurred_at,
                         session_id=session_id)


def range_move(guid: str, from_session_id: str, first_at: datetime, last_at: datetime,
               session_id: str) -> RangeMoveRecord:
    return RangeMoveRecord(guid=guid, from_session_id=from_session_id, first_at=first_at, last_at=last_at,
                           session_id=session_id)


class RecordStream:
    """Hands out FakeRecords with increasing offsets per (topic, partition)."""

    def __init__(self) -> None:
        self._next: dict[tuple[str, int], int] = {}

    def record(self, topic: str, value: Any, *, partition: int = 0, key: bytes | None = None,
               timestamp: int | None = None) -> FakeRecord:
        offset = self._next.get((topic, partition), 0)
        self._next[(topic, partition)] = offset + 1
        raw = value if isinstance(value, (bytes, type(None))) else encode(value)
        # Kafka's record timestamp (epoch ms): T0 plus one second per offset unless given
        ts = timestamp if timestamp is not None else to_ms(T0) + 1000 * offset
        return FakeRecord(topic, partition, offset, key, raw, ts)
