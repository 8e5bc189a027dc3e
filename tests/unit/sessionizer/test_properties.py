"""Properties of the core over generated hit streams (hypothesis).

- every distinct hit is placed exactly once: in one session (pageview/event record with that
  session's id, counted in its snapshot) or in a late_hit record; duplicates leave no trace;
- a device's sessions (per scope key) never overlap, are numbered 1..n in time order, and
  no gap inside a session exceeds the timeout nor its span the maximum length;
- arrival order shuffled within a bound gives the sessions time order gives (same
  started_at, last_seen_at and counts). Session ids may differ: each belongs to the hit that
  *opened* its session in arrival order, and that is what is asserted;
- the same hits in the same order give identical output, whether or not the state passes
  through its bytes between calls;
- with offsets passed, redelivering any stretch of the log (a crash before the commit)
  changes nothing, however many hits of the device it holds;
- `Emitted(coalesce=True)` publishes, per batch, exactly the newest snapshot of each session
  that the default mode publishes.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.views import HitView
from schemas.timefmt import to_ms
from sessionizer.days import day_number
from sessionizer.identity import session_id
from sessionizer.machine import (
    BEFORE_LAST_SESSION,
    BEFORE_OPEN_SESSION,
    Emitted,
    Rules,
    next_deadline_ms,
    on_hit,
    on_time,
)

from .driver import GUID, HOUR, MIN, T0, Partition, make_hit

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
    # 0 = leave event time, 1 = newest occurred_at seen, 2 = newest + timeout + 1, 3 = a day later
    steps = draw(st.lists(st.integers(0, 3), min_size=len(arrival), max_size=len(arrival)))
    return rules, hits, arrival, steps


def play(rules: Rules, hits: list[HitView], arrival: list[int], steps: list[int] | None = None, *,
         roundtrip: bool = False) -> Partition:
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
            assert rec["reason"] in (BEFORE_OPEN_SESSION, BEFORE_LAST_SESSION)
        else:
            members[rec["session_id"]].append(by_id[rec["hit_id"]])
    assert set(members) == set(sessions)

    per_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sid, s in sessions.items():
        times = sorted(to_ms(h.occurred_at) for h in members[sid])
        assert (to_ms(s["started_at"]), to_ms(s["last_seen_at"])) == (times[0], times[-1])
        assert s["hits"] == len(times)
        assert s["events"] == sum(h.type == "event" for h in members[sid])
        assert all(b - a <= rules.timeout_ms for a, b in zip(times, times[1:]))
        assert times[-1] - times[0] <= rules.max_length_ms
        if rules.midnight_tz:
            assert len({day_number(t, rules.midnight_tz) for t in times}) == 1
        assert s["status"] == "closed" and s["ended_at"] == s["last_seen_at"]
        assert {scope_key(rules, h) for h in members[sid]} == {scope_key(rules, s)}
        per_key[scope_key(rules, s)].append(s)

    for group in per_key.values():
        group.sort(key=lambda s: s["started_at"])
        assert [s["session_index"] for s in group] == list(range(1, len(group) + 1))
        for a, b in zip(group, group[1:]):
            assert a["last_seen_at"] < b["started_at"]


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


# -- bounded disorder ------------------------------------------------------------------------

DISORDER = TIMEOUT // 2


@st.composite
def clustered(draw: Any) -> tuple[list[HitView], list[int]]:
    """Visits whose inner gaps are <= timeout / 2, apart by more than timeout + disorder, and an
    arrival order in which no hit comes after a hit more than DISORDER younger than itself."""
    specs: list[tuple[int, bool]] = []
    t = 0
    for _ in range(draw(st.integers(1, 4))):
        for i in range(draw(st.integers(1, 12))):
            if i:
                t += draw(st.integers(0, TIMEOUT // 2))
            specs.append((t, draw(st.booleans())))
        t += TIMEOUT + DISORDER + 1 + draw(st.integers(0, 3 * HOUR))
    hits = [make_hit(T0 + at, hid=n + 1, type="event" if ev else "pageview") for n, (at, ev) in enumerate(specs)]
    delays = draw(st.lists(st.integers(0, DISORDER - 1), min_size=len(hits), max_size=len(hits)))
    arrival = sorted(range(len(hits)), key=lambda n: (specs[n][0] + delays[n], n))
    return hits, arrival


def time_order_sessions(hits: list[HitView], rules: Rules) -> list[tuple[int, int, int, int]]:
    """The reference: sort by time, split on gaps over the timeout or past the max length."""
    out: list[list[int]] = []
    for hit in sorted(hits, key=lambda h: to_ms(h.occurred_at)):
        t = to_ms(hit.occurred_at)
        ev = hit.type == "event"
        if out and t - out[-1][1] <= rules.timeout_ms and t - out[-1][0] <= rules.max_length_ms:
            out[-1][1] = t
            out[-1][2 + ev] += 1
        else:
            out.append([t, t, int(not ev), int(ev)])
    return [tuple(s) for s in out]


@PROPS
@given(clustered())
def test_bounded_disorder_gives_the_time_order_sessions(case) -> None:
    hits, arrival = case
    rules = Rules()
    part = play(rules, hits, arrival)  # event time = newest occurred_at seen, deadlines after every hit
    got = [(to_ms(s["started_at"]), to_ms(s["last_seen_at"]), s["pageviews"], s["events"]) for s in part.sessions()]
    assert got == time_order_sessions(hits, rules)
    assert all(r["kind"] != "late_hit" for r in part.records)
    # Each id belongs to the first hit of its session in arrival order.
    placed = part.placed()
    opener: dict[str, str] = {}
    for n in arrival:
        opener.setdefault(placed[hits[n].hit_id]["session_id"], hits[n].hit_id)
    assert all(s["session_id"] == session_id(GUID, opener[s["session_id"]]) for s in part.sessions())



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
