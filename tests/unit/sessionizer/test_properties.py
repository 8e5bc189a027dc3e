"""Properties of the core over generated hit streams (hypothesis).

- SPEC rule 6, exactly: for any arrival order and any event-time advances that leave no hit
  older than the allowed lateness when it arrives, the core's final sessions are those of a
  batch computation over the hits sorted by time (`batch_sessions`, written here from the
  rules, independent of the core's code) — boundaries, counts, landing, exit, end reasons and
  numbering. With advances that do make hits too late, the same holds for the hits placed;
- every distinct hit is placed exactly once: in one session (pageview/event record with that
  session's id, re-pointed by moves, counted in its snapshot) or in a late_hit record;
  duplicates leave no trace, and no record ends up naming a retracted session;
- the same hits in the same order give identical output (ids included), whether or not the
  state passes through its bytes between calls;
- with offsets passed, redelivering any stretch of the log (a crash before the commit)
  changes nothing, however many hits of the device it holds;
- `Emitted(coalesce=True)` publishes, per batch, exactly the newest snapshot (or retraction)
  of each session that the default mode publishes.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from schemas.views import HitView
from schemas.timefmt import to_ms
from sessionizer.machine import TOO_LATE, Emitted, Rules, next_deadline_ms, on_hit, on_time

from .driver import GUID, HOUR, MIN, T0, Partition, close_record, make_hit

TIMEOUT = 30 * MIN
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

RULESETS = [
    Rules(),
    Rules(max_length_ms=2 * HOUR),
    Rules(split_on_campaign=True),
    Rules(midnight_tz="America/New_York"),
    Rules(scope="site"),
    Rules(max_length_ms=HOUR, split_on_campaign=True, midnight_tz="UTC", scope="site"),
]
UTMS = [None, {"source": "google", "medium": "cpc"}, {"source": "facebook", "medium": "social"}]
SITES = ["https://a.example/", "https://b.example/"]



def hit_specs(span_minutes: int) -> st.SearchStrategy[tuple[int, int, bool, int, int]]:
    """A hit: (minutes from T0, a ms jitter, event?, utm choice, site choice)."""
    return st.tuples(
        st.integers(0, span_minutes), st.integers(0, 59_999), st.booleans(), st.integers(0, 2), st.integers(0, 1),
    )


def build(specs: list[tuple[int, int, bool, int, int]]) -> list[HitView]:
    return [
        make_hit(T0 + m * MIN + jitter, hid=n + 1, type="event" if ev else "pageview", utm=UTMS[u], url=SITES[s])
        for n, (m, jitter, ev, u, s) in enumerate(specs)
    ]


@st.composite
def streams(draw: Any) -> tuple[Rules, list[HitView], list[int], list[int]]:
    """Rules, hits, an arrival order (with duplicates) and an event-time step after each arrival."""
    rules = draw(st.sampled_from(RULESETS))
    # Dense streams make splits, bridges and late hits meet; sparse ones cross max length and midnight.
    span = draw(st.sampled_from([90, 4 * 60, 26 * 60]))
    specs = draw(st.lists(hit_specs(span), min_size=1, max_size=40))
    hits = build(specs)
    order = draw(st.permutations(range(len(hits))))
    dupes = draw(st.lists(st.tuples(st.integers(0, len(hits) - 1), st.integers(0, len(hits))), max_size=8))
    arrival = list(order)
    for which, where in dupes:
        arrival.insert(min(where, len(arrival)), arrival[which % len(arrival)])
    # see `play`
    steps = draw(st.lists(st.integers(0, 4), min_size=len(arrival), max_size=len(arrival)))
    return rules, hits, arrival, steps


def play(rules: Rules, hits: list[HitView], arrival: list[int], steps: list[int] | None = None, *,
         roundtrip: bool = False) -> Partition:
    """Deliver `arrival` with event-time `steps` after each hit: 0 = leave it, 1 = newest
    occurred_at seen, 2 = newest + timeout + 1 (closes what is idle), 3 = a day later (may make
    hits that arrive later too late), 4 = as far as the allowed lateness lets it go without
    making any hit still to arrive too late (closes and freezes all it can)."""
    part = Partition(rules=rules, roundtrip=roundtrip, validate=False)
    newest = 0
    for i, n in enumerate(arrival):
        hit = hits[n]
        newest = max(newest, to_ms(hit.occurred_at))
        part.hit(hit)
        step = steps[i] if steps else 1
        if step == 1:
            part.advance(newest)
        elif step == 2:
            part.advance(newest + rules.timeout_ms + 1)
        elif step == 3:
            part.advance(part.event_time + 24 * HOUR)
        elif step == 4:
            rest = [to_ms(hits[m].occurred_at) for m in arrival[i + 1:]]
            part.advance(min(rest) + rules.lateness_ms if rest else newest + 400 * 24 * HOUR)
    part.finish()
    return part


def scope_key(rules: Rules, session_or_hit: Any) -> str:
    site = session_or_hit["site"] if isinstance(session_or_hit, dict) else session_or_hit.site
    return site if rules.scope == "site" else ""


@PROPS
@given(streams())
def test_every_hit_is_placed_once_and_sessions_are_sound(stream) -> None:
    rules, hits, arrival, steps = stream
    part = play(rules, hits, arrival, steps)
    placed = part.placed()  # asserts no hit is placed twice, duplicates included
    assert set(placed) == {h.hit_id for h in hits}

    sessions = {s["session_id"]: s for s in part.sessions()}
    members: dict[str, list[HitView]] = defaultdict(list)
    by_id = {h.hit_id: h for h in hits}
    for rec in placed.values():
        if rec["kind"] == "late_hit":
            assert rec["reason"] == TOO_LATE
        else:
            members[rec["session_id"]].append(by_id[rec["hit_id"]])
    assert set(members) == set(sessions)
    assert not set(members) & set(part.retracted())

    per_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sid, s in sessions.items():
        times = sorted(to_ms(h.occurred_at) for h in members[sid])
        assert (to_ms(s["started_at"]), to_ms(s["last_seen_at"])) == (times[0], times[-1])
        assert s["hits"] == len(times)
        assert s["events"] == sum(h.type == "event" for h in members[sid])
        assert all(b - a <= rules.timeout_ms for a, b in zip(times, times[1:]))
        assert times[-1] - times[0] <= rules.max_length_ms
        if rules.midnight_tz:
            assert len({_local_day(t, rules.midnight_tz) for t in times}) == 1
        assert s["status"] == "closed" and s["ended_at"] == s["last_seen_at"]
        assert {scope_key(rules, h) for h in members[sid]} == {scope_key(rules, s)}
        per_key[scope_key(rules, s)].append(s)

    for group in per_key.values():
        group.sort(key=lambda s: s["session_index"])
        assert [s["session_index"] for s in group] == list(range(1, len(group) + 1))
        assert [s["started_at"] for s in group] == sorted(s["started_at"] for s in group)
        for a, b in zip(group, group[1:]):
            assert a["last_seen_at"] <= b["started_at"]  # (equal only when a campaign hit splits at its millisecond)


@PROPS
@given(streams())
def test_replay_is_deterministic_and_state_bytes_change_nothing(stream) -> None:
    rules, hits, arrival, steps = stream
    first = play(rules, hits, arrival, steps)
    again = play(rules, hits, arrival, steps, roundtrip=True)
    assert again.snapshots == first.snapshots
    assert again.records == first.records


@PROPS
@given(streams())
def test_duplicates_change_nothing(stream) -> None:
    rules, hits, arrival, _ = stream
    unique = list(dict.fromkeys(arrival))
    clean = play(rules, hits, unique)
    noisy = play(rules, hits, arrival)
    assert noisy.sessions() == clean.sessions()
    assert sorted(noisy.placed()) == sorted(clean.placed())


# -- rule 6: the batch reference -------------------------------------------------------------


def batch_sessions(hits: list[HitView], rules: Rules) -> list[tuple[Any, ...]]:
    """The sessions the rules give on `hits` (one device, distinct hit ids) sorted by time, all
    closed: per scope key, in (occurred_at, hit_id) order, a hit starts a new session after a
    gap over the timeout, past the maximum length from the session's first hit, on another
    local day (midnight), or with campaign data other than the session's first hit's; the
    session that ends gets that reason, and the last one `inactivity`."""
    groups: dict[str, list[HitView]] = defaultdict(list)
    for hit in hits:
        groups[hit.site if rules.scope == "site" else ""].append(hit)
    result: list[tuple[Any, ...]] = []
    for key, group in sorted(groups.items()):
        group.sort(key=lambda h: (to_ms(h.occurred_at), h.hit_id))
        sessions: list[dict[str, Any]] = []
        for hit in group:
            t = to_ms(hit.occurred_at)
            campaign = (hit.utm_source, hit.utm_medium, hit.utm_campaign, hit.utm_term, hit.utm_content, hit.utm_id,
                        hit.click_id, hit.click_id_type)
            cur = sessions[-1] if sessions else None
            reason = None if cur is not None else "start"
            if cur is not None:
                if t - cur["last"] > rules.timeout_ms:
                    reason = "inactivity"
                elif t - cur["first"] > rules.max_length_ms:
                    reason = "max_length"
                elif rules.midnight_tz and _local_day(t, rules.midnight_tz) != _local_day(cur["first"], rules.midnight_tz):
                    reason = "midnight"
                elif rules.split_on_campaign and any(campaign) and campaign != cur["campaign"]:
                    reason = "campaign_change"
            if reason is not None:
                if cur is not None:
                    cur["end"] = reason
                cur = {"first": t, "last": t, "pv": 0, "ev": 0, "landing": hit.url, "utm": hit.utm_source,
                       "campaign": campaign, "exit": None, "end": "inactivity"}
                sessions.append(cur)
            cur["last"] = t
            if hit.type == "event":
                cur["ev"] += 1
            else:
                cur["pv"] += 1
                cur["exit"] = hit.url
        result += [(key, n, s["first"], s["last"], s["pv"], s["ev"], s["landing"], s["utm"], s["exit"], s["end"])
                   for n, s in enumerate(sessions, 1)]
    return result


def _local_day(t: int, tz: str) -> Any:
    return datetime.fromtimestamp(t / 1000, timezone.utc).astimezone(ZoneInfo(tz)).date()


def core_sessions(part: Partition, rules: Rules) -> list[tuple[Any, ...]]:
    return sorted(
        (scope_key(rules, s), s["session_index"], to_ms(s["started_at"]), to_ms(s["last_seen_at"]), s["pageviews"],
         s["events"], s["landing_url"], s["utm_source"], s["exit_url"], s["end_reason"])
        for s in part.sessions()
    )


@st.composite
def in_lateness(draw: Any) -> tuple[Rules, list[HitView], list[int], list[int]]:
    """A stream whose event-time advances never leave a hit older than the allowed lateness by
    the time it arrives (steps 0, 1, 2 and 4 of `play`; 3 only while it stays within it)."""
    rules, hits, arrival, steps = draw(streams())
    times = [to_ms(h.occurred_at) for h in hits]
    if max(times) - min(times) >= rules.lateness_ms:  # (the 26-hour spans) so no arrival is too late by itself
        rules = dataclasses.replace(rules, lateness_ms=max(times) - min(times) + HOUR)
    event_time = 0
    newest = 0
    safe: list[int] = []
    for i, n in enumerate(arrival):
        newest = max(newest, times[n])
        event_time = max(event_time, times[n])
        step = steps[i]
        rest = [times[m] for m in arrival[i + 1:]]
        limit = min(rest) + rules.lateness_ms if rest else None
        target = {0: event_time, 1: newest, 2: newest + rules.timeout_ms + 1, 3: event_time + 24 * HOUR,
                  4: limit if limit is not None else event_time}[step]
        if limit is not None and target > limit:
            step = 4
            target = limit
        safe.append(step)
        event_time = max(event_time, target)
    return rules, hits, arrival, safe


@PROPS
@given(in_lateness())
def test_any_arrival_order_within_the_lateness_gives_the_time_order_sessions(stream) -> None:
    rules, hits, arrival, steps = stream
    part = play(rules, hits, arrival, steps)
    assert all(r["kind"] != "late_hit" for r in part.records)
    assert core_sessions(part, rules) == batch_sessions(list({h.hit_id: h for h in hits}.values()), rules)


@PROPS
@given(streams())
def test_with_hits_too_late_the_placed_hits_give_the_time_order_sessions(stream) -> None:
    rules, hits, arrival, steps = stream
    part = play(rules, hits, arrival, steps)
    placed = {hid for hid, rec in part.placed().items() if rec["kind"] != "late_hit"}
    kept = [h for h in {h.hit_id: h for h in hits}.values() if h.hit_id in placed]
    assert core_sessions(part, rules) == batch_sessions(kept, rules)


@PROPS
@given(in_lateness(), st.randoms(use_true_random=False))
def test_arrival_order_changes_no_session_only_ids(stream, rnd) -> None:
    """Two arrival orders of the same hits: the same sessions; each id is a deterministic
    function of the log (the same order gives the same ids)."""
    rules, hits, arrival, _ = stream
    other = list(arrival)
    rnd.shuffle(other)
    first = play(rules, hits, arrival)
    second = play(rules, hits, other)
    assert core_sessions(first, rules) == core_sessions(second, rules)
    assert [s["session_id"] for s in play(rules, hits, arrival).sessions()] == [
        s["session_id"] for s in first.sessions()]


@PROPS
@given(streams(), st.data())
def test_redelivery_with_offsets_changes_nothing(stream, data) -> None:
    rules, hits, arrival, _ = stream
    crash = data.draw(st.integers(0, len(arrival)), label="crash after")
    back = data.draw(st.integers(0, crash), label="records redelivered")
    clean = Partition(rules=rules, validate=False)
    crashed = Partition(rules=rules, validate=False)
    log = list(enumerate(arrival))
    for part, schedule in ((clean, log), (crashed, log[:crash] + log[crash - back:crash] + log[crash:])):
        for offset, n in schedule:
            part.hit(hits[n], offset=offset)
            part.advance(part.event_time)
        part.finish()
    assert crashed.sessions() == clean.sessions()
    assert crashed.records == clean.records


@PROPS
@given(streams(), st.integers(1, 12))
def test_coalesced_output_is_the_newest_snapshot_of_each_batch(stream, batch) -> None:
    rules, hits, arrival, _ = stream

    def run(coalesce: bool) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
        states: dict[str, Any] = {}
        batches = []
        event_time = 0
        for start in range(0, len(arrival) + 1, batch):
            out = Emitted(coalesce=coalesce)
            for n in arrival[start:start + batch]:
                hit = hits[n]
                event_time = max(event_time, to_ms(hit.occurred_at))
                states[hit.guid] = on_hit(states.get(hit.guid), hit, rules, event_time, out)
            horizon = event_time if start + batch <= len(arrival) else event_time + 10 * 24 * HOUR
            for guid, state in states.items():
                deadline = next_deadline_ms(state, rules)
                if deadline is not None and deadline <= horizon:
                    on_time(state, rules, horizon, out)
            latest: dict[str, dict[str, Any]] = {}
            for snap in out.flush():
                if snap["session_id"] not in latest or snap["version"] > latest[snap["session_id"]]["version"]:
                    latest[snap["session_id"]] = snap
            batches.append((sorted(latest.values(), key=lambda s: s["session_id"]), out.records))
        return batches

    assert run(True) == run(False)


# -- rule 12 with rule 6: storage cleared, in any arrival order -------------------------------------


def batch_with_clears(hits: list[HitView], clears: list[int], rules: Rules) -> list[tuple[Any, ...]]:
    """`batch_sessions` for one device (scope device, no other split rule) with storage cleared at
    `clears`: a session still within the timeout at a clear ends there (`storage_cleared`), one
    already expired keeps `inactivity`; hits after a clear start a new session."""
    items = sorted([(to_ms(h.occurred_at), 0, h.hit_id, h) for h in hits] + [(t, 1, "", None) for t in clears])
    sessions: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for t, is_clear, _, hit in items:
        if is_clear:
            if cur is not None:
                cur["end"] = "storage_cleared" if t - cur["last"] <= rules.timeout_ms else "inactivity"
                cur = None
            continue
        if cur is not None and (t - cur["last"] > rules.timeout_ms or t - cur["first"] > rules.max_length_ms):
            cur["end"] = "inactivity" if t - cur["last"] > rules.timeout_ms else "max_length"
            cur = None
        if cur is None:
            cur = {"first": t, "last": t, "hits": 0, "end": "inactivity"}
            sessions.append(cur)
        cur["last"] = t
        cur["hits"] += 1
    return [(n, s["first"], s["last"], s["hits"], s["end"]) for n, s in enumerate(sessions, 1)]


@PROPS
@given(st.lists(st.tuples(st.integers(0, 180), st.integers(0, 59_999)), min_size=1, max_size=25),
       st.lists(st.integers(0, 180 * MIN), min_size=1, max_size=3), st.randoms(use_true_random=False),
       st.lists(st.integers(0, 2), min_size=30, max_size=30))
def test_storage_cleared_in_any_arrival_order_gives_the_time_order_sessions(specs, clears, rnd, steps) -> None:
    rules = Rules()
    hits = [make_hit(T0 + m * MIN + j, hid=n + 1) for n, (m, j) in enumerate(specs)]
    clears = sorted(set(T0 + c for c in clears))
    # A clear reaches a device the sessionizer knows (one for an unknown guid is dropped): each
    # goes somewhere after the first hit of the arrival order.
    order: list[Any] = list(hits)
    rnd.shuffle(order)
    for c in clears:
        order.insert(rnd.randint(1, len(order)), c)
    part = Partition(rules=rules, validate=False)
    for i, item in enumerate(order):
        if isinstance(item, int):
            part.close(close_record(GUID, item))
        else:
            part.hit(item)
        if steps[i % len(steps)] == 1:
            part.advance(part.event_time)
        elif steps[i % len(steps)] == 2:
            part.advance(part.event_time + rules.timeout_ms + 1)
    part.finish()
    got = [(s["session_index"], to_ms(s["started_at"]), to_ms(s["last_seen_at"]), s["hits"], s["end_reason"])
           for s in part.sessions()]
    assert got == batch_with_clears(hits, clears, rules)
