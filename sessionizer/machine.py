"""The sessionizer's pure core: one device's sessions as a state machine (SPEC section 3).

    on_hit(state, hit, rules, event_time_ms, out)     -> state | None
    on_close(state, close, rules, event_time_ms, out) -> state | None   (rule 12, storage cleared)
    on_time(state, rules, event_time_ms, out)         -> state          (rule 7 closing; freezing)
    next_deadline_ms(state, rules)                    -> int | None
    peek_deadline_ms(raw, rules), idle(raw, rules, event_time_ms)   (the same, from stored bytes)

Time is an argument: `event_time_ms` is the partition's event time (rule 7), computed and
passed in by the adapter; nothing here reads a clock, Kafka or Faust. Each call appends what
it publishes to `out` (`Emitted`): session snapshots and retractions, and records for the
`events` topic — one per placed hit (pageview/event with its session_id, or late_hit), plus a
move for every earlier hit whose session changed.

Arrival order does not matter (rule 6, amended): within the allowed lateness the sessions are
exactly those the rules give on the device's hits sorted by time. A hit is placed in one of
two ways:

- in order (the common case: later than everything the slot holds): it joins the latest
  session or, if a rule splits, closes it and opens the next one — O(1);
- out of order: the slot's retained hits (`sessionizer.state`) are cut into sessions again by
  the batch rules (`sessionizer.timeline.segment`), and the result is reconciled with what was
  published: a late hit can extend a session at either end, rejoin a closed one, merge the
  sessions it bridges, split one (a campaign hit, a max-length boundary that moves), or open
  one between others or before the first, renumbering the later ones.

Reconciling keeps ids stable and deterministic for a given `hits` log (SPEC rule 9). Each old
session is claimed by the new session that holds its earliest hit; where several are claimed
by one, the earliest keeps its id and the others are *retracted* — a retraction record names
the session it merged into — and their hits are moved to it. A new session that claims none
takes the id of its earliest hit (sessionizer.identity) that no session of the device holds.
Versions come from the device's counter, so a session's versions only grow even when a split
gives back an id a merge had retracted.

A hit older than the allowed lateness (event time minus `Rules.lateness_ms`), or at or before
its slot's floor (`sessionizer.state`), is recorded as a late hit with reason `too_late`.

Landing attributes (landing url/path, site, referrer, utm, click id, channel, ip, user agent
and what is parsed from it) are those of the session's earliest hit; exit_url is its latest
pageview. session_index counts from 1 per guid under scope "device" and per guid and site under
scope "site".

Bounded state (SPEC section 3): a device keeps at most `Rules.max_slots` scope keys and about
`Rules.max_state_bytes`. A hit that would pass either is refused with `StateLimit` (the adapter
dead-letters it) — after the core has first tried dropping the hits it retains for re-placing
(`shrink`: later late hits before them are then too late). A device that retains nothing and
has been idle for `Rules.idle_after_ms` may leave the state (`idle`): the adapter deletes it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import msgspec

from schemas.timefmt import to_ms
from schemas.views import CloseView, HitView
from sessionizer.identity import hit_fingerprint, session_id
from sessionizer.rules import Rules
from sessionizer.snapshot import hit_record, late_record, move_record, range_move_record, retraction, session_snapshot
from sessionizer.state import REFERRER_HOST, VISIT, Block, DeviceState, Element, Mark, Session, Slot, Times
from sessionizer.timeline import INACTIVITY, STORAGE_CLEARED, Run, campaign_of, closed_by, segment, split_reason
from sessionizer.useragent import is_crawler

__all__ = [
    "BOT", "TOO_LATE", "DeviceState", "Emitted", "Rules", "StateLimit", "idle", "idle_state", "next_deadline_ms", "on_close",
    "on_hit", "on_time", "peek_deadline_ms", "shrink",
]

# Late-hit reasons (LateHitRecord.reason).
TOO_LATE = "too_late"  # older than the allowed lateness, or than what its slot retains
BOT = "bot"            # a crawler's hit dropped under Rules.drop_bots (or a data centre's, drop_datacenter)


class StateLimit(Exception):
    """A hit refused because placing it would pass `Rules.max_slots` or `Rules.max_state_bytes`;
    the state is unchanged but for what `shrink` dropped. str(): the reason, for the dead letter."""


# What one hit can add to a state, at most, when its size is not given: every text field at the
# edge's limits, each character escaped by JSON as \u00XX (schemas.hit).
_HIT_BYTES_BOUND = 120_000


@dataclass(slots=True)
class Counts:
    """What rule 6 did, for the adapter's metrics."""

    reordered: int = 0     # hits placed out of order (their slot cut into sessions again)
    merges: int = 0        # sessions retracted into another
    inserted: int = 0      # sessions opened by a late hit before the latest one
    renumbered: int = 0    # published sessions whose session_index changed
    too_late: int = 0      # hits recorded as too late
    moves: int = 0         # earlier hits re-pointed to another session
    shrunk: int = 0        # states that dropped their retained hits to stay within max_state_bytes

    def add(self, other: Counts) -> None:
        self.shrunk += other.shrunk
        self.reordered += other.reordered
        self.merges += other.merges
        self.inserted += other.inserted
        self.renumbered += other.renumbered
        self.too_late += other.too_late
        self.moves += other.moves


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

    `sessions` holds snapshots and retractions (`kind` "retraction"), each with its version;
    `records` the events-topic views. `placed` indexes this Emitted's pageview/event records by
    hit_id, so that a hit moved before they are sent is re-pointed in place instead of moved.
    """

    sessions: list[dict[str, Any]] = field(default_factory=list)
    records: list[Any] = field(default_factory=list)
    coalesce: bool = False
    pending: dict[str, tuple[str, Session, bool]] = field(default_factory=dict)  # session_id -> (guid, session, is_open)
    placed: dict[str, Any] = field(default_factory=dict)
    counts: Counts = field(default_factory=Counts)

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
        self.placed.clear()
        self.counts = Counts()


# -- public interface ----------------------------------------------------------------------


def on_hit(
    state: DeviceState | None, hit: HitView, rules: Rules, event_time_ms: int, out: Emitted, *,
    offset: int | None = None, occurred_ms: int | None = None, weight: int = _HIT_BYTES_BOUND,
) -> DeviceState | None:
    """Place one hit of the device (see the module docstring); returns the state to keep.
    Raises `StateLimit` when the device may not take it (bounded state).

    None means nothing to keep: only for a crawler's hit dropped under `drop_bots` on a
    device without state. The returned state may be the same object, mutated: store it again
    (Faust writes the changelog only on assignment).

    `offset`, optional: the record's offset in its `hits` partition. Given, a record at or
    below the newest offset already applied to this device is a redelivery and is ignored
    (nothing published), however many hits of the device a replayed batch holds. Offsets of
    one guid always come from the same partition (the partition count of `hits` is fixed).

    `occurred_ms`, optional: `hit.occurred_at` in epoch ms, when the caller has it already.
    `weight`, optional: an upper bound of the bytes the hit adds to the state (its record's
    JSON length does: the state keeps a subset of its fields, escaped alike).
    """
    t = to_ms(hit.occurred_at) if occurred_ms is None else occurred_ms
    now = event_time_ms if event_time_ms > t else t
    if state is not None:
        _expire(state, rules, now, out)
        if offset is not None:
            if offset <= state.offset:
                return state
            state.offset = offset
    if (rules.drop_bots and is_crawler(hit.user_agent)) or (rules.drop_datacenter and hit.datacenter):
        if rules.record_dropped_bots:
            out.records.append(late_record(hit, state.guid if state is not None else hit.guid.lower(), BOT))
        return state
    if state is None:
        state = DeviceState(hit.guid.lower(), offset=-1 if offset is None else offset)
    fingerprint = hit_fingerprint(hit.hit_id)
    if state.has_seen(fingerprint):
        return state
    key = hit.site if rules.scope == "site" else ""
    slot = state.slots.get(key)
    if slot is not None and state.size + weight <= rules.max_state_bytes:
        state.size += weight  # (what _admit does when there is room: the common case, inline)
    else:
        _admit(state, slot is None, weight, rules, out)
    state.remember(fingerprint, rules.dedupe_size)
    if slot is None:
        slot = state.slots[key] = Slot()
    if t <= slot.floor or t < now - rules.lateness_ms:
        out.counts.too_late += 1
        out.records.append(late_record(hit, state.guid, TOO_LATE))
        return state
    mark = _mark(hit, t)
    if not _place_in_order(state, slot, mark, hit, now, rules, out):
        _place_late(state, slot, mark, hit, now, rules, out)
    sessions = slot.sessions
    # (the sum only when it can matter: most slots hold one session of a few hits)
    if sessions and (len(sessions) > 1 or len(sessions[-1].elements) > rules.retained_hits) and (
            sum(len(s.elements) for s in sessions) > rules.retained_hits):
        _trim(slot, rules.retained_hits)
    return state


def on_close(
    state: DeviceState | None, close: CloseView, rules: Rules, event_time_ms: int, out: Emitted, *,
    offset: int | None = None,
) -> DeviceState | None:
    """Rule 12: the device cleared its storage at `close.occurred_at`; its sessions end there.

    A session still within the timeout then ends with `storage_cleared`; one that had already
    expired keeps `inactivity`; hits after the clear time start a new session. `offset` as for
    `on_hit`. The clear time is kept (per slot, while it is retained) so that late hits are
    placed around it as time order has it.
    """
    if state is None:
        return None
    tc = to_ms(close.occurred_at)
    now = event_time_ms if event_time_ms > tc else tc
    _expire(state, rules, now, out)
    if offset is not None:
        if offset <= state.offset:
            return state
        state.offset = offset
    for slot in state.slots.values():
        if tc <= slot.floor or tc < now - rules.lateness_ms or tc in slot.closes:
            continue
        insort(slot.closes, tc)
        latest = slot.latest
        if latest is None:
            continue  # kept: late hits around it are still split by it
        if tc >= latest.last and slot.closes[-1] == tc:
            # After every hit of the slot: it ends the latest session — or, if event time had
            # closed that one already but the clear came within its timeout, re-labels it.
            reason = closed_by(tc, latest.last, rules)
            if latest.end_reason in (None, INACTIVITY) and latest.end_reason != reason:
                latest.end_reason = reason
                _publish(state, latest, False, out)
        else:
            _replace(state, slot, None, None, now, rules, out)
    return state


def on_time(state: DeviceState, rules: Rules, event_time_ms: int, out: Emitted) -> DeviceState:
    """Rule 7: close every open session whose last hit + timeout < event_time_ms; freeze the
    sessions no hit can reach any more (their hits leave the state; nothing is published).

    Only inactivity closes by time. max_length, midnight and campaign_change close a session
    when the hit that splits it arrives, so their end_reason is what time order gives.
    """
    _expire(state, rules, event_time_ms, out)
    return state


def _admit(state: DeviceState, new_slot: bool, weight: int, rules: Rules, out: Emitted) -> None:
    """Bounded state: room for a hit of up to `weight` bytes (in a new slot), or StateLimit."""
    if new_slot and len(state.slots) >= rules.max_slots:
        raise StateLimit(f"the device already has {len(state.slots)} sites in the sessionizer's state, the most "
                         f"one device may have (TOUCHSTREAM_SESSION_MAX_SLOTS); a hit for another site is refused")
    if state.size + weight > rules.max_state_bytes:
        _make_room(state, weight, rules, out)
    state.size += weight


def _make_room(state: DeviceState, weight: int, rules: Rules, out: Emitted) -> None:
    """`state.size` is an upper bound: measure it, then shrink if that is not enough; refuse the hit
    if even that is not."""
    state.size = len(state.to_bytes())
    if state.size + weight <= rules.max_state_bytes:
        return
    shrink(state)
    out.counts.shrunk += 1
    state.size = len(state.to_bytes())
    if state.size + weight > rules.max_state_bytes:
        raise StateLimit(f"the device's state is {state.size} bytes with nothing left to drop; with this hit "
                         f"(up to {weight} bytes) it would pass TOUCHSTREAM_SESSION_MAX_STATE_BYTES "
                         f"({rules.max_state_bytes}), so the hit is refused")


def shrink(state: DeviceState) -> None:
    """Drop what the state retains for re-placing late hits: every slot keeps its latest
    session, as a block and its last hit. Nothing visible changes; hits at or before the new
    floors are too late from now on (as beyond `Rules.retained_hits`)."""
    for slot in state.slots.values():
        if slot.sessions:
            _trim(slot, 1)


def idle(raw: bytes, rules: Rules, event_time_ms: int) -> bool:
    """Whether a stored state (its bytes) may leave: it retains no session and its newest hit is
    more than `Rules.idle_after_ms` before event time. Reads the header only."""
    if not rules.idle_after_ms:
        return False
    times = DeviceState.peek(raw)
    return idle_state(DeviceState.from_bytes(raw), rules, event_time_ms) if times is None else _idle(
        times, rules, event_time_ms)


def idle_state(state: DeviceState, rules: Rules, event_time_ms: int) -> bool:
    """`idle` of a decoded state."""
    return bool(rules.idle_after_ms) and _idle(state.times(), rules, event_time_ms)


def _idle(times: Times, rules: Rules, event_time_ms: int) -> bool:
    return (times.open_last < 0 and times.closed_last < 0
            and 0 <= times.last_seen < event_time_ms - rules.idle_after_ms)


def peek_deadline_ms(raw: bytes, rules: Rules) -> tuple[int | None, bool]:
    """`next_deadline_ms` of a stored state and whether it has an open session, from the header
    (format 3) without decoding the rest: a partition's recovery reads every stored device."""
    times = DeviceState.peek(raw)
    if times is None:
        state = DeviceState.from_bytes(raw)
        return next_deadline_ms(state, rules), state.open_sessions() > 0
    deadline = None
    if times.open_last >= 0:
        deadline = times.open_last + rules.timeout_ms + 1
    if times.closed_last >= 0:
        at = times.closed_last + rules.timeout_ms + rules.lateness_ms + 1
        if deadline is None or at < deadline:
            deadline = at
    return deadline, times.open_last >= 0


