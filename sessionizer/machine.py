"""The sessionizer's pure core: one device's sessions as a state machine (SPEC section 3).

    on_hit(state, hit, rules, event_time_ms, out)     -> state | None
    on_close(state, close, rules, event_time_ms, out) -> state | None   (rule 12, storage cleared)
    on_time(state, rules, event_time_ms, out)         -> state          (rule 7, closing)
    next_deadline_ms(state, rules)                    -> int | None

Time is an argument: `event_time_ms` is the partition's event time (rule 7), computed and
passed in by the adapter; nothing here reads a clock, Kafka or Faust. Each call appends what
it publishes to `out`: complete session snapshots (`out.sessions`, one per change, each with
a `version` one higher than the last for that session_id) and one record per placed hit
(`out.records`: pageview/event with its session_id, or late_hit with a reason). A duplicate
hit (rule 8) produces nothing.

How a hit at time t is placed (per scope key; O = the open session, L = the last closed one):

1. Close what has expired: every open session whose last hit + timeout < max(event time, t).
2. t within O's span (first <= t <= last): join O. Inside the span no split rule applies —
   not even campaign_change, whose hit arrived too late to split what is already published.
3. t after O's last hit: join O unless a split rule says otherwise, checked in this order:
   inactivity (t - last > timeout), max_length (t - first > max length), midnight (another
   local day), campaign_change (the hit carries campaign data that differs from O's). On a
   split O closes with that end_reason and the hit opens the next session.
4. t before O's first hit, or no O: the hit may extend O backwards (rule 5: within the timeout
   of O's first hit, the session no longer than max length, same local day, and with
   campaign_change on, O's landing campaign either empty or equal to the hit's — what time
   order would have given), or rejoin L (rule 6: inside L's span, or within the timeout before
   or after it under the same split rules). If both would take it, the nearer one does; see
   `_nearer`. Failing both: with no O and t after L, the hit opens a new session; otherwise it
   is late — `before_last_session` when it lies before L, `before_open_session` when before O.
5. A rejoined L that was closed for inactivity and whose new last hit + timeout is not before
   the event time opens again (nothing open in its slot is newer), exactly as if it had never
   been closed. Closed for any other reason, it stays closed.

Landing attributes (landing url/path, site, referrer, utm, click id, channel, ip, user agent
and what is parsed from it) follow the session's *earliest* hit by occurred_at: analysts read
landing_url as the first page of the visit, so a hit that extends a session backwards takes
over the landing. The session_id does not move: it belongs to the hit that opened the session
in log order (sessionizer.identity). exit_url is the latest pageview by occurred_at.

session_index counts from 1 per guid under scope "device" and per guid and site under scope
"site" (each site's sessions are numbered on their own, as the conformance scenario
`scope_site` requires).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from schemas.views import CloseView, HitView
from schemas.timefmt import EPOCH
from sessionizer.channel import channel_for
from sessionizer.days import day_number
from sessionizer.identity import hit_fingerprint, session_id
from sessionizer.rules import Rules
from sessionizer.snapshot import hit_record, late_record, session_snapshot
from sessionizer.state import DeviceState, Session, Slot
from sessionizer.useragent import is_crawler

__all__ = [
    "BEFORE_LAST_SESSION", "BEFORE_OPEN_SESSION", "BOT", "DeviceState", "Emitted", "Rules",
    "next_deadline_ms", "on_close", "on_hit", "on_time",
]

# Late-hit reasons (LateHitRecord.reason).
BEFORE_OPEN_SESSION = "before_open_session"  # before the open session, outside what may join it
BEFORE_LAST_SESSION = "before_last_session"  # before the last closed session, outside what may rejoin it
BOT = "bot"                                  # a crawler's hit dropped under Rules.drop_bots

INACTIVITY = "inactivity"
MAX_LENGTH = "max_length"
MIDNIGHT = "midnight"
CAMPAIGN_CHANGE = "campaign_change"
STORAGE_CLEARED = "storage_cleared"


@dataclass(slots=True)
class Emitted:
    """What calls publish. By default every change of a session appends a complete snapshot.

    `coalesce=True` (opt-in, for an adapter that keeps only the newest snapshot per session
    of a batch anyway): a change only notes the session, and `flush()` builds one snapshot
    per session — its newest — into `sessions`. Building snapshot dicts is the largest cost
    of a hit, so this saves it for every hit but the last of a session in a batch. The
    snapshot is built from the session as it is at `flush()`, which is its state at its
    last change, as long as no core call that is not collected in this `Emitted` touches
    the state in between: flush before the next batch.
    """

    sessions: list[dict[str, Any]] = field(default_factory=list)  # SessionSnapshot wire dicts
    records: list[Any] = field(default_factory=list)  # PageviewView / EventView / LateHitView (schemas.views)
    coalesce: bool = False
    pending: dict[str, tuple[str, Session, bool]] = field(default_factory=dict)  # session_id -> (guid, session, is_open)

    def flush(self) -> list[dict[str, Any]]:
        """Build the pending snapshots (coalesce mode) into `sessions`; returns `sessions`."""
        for guid, session, is_open in self.pending.values():
            self.sessions.append(session_snapshot(guid, session, is_open))
            if not is_open:
                session.static = None
        self.pending.clear()
        return self.sessions

    def clear(self) -> None:
        self.sessions.clear()
        self.records.clear()
        self.pending.clear()


_MS = timedelta(milliseconds=1)


def to_ms(value: datetime) -> int:
    """schemas.timefmt.to_ms without building a timedelta per call (4x faster; once per hit)."""
    return (value - EPOCH) // _MS


# -- public interface ----------------------------------------------------------------------


def on_hit(
    state: DeviceState | None, hit: HitView, rules: Rules, event_time_ms: int, out: Emitted, *,
    offset: int | None = None, occurred_ms: int | None = None,
) -> DeviceState | None:
    """Place one hit of the device (see the module docstring); returns the state to keep.

    None means nothing to keep: only for a crawler's hit dropped under `drop_bots` on a
    device without state. The returned state may be the same object, mutated: store it again
    (Faust writes the changelog only on assignment).

    `offset`, optional: the record's offset in its `hits` partition. Given, a record at or
    below the newest offset already applied to this device is a redelivery and is ignored
    (nothing published), however many hits of the device a replayed batch holds — the
    64-fingerprint memory of rule 8 only covers recent duplicates. Offsets of one guid
    always come from the same partition (the partition count of `hits` is fixed).

    `occurred_ms`, optional: `hit.occurred_at` in epoch ms, when the caller has it already.
    """
    t = to_ms(hit.occurred_at) if occurred_ms is None else occurred_ms
    now = event_time_ms if event_time_ms > t else t
    if state is not None:
        _expire(state, rules, now, out)
        if offset is not None:
            if offset <= state.offset:
                return state
            state.offset = offset
    if rules.drop_bots and is_crawler(hit.user_agent):
        if rules.record_dropped_bots:
            out.records.append(late_record(hit, state.guid if state is not None else hit.guid.lower(), BOT))
        return state
    if state is None:
        state = DeviceState(hit.guid.lower(), offset=-1 if offset is None else offset)
    fingerprint = hit_fingerprint(hit.hit_id)
    if state.has_seen(fingerprint):
        return state
    state.remember(fingerprint, rules.dedupe_size)
    key = hit.site if rules.scope == "site" else ""
    slot = state.slots.get(key)
    if slot is None:
        slot = state.slots[key] = Slot()
    _place(state.guid, slot, hit, t, now, rules, out)
    return state


def on_close(
    state: DeviceState | None, close: CloseView, rules: Rules, event_time_ms: int, out: Emitted, *,
    offset: int | None = None,
) -> DeviceState | None:
    """Rule 12: the device cleared its storage at `close.occurred_at`; its open sessions end now.

    Sessions that already expired close for inactivity first (that is when they ended); a
    session that started after the close time belongs to no cleared storage and stays open.
    `offset` as for `on_hit`.
    """
    if state is None:
        return None
    t = to_ms(close.occurred_at)
    _expire(state, rules, max(event_time_ms, t), out)
    if offset is not None:
        if offset <= state.offset:
            return state
        state.offset = offset
    for slot in state.slots.values():
        session = slot.open
        if session is not None and session.first <= t:
            _retire(slot, session, STORAGE_CLEARED)
            _publish(state.guid, session, False, out)
    return state


def on_time(state: DeviceState, rules: Rules, event_time_ms: int, out: Emitted) -> DeviceState:
    """Rule 7: close every open session whose last hit + timeout < event_time_ms.

    Only inactivity closes by time. max_length, midnight and campaign_change close a session
    when the hit that splits it arrives, so their end_reason is what time order gives.
    """
    _expire(state, rules, event_time_ms, out)
    return state


def next_deadline_ms(state: DeviceState, rules: Rules) -> int | None:
    """The smallest event time at which `on_time` closes something; None with nothing open."""
    deadline = None
    for slot in state.slots.values():
        session = slot.open
        if session is not None:
            at = session.last + rules.timeout_ms + 1
            if deadline is None or at < deadline:
                deadline = at
    return deadline


# -- placing a hit -------------------------------------------------------------------------


def _place(guid: str, slot: Slot, hit: HitView, t: int, now: int, rules: Rules, out: Emitted) -> None:
    current = slot.open
    if current is not None and t >= current.first:
        reason = None if t <= current.last else _split_reason(current, hit, t, rules)
        if reason is None:
            _apply(current, hit, t)
            _publish(guid, current, True, out)
            out.records.append(hit_record(hit, guid, current.id))
            return
        _retire(slot, current, reason)
        _publish(guid, current, False, out)
        _open(guid, slot, hit, t, now, rules, out)
        return

    # t lies before the open session, or nothing is open.
    last = slot.last
    # Sessions never overlap: the open session may only reach back to after the last closed
    # one, and the last closed one only to after the newest session the slot has forgotten.
    after = last.last if last is not None else slot.floor
    extend = current if current is not None and t > after and _fits_before(current, hit, t, rules) else None
    rejoin = last if last is not None and t > slot.floor and _fits(last, hit, t, rules) else None
    if extend is not None and rejoin is not None:
        if _nearer(rejoin, extend, t) is rejoin:
            extend = None
        else:
            rejoin = None
    if extend is not None:
        _apply(extend, hit, t)
        _publish(guid, extend, True, out)
        out.records.append(hit_record(hit, guid, extend.id))
        return
    if rejoin is not None:
        _apply(rejoin, hit, t)
        reopen = current is None and rejoin.end_reason == INACTIVITY and rejoin.last + rules.timeout_ms >= now
        if reopen:
            rejoin.end_reason = None
            slot.open = rejoin
            slot.last = None
        _publish(guid, rejoin, reopen, out)
        out.records.append(hit_record(hit, guid, rejoin.id))
        return
    if current is None and (last is None or t > last.last):
        _open(guid, slot, hit, t, now, rules, out)
        return
    reason = BEFORE_LAST_SESSION if last is not None and t < last.first else BEFORE_OPEN_SESSION
    out.records.append(late_record(hit, guid, reason))


def _nearer(last: Session, current: Session, t: int) -> Session:
    """The session a hit joins when it could rejoin the last closed one or extend the open one.

    Such a hit bridges the two: in time order they would have been one session. Kafka Streams
    merges the two session windows at this point (SessionWindows: records at 10, 12 and 20 with
    gap 5, then 16 merges them). We rejoin the nearer session instead and keep two sessions
    (SPEC rule 6): both ids have been published already, and a merge would retract one of them
    from the compacted `sessions` topic and from the sink's rows. Ties go to the earlier
    session, as time order would.
    """
    to_last = t - last.last if t > last.last else 0
    to_current = current.first - t
    return last if to_last <= to_current else current


def _open(guid: str, slot: Slot, hit: HitView, t: int, now: int, rules: Rules, out: Emitted) -> None:
    slot.count += 1
    session = _new_session(guid, hit, t, slot.count)
    if t + rules.timeout_ms < now:
        # The hit came so late that its session has already expired: publish it closed, once.
        _retire(slot, session, INACTIVITY)
        _publish(guid, session, False, out)
    else:
        slot.open = session
        _publish(guid, session, True, out)
    out.records.append(hit_record(hit, guid, session.id))


def _retire(slot: Slot, session: Session, reason: str) -> None:
    """Close `session` (open in `slot`, or just created): it becomes the slot's last session."""
    session.end_reason = reason
    if slot.open is session:
        slot.open = None
    previous = slot.last
    if previous is not None and previous is not session:
        if previous.last > slot.floor:
            slot.floor = previous.last
    slot.last = session


