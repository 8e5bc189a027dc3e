"""What the core publishes (no pydantic models on the hot path).

- `session_snapshot` : a complete `schemas.session.SessionSnapshot` wire dict (topic `sessions`);
- `hit_record`       : a `PageviewRecord` or `EventRecord` view for an applied hit (topic `events`);
- `late_record`      : a `LateHitRecord` view for a hit that fits no session, with the reason;
- `retraction`       : a `SessionRetraction` wire dict (topic `sessions`) for a session merged away;
- `move_record`, `range_move_record`: `HitMoveRecord` / `RangeMoveRecord` views re-pointing
  earlier hits to another session (topic `events`).

Views are the msgspec Structs of `schemas.views` (the same fields as the models).
Datetimes are aware UTC `datetime`s; `schemas.wire.encode` (dicts) and
`schemas.views.encode_view` (views) turn them into ISO 8601 with Z. Unit tests validate every
output against its model.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from schemas import SCHEMA_VERSION
from schemas.views import (
    AnonEventView,
    AnonPageviewView,
    EventView,
    HitView,
    LateHitView,
    MoveView,
    PageviewView,
    RangeMoveView,
)
from schemas.timefmt import EPOCH, from_ms
from sessionizer.state import Block, Mark, Session
from sessionizer.useragent import describe


def at_us(ms: int, us: int) -> datetime:
    """The exact occurred_at of a mark (milliseconds and the microseconds below them)."""
    return EPOCH + timedelta(0, 0, us, ms)


def session_snapshot(guid: str, s: Session, is_open: bool) -> dict[str, Any]:
    static = s.static
    if static is None:
        static = s.static = _static_fields(guid, s)
    snap = static.copy()
    pageviews = s.pageviews
    events = s.events
    last_seen = from_ms(s.last)
    snap["status"] = "open" if is_open else "closed"
    snap["last_seen_at"] = last_seen
    snap["ended_at"] = None if is_open else last_seen
    snap["end_reason"] = None if is_open else s.end_reason
    snap["duration_s"] = (s.last - s.first) / 1000
    snap["exit_url"] = s.exit_url
    snap["pageviews"] = pageviews
    snap["events"] = events
    snap["hits"] = pageviews + events
    snap["is_bounce"] = pageviews == 1 and events == 0
    snap["version"] = s.version
    return snap


def _static_fields(guid: str, s: Session) -> dict[str, Any]:
    """The fields that follow the landing hit: built once per session and landing, then copied.
    (started_at is one of them: the first hit changes exactly when the landing does.)"""
    landing = s.landing
    # (by position, Mark's order: compiled, `landing.site` is a generic attribute lookup)
    user_agent = landing[18]
    agent = describe(user_agent)
    return {
        "v": SCHEMA_VERSION,
        "session_id": s.id,
        "guid": guid,
        "session_index": s.index,
        "site": landing[8],
        "started_at": from_ms(s.first),
        "landing_url": landing[4],
        "landing_path": landing[5],
        "referrer": landing[6],
        "referrer_host": landing[7],
        "utm_source": landing[9],
        "utm_medium": landing[10],
        "utm_campaign": landing[11],
        "utm_term": landing[12],
        "utm_content": landing[13],
        "utm_id": landing[14],
        "click_id": landing[15],
        "click_id_type": landing[16],
        "channel": s.channel,
        "ip": landing[17],
        "user_agent": user_agent,
        "browser": agent.browser,
        "os": agent.os,
        "device_type": agent.device_type,
        "is_bot": agent.is_bot or landing[19],  # a crawler's user agent, or a data centre's address (datacenter)
    }


def retraction(guid: str, s: Session, merged_into: str, version: int) -> dict[str, Any]:
    return {"v": SCHEMA_VERSION, "kind": "retraction", "session_id": s.id, "guid": guid,
            "merged_into": merged_into, "version": version}


def move_record(guid: str, mark: Mark, session_id: str) -> MoveView:
    return MoveView(
        hit_id=mark[2], guid=guid, type="event" if mark[3] else "pageview",  # (Mark's hit_id, is_event, t, us)
        occurred_at=at_us(mark[0], mark[1]), session_id=session_id,
    )


def range_move_record(guid: str, block: Block, session_id: str) -> RangeMoveView:
    # The block's bounds are milliseconds; its rows' occurred_at may carry microseconds.
    return RangeMoveView(
        guid=guid, from_session_id=block.sid, first_at=from_ms(block.first), last_at=at_us(block.last, 999),
        session_id=session_id,
    )


def hit_record(hit: HitView, guid: str, session_id: str) -> PageviewView | EventView:
    """The hit's `events` record; the hit's user_id and previous_guid go with it when it has either
    (identity stitching, SPEC section 5): else the Anon struct, without those two fields."""
    if hit.user_id is None and hit.previous_guid is None:
        if hit.type == "event":
            return AnonEventView(
                hit_id=hit.hit_id, session_id=session_id, guid=guid, site=hit.site, occurred_at=hit.occurred_at,
                received_at=hit.received_at, name=hit.event_name or "", module=hit.event_module, url=hit.url,
                properties=hit.event_properties or {}, value=hit.event_value, currency=hit.event_currency,
            )
        return AnonPageviewView(
            hit_id=hit.hit_id, session_id=session_id, guid=guid, site=hit.site, occurred_at=hit.occurred_at,
            received_at=hit.received_at, url=hit.url, path=hit.path, referrer=hit.referrer, title=hit.title,
        )
    if hit.type == "event":
        return EventView(
            hit_id=hit.hit_id, session_id=session_id, guid=guid, site=hit.site, occurred_at=hit.occurred_at,
            received_at=hit.received_at, name=hit.event_name or "", module=hit.event_module, url=hit.url,
            properties=hit.event_properties or {}, value=hit.event_value, currency=hit.event_currency,
            user_id=hit.user_id, previous_guid=hit.previous_guid,
        )
    return PageviewView(
        hit_id=hit.hit_id, session_id=session_id, guid=guid, site=hit.site, occurred_at=hit.occurred_at,
        received_at=hit.received_at, url=hit.url, path=hit.path, referrer=hit.referrer, title=hit.title,
        user_id=hit.user_id, previous_guid=hit.previous_guid,
    )


def late_record(hit: HitView, guid: str, reason: str) -> LateHitView:
    return LateHitView(
        hit_id=hit.hit_id, guid=guid, occurred_at=hit.occurred_at, received_at=hit.received_at, reason=reason,
        hit=hit.wire(),  # type: ignore[attr-defined]  # (the msgspec view's; mypy sees the pydantic Hit)
    )