def next_deadline_ms(state: DeviceState, rules: Rules) -> int | None:
    """The smallest event time at which `on_time` changes something (closes an open session or
    freezes the oldest retained one); None when nothing will."""
    deadline = None
    timeout = rules.timeout_ms
    for slot in state.slots.values():
        sessions = slot.sessions
        if not sessions:
            continue
        latest = sessions[-1]
        if latest.end_reason is None:
            at = latest.last + timeout + 1
            if deadline is None or at < deadline:
                deadline = at
        oldest = sessions[0]
        if oldest.end_reason is not None:
            at = oldest.last + timeout + rules.lateness_ms + 1
            if deadline is None or at < deadline:
                deadline = at
    return deadline


# -- placing a hit in order ----------------------------------------------------------------


def _mark(hit: HitView, t: int) -> Mark:
    if type(hit) is _HIT_STRUCT:
        # The hit's values in one C call, then read by position: compiled, each `hit.field` is a
        # generic attribute lookup, and 19 of them cost twice this (740 against ~350 ns a hit).
        # The positions are HitView's field order (schemas.hit.Hit's); a unit test compares each
        # Mark field with the hit's field of that name (test_machine, "whether read from").
        v: tuple[Any, ...] = _astuple(hit)
        return _new_mark(Mark, (
            t, v[28].microsecond % 1000, v[1], v[3] == "event", v[4], v[5], v[7], v[8], v[6],
            v[10], v[11], v[12], v[13], v[14], v[15], v[16], v[17], v[29], v[30], v[31],
        ))
    return _new_mark(Mark, (  # (a pydantic Hit: the unit tests' hits may be models)
        t, hit.occurred_at.microsecond % 1000, hit.hit_id, hit.type == "event",
        hit.url, hit.path, hit.referrer, hit.referrer_host, hit.site,
        hit.utm_source, hit.utm_medium, hit.utm_campaign, hit.utm_term, hit.utm_content, hit.utm_id,
        hit.click_id, hit.click_id_type, hit.ip, hit.user_agent, hit.datacenter,
    ))