def _expire(state: DeviceState, rules: Rules, now: int, out: Emitted) -> None:
    timeout = rules.timeout_ms
    for slot in state.slots.values():
        session = slot.open
        if session is not None and session.last + timeout < now:
            _retire(slot, session, INACTIVITY)
            _publish(state.guid, session, False, out)


def _publish(guid: str, session: Session, is_open: bool, out: Emitted) -> None:
    session.version += 1
    if out.coalesce:
        out.pending[session.id] = (guid, session, is_open)
        return
    out.sessions.append(session_snapshot(guid, session, is_open))
    if not is_open:
        session.static = None  # a closed session rarely changes again: keep memory for open ones


# -- the rules -----------------------------------------------------------------------------


def _hit_campaign(hit: HitView) -> tuple[str | None, ...]:
    return (
        hit.utm_source, hit.utm_medium, hit.utm_campaign, hit.utm_term, hit.utm_content, hit.utm_id,
        hit.click_id_type, hit.click_id,
    )


def _split_reason(session: Session, hit: HitView, t: int, rules: Rules) -> str | None:
    """Why a hit after the session's last hit starts a new session, or None if it joins."""
    if t - session.last > rules.timeout_ms:
        return INACTIVITY
    if t - session.first > rules.max_length_ms:
        return MAX_LENGTH
    if rules.midnight_tz is not None and day_number(t, rules.midnight_tz) != day_number(session.first, rules.midnight_tz):
        return MIDNIGHT
    if rules.split_on_campaign:
        campaign = _hit_campaign(hit)
        if any(campaign) and campaign != session.campaign:
            return CAMPAIGN_CHANGE
    return None