_new_mark = tuple.__new__  # Mark(...) without the NamedTuple constructor's Python-level call (once per hit)
_astuple: Any = msgspec.structs.astuple  # (typed Any: mypy sees the pydantic Hit in `hit`)
_HIT_STRUCT: Any = HitView


def _place_in_order(state: DeviceState, slot: Slot, mark: Mark, hit: HitView, now: int, rules: Rules,
                    out: Emitted) -> bool:
    """Place a hit later than everything in its slot; False when it is not such a hit."""
    t = mark[0]
    sessions = slot.sessions
    if sessions:
        latest = sessions[-1]
        if t <= latest.last:
            tail = latest.elements[-1]
            if t < latest.last or isinstance(tail, Block) or tail[2] >= mark[2]:
                return False
        if slot.closes and slot.closes[-1] >= t:
            return False
        reason = latest.end_reason
        if reason is None:
            if (t - latest.last <= rules.timeout_ms and t - latest.first <= rules.max_length_ms
                    and rules.midnight_tz is None and not rules.split_on_campaign):
                split = None  # (what split_reason says, without building the campaigns: the common case)
            else:
                split = split_reason(latest.first, latest.last, latest.landing[9:17], t, t,
                                     campaign_of(mark, rules), rules)
            if split is None:
                latest.append(mark)
                _publish(state, latest, True, out)
                record = hit_record(hit, state.guid, latest.id)
                out.records.append(record)
                out.placed[hit.hit_id] = record
                return True
            sid = session_id(state.guid, mark[2])
            if _taken(state, sid):
                return True  # this hit opened a session already: a duplicate older than the ring
            latest.end_reason = split
            _publish(state, latest, False, out)
            _open(state, slot, mark, sid, hit, now, rules, out)
            return True
        if reason != STORAGE_CLEARED and not (reason == INACTIVITY and t - latest.last > rules.timeout_ms):
            return False
    elif slot.closes and slot.closes[-1] >= t:
        return False
    sid = session_id(state.guid, mark[2])
    if not _taken(state, sid):
        _open(state, slot, mark, sid, hit, now, rules, out)
    return True


def _open(state: DeviceState, slot: Slot, mark: Mark, sid: str, hit: HitView, now: int, rules: Rules,
          out: Emitted) -> None:
    session = Session.opened(sid, slot.count + len(slot.sessions) + 1, _channel(mark, rules), mark)
    slot.sessions.append(session)
    # A hit so late that its session has already expired is published closed, once.
    is_open = mark[0] + rules.timeout_ms >= now
    if not is_open:
        session.end_reason = INACTIVITY
    _publish(state, session, is_open, out)
    _record(hit, state.guid, sid, out)


def _taken(state: DeviceState, sid: str) -> bool:
    return any(s.id == sid for slot in state.slots.values() for s in slot.sessions)


# -- placing a hit out of order ------------------------------------------------------------


def _place_late(state: DeviceState, slot: Slot, mark: Mark, hit: HitView, now: int, rules: Rules,
                out: Emitted) -> None:
    hit_id = mark[2]
    for session in slot.sessions:
        for e in session.elements:
            if not isinstance(e, Block) and e[2] == hit_id:  # (by position: see _channel)
                return  # a duplicate older than the ring, still retained
    out.counts.reordered += 1
    if not _join_inside(state, slot, mark, hit, rules, out):
        _replace(state, slot, mark, hit, now, rules, out)