def _fits_before(session: Session, hit: HitView, t: int, rules: Rules) -> bool:
    """Whether a hit earlier than the session's first hit extends it backwards: whether time
    order (the hit first, then the session's hits) would have kept them in one session."""
    if session.first - t > rules.timeout_ms or session.last - t > rules.max_length_ms:
        return False
    if rules.midnight_tz is not None and day_number(t, rules.midnight_tz) != day_number(session.first, rules.midnight_tz):
        return False
    if rules.split_on_campaign:
        # The session's first hit would have split from the hit if it carried other campaign data.
        campaign = session.campaign
        if any(campaign) and campaign != _hit_campaign(hit):
            return False
    return True


def _fits(session: Session, hit: HitView, t: int, rules: Rules) -> bool:
    if t < session.first:
        return _fits_before(session, hit, t, rules)
    return t <= session.last or _split_reason(session, hit, t, rules) is None


# -- session attributes --------------------------------------------------------------------


def _channel(hit: HitView) -> str:
    has_campaign = bool(
        hit.utm_source or hit.utm_medium or hit.utm_campaign or hit.utm_term or hit.utm_content or hit.utm_id
        or hit.click_id_type
    )
    referrer_host = hit.referrer_host
    page_host = urlsplit(hit.url).hostname if referrer_host and not has_campaign else None
    return channel_for(hit.utm_source, hit.utm_medium, hit.click_id_type, referrer_host, hit.site, page_host, has_campaign)