def _join_inside(state: DeviceState, slot: Slot, mark: Mark, hit: HitView, rules: Rules, out: Emitted) -> bool:
    """A late hit strictly inside one session's span joins it where no rule can cut it (the
    common late hit: a retry or a beacon a few seconds behind the device's next hit): gaps only
    shrink, the span and landing stay, and a storage-cleared time or a campaign split, which
    could cut, send it the long way (`_replace`). What `_replace` would give, without cutting
    the slot into sessions again; False when it does not apply."""
    t = mark[0]
    for session in reversed(slot.sessions):
        if t >= session.last:
            return False  # after this session's end (and before the next's start): may bridge
        if t > session.first:
            break
    else:
        return False
    elements = session.elements
    if isinstance(elements[0], Block):
        return False
    if rules.split_on_campaign and any(campaign_of(mark, rules)):
        return False
    closes = slot.closes
    if closes and bisect_right(closes, session.last) > bisect_left(closes, session.first):
        return False
    session.insert(mark)
    _publish(state, session, session.end_reason is None, out)
    _record(hit, state.guid, session.id, out)
    return True


def _replace(state: DeviceState, slot: Slot, mark: Mark | None, hit: HitView | None, now: int, rules: Rules,
             out: Emitted) -> None:
    """Cut the slot's elements (with `mark`, if given) into sessions again and publish what changed."""
    elements = [e for s in slot.sessions for e in s.elements]
    if mark is not None:
        insort(elements, mark, key=_key)
    runs = segment(elements, slot.closes, rules)
    _reconcile(state, slot, runs, mark, hit, now, rules, out)


def _key(e: Element) -> tuple[int, str]:
    return e.key


def _reconcile(state: DeviceState, slot: Slot, runs: list[Run], mark: Mark | None, hit: HitView | None, now: int,
               rules: Rules, out: Emitted) -> None:
    """Turn the runs into the slot's sessions: see "Reconciling" in the module docstring."""
    guid = state.guid
    old = slot.sessions
    owner: dict[int, Session] = {id(e): s for s in old for e in s.elements}
    run_of: dict[int, int] = {id(e): i for i, run in enumerate(runs) for e in run.elements}
    claims: list[list[Session]] = [[] for _ in runs]
    for s in old:  # (in time order, so each claim list is too)
        claims[run_of[id(s.elements[0])]].append(s)
    taken = {s.id for sl in state.slots.values() for s in sl.sessions}
    latest_first = old[-1].first if old else None
    sessions: list[Session] = []
    for i, run in enumerate(runs):
        claim = claims[i]
        end_reason = run.end_reason
        if end_reason is None and run.last + rules.timeout_ms < now:
            end_reason = INACTIVITY
        if claim:
            session = claim[0]
            for gone in claim[1:]:
                _retract(state, gone, session, out)
            _refresh(state, session, run, slot.count + i + 1, end_reason, rules, out)
        else:
            sid = _fresh_id(guid, run, taken)
            taken.add(sid)
            session = Session(sid, slot.count + i + 1, 0, end_reason, "", run.elements)
            session.channel = _channel(session.landing, rules)
            if latest_first is not None and session.first < latest_first:
                out.counts.inserted += 1
            _publish(state, session, end_reason is None, out)
        sessions.append(session)
    slot.sessions = sessions
    for session in sessions:
        for e in session.elements:
            if e is mark:
                assert hit is not None
                _record(hit, guid, session.id, out)
            elif isinstance(e, Block):
                if e.sid != session.id:
                    out.records.append(range_move_record(guid, e, session.id))
                    out.counts.moves += 1
                    e.sid = session.id
            elif owner[id(e)].id != session.id:
                _move(guid, e, session.id, out)


def _refresh(state: DeviceState, session: Session, run: Run, index: int, end_reason: str | None,
             rules: Rules, out: Emitted) -> None:
    before = (session.index, session.first, session.last, session.pageviews, session.events, session.exit_url,
              session.exit_at, session.end_reason, session.landing)
    landing = session.landing
    session.reset(run.elements)
    if session.landing is not landing:
        session.channel = _channel(session.landing, rules)
    if session.index != index:
        out.counts.renumbered += 1
        session.index = index
    session.end_reason = end_reason
    after = (session.index, session.first, session.last, session.pageviews, session.events, session.exit_url,
             session.exit_at, session.end_reason, session.landing)
    if after != before:
        _publish(state, session, end_reason is None, out)


def _fresh_id(guid: str, run: Run, taken: set[str]) -> str:
    """The id of a session that claims no published one: that of its earliest hit (or block)
    whose id no session of the device holds — deterministic for a given `hits` log."""
    for e in run.elements:
        sid = e.sid if isinstance(e, Block) else session_id(guid, e[2])
        if sid not in taken:
            return sid
    # Every candidate is held (it cannot happen: each held id belongs to a session holding
    # that hit). Derive one from the run's first hit and its position, still deterministic.
    return session_id(guid, f"{run.elements[0].key}:{len(taken)}")