def _new_session(guid: str, hit: HitView, t: int, index: int) -> Session:
    is_pageview = hit.type != "event"
    return Session(
        session_id(guid, hit.hit_id), index, 0, t, t, None,
        1 if is_pageview else 0, 0 if is_pageview else 1,
        hit.url if is_pageview else None, t if is_pageview else -1,
        hit.url, hit.path, hit.site, hit.referrer, hit.referrer_host,
        hit.utm_source, hit.utm_medium, hit.utm_campaign, hit.utm_term, hit.utm_content, hit.utm_id,
        hit.click_id, hit.click_id_type, hit.ip, hit.user_agent, _channel(hit),
    )


def _apply(session: Session, hit: HitView, t: int) -> None:
    if t < session.first:
        session.first = t
        _take_landing(session, hit)
    elif t > session.last:
        session.last = t
    if hit.type == "event":
        session.events += 1
    else:
        session.pageviews += 1
        if t >= session.exit_at:
            session.exit_url = hit.url
            session.exit_at = t


def _take_landing(session: Session, hit: HitView) -> None:
    session.url = hit.url
    session.path = hit.path
    session.site = hit.site
    session.referrer = hit.referrer
    session.referrer_host = hit.referrer_host
    session.utm_source = hit.utm_source
    session.utm_medium = hit.utm_medium
    session.utm_campaign = hit.utm_campaign
    session.utm_term = hit.utm_term
    session.utm_content = hit.utm_content
    session.utm_id = hit.utm_id
    session.click_id = hit.click_id
    session.click_id_type = hit.click_id_type
    session.ip = hit.ip
    session.user_agent = hit.user_agent
    session.channel = _channel(hit)
    session.static = None