def _retract(state: DeviceState, gone: Session, into: Session, out: Emitted) -> None:
    state.version += 1
    out.pending.pop(gone.id, None)
    out.sessions.append(retraction(state.guid, gone, into.id, state.version))
    out.counts.merges += 1


def _move(guid: str, mark: Mark, sid: str, out: Emitted) -> None:
    record = out.placed.get(mark[2])
    if record is not None:  # placed in this same batch: not sent yet, so just re-point it
        record.session_id = sid
        return
    out.records.append(move_record(guid, mark, sid))
    out.counts.moves += 1


# -- closing, freezing, trimming -----------------------------------------------------------


def _expire(state: DeviceState, rules: Rules, now: int, out: Emitted) -> None:
    timeout = rules.timeout_ms
    for slot in state.slots.values():
        sessions = slot.sessions
        if not sessions:
            continue
        latest = sessions[-1]
        if latest.end_reason is None and latest.last + timeout < now:
            latest.end_reason = INACTIVITY
            _publish(state, latest, False, out)
        first = sessions[0]
        if first.end_reason is not None and first.last < now - rules.lateness_ms - timeout:
            horizon = now - rules.lateness_ms - timeout
            k = 1
            while k < len(sessions) and sessions[k].end_reason is not None and sessions[k].last < horizon:
                k += 1
            _freeze(slot, k)


def _freeze(slot: Slot, k: int) -> None:
    """Drop the first `k` sessions from the state: their rows stay as published."""
    sessions = slot.sessions
    slot.count += k
    if sessions[k - 1].last > slot.floor:
        slot.floor = sessions[k - 1].last
    del sessions[:k]
    if slot.closes and slot.closes[0] <= slot.floor:
        slot.closes = [c for c in slot.closes if c > slot.floor]


def _trim(slot: Slot, limit: int) -> None:
    """Keep at most `limit` elements in the slot: freeze its oldest closed sessions, then fold
    the oldest hits of the remaining one into a block (see `sessionizer.state`)."""
    excess = sum(len(s.elements) for s in slot.sessions) - limit
    while excess > 0 and len(slot.sessions) > 1:
        excess -= len(slot.sessions[0].elements)
        _freeze(slot, 1)
    if excess <= 0:
        return
    session = slot.sessions[0]
    k = min(excess + 1, len(session.elements) - 1)
    if k < 2:
        return
    folded = Session(session.id, 0, 0, None, "", session.elements[:k])
    block = Block(folded.first, folded.last, folded.pageviews, folded.events, folded.exit_url, folded.exit_at,
                  folded.landing, session.id)
    static = session.static
    session.reset([block, *session.elements[k:]])
    session.static = static  # the landing, index and id did not change
    if block.last > slot.floor:
        slot.floor = block.last
    if slot.closes and slot.closes[0] <= slot.floor:
        slot.closes = [c for c in slot.closes if c > slot.floor]


# -- publishing ----------------------------------------------------------------------------


def _publish(state: DeviceState, session: Session, is_open: bool, out: Emitted) -> None:
    state.version += 1
    session.version = state.version
    if out.coalesce:
        out.pending[session.id] = (state.guid, session, is_open)
        return
    out.sessions.append(session_snapshot(state.guid, session, is_open))
    if not is_open:
        session.static = None  # a closed session rarely changes again: keep memory for open ones


def _record(hit: HitView, guid: str, sid: str, out: Emitted) -> None:
    record = hit_record(hit, guid, sid)
    out.records.append(record)
    out.placed[hit.hit_id] = record


def _channel(landing: Mark, rules: Rules) -> str:
    # (by position: compiled, `landing.utm_source` is a generic attribute lookup on the NamedTuple)
    utm_source, utm_medium, utm_campaign, click_id_type = landing[9], landing[10], landing[11], landing[16]
    has_campaign = bool(utm_source or utm_medium or utm_campaign or landing[12] or landing[13] or landing[14]
                        or click_id_type)
    referrer_host = landing[REFERRER_HOST]
    page_host = urlsplit(landing[4]).hostname if referrer_host and not has_campaign else None  # (url)
    return rules.channels.channel(utm_source, utm_medium, utm_campaign, click_id_type, referrer_host, landing[VISIT],
                                  page_host, has_campaign)  # (VISIT: the site)
