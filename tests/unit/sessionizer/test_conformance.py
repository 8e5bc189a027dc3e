"""Every conformance scenario (tests/data/conformance) against the pure core (SPEC section 3).

`scenarios.json` runs in its given arrival order; `arrival-order.json` (rule 6) in every
arrival order of its hits as well (each permutation, under every schedule below): the sessions
must be the same whatever the order and whenever sessions were closed in between.

The conformance README: a test of the pure logic may advance event time (close idle
sessions) between any two hits, and the result must not change. Each scenario runs under
several event-time schedules, as the adapter might produce them:

never      event time never moves; sessions close only at the end
partition  event time = newest occurred_at seen on the partition, deadlines run after every hit
hit_time   each hit is delivered with its own occurred_at as event time, and deadlines run at
           that time after it (event time may even step back)
realtime   before each hit the clock runs on to the hit's occurred_at (a quiet partition's
           wall clock, rule 7), closing what is idle by then
idle_jump  after a hit, when no remaining hit lies within timeout of the newest one, event
           time jumps to newest + timeout + 1 ms (closing everything idle)
roundtrip  as partition, with every device state stored as bytes between calls
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from schemas.timefmt import to_ms
from sessionizer.identity import session_id
from sessionizer.machine import Rules

from tests import conformance_data

from .driver import Partition, project, scenario_hit


SCENARIOS: list[dict[str, Any]] = conformance_data.load("scenarios.json")
ARRIVAL: list[dict[str, Any]] = conformance_data.load("arrival-order.json")
SCHEDULES = ["never", "partition", "hit_time", "realtime", "idle_jump", "roundtrip"]

# scenario setting -> Rules field (and how to convert it)
SETTING_TO_RULE = {
    "campaign_change": ("split_on_campaign", bool),
    "scope": ("scope", str),
    "midnight": ("midnight_tz", lambda v: v if isinstance(v, str) else ("UTC" if v else None)),
    "midnight_tz": ("midnight_tz", str),
    "timeout_ms": ("timeout_ms", int),
    "timeout_minutes": ("timeout_ms", lambda v: int(v) * 60_000),
    "max_length_ms": ("max_length_ms", int),
    "max_length_hours": ("max_length_ms", lambda v: int(v) * 3_600_000),
    "drop_bots": ("drop_bots", bool),
}


def rules_for(settings: dict[str, Any]) -> Rules:
    unknown = set(settings) - set(SETTING_TO_RULE)
    if unknown:
        pytest.fail(f"scenario setting(s) {sorted(unknown)} have no mapping to Rules: add them to SETTING_TO_RULE")
    kwargs = {}
    for key, value in settings.items():
        name, convert = SETTING_TO_RULE[key]
        kwargs[name] = convert(value)
    return Rules(**kwargs)


def run(scenario: dict[str, Any], schedule: str, order: tuple[int, ...] | None = None) -> Partition:
    rules = rules_for(scenario["settings"])
    part = Partition(rules=rules, roundtrip=schedule == "roundtrip")
    hits = [scenario_hit(raw) for raw in scenario["hits"]]
    if order is not None:
        hits = [hits[i] for i in order]
    times = [to_ms(h.occurred_at) for h in hits]
    newest = 0
    for i, hit in enumerate(hits):
        t = times[i]
        if schedule == "never":
            part.hit(hit, event_time=0)
        elif schedule in ("partition", "roundtrip"):
            part.hit(hit)
            part.advance(part.event_time)
        elif schedule == "hit_time":
            part.hit(hit, event_time=t)
            part.tick(t)
        elif schedule == "realtime":
            part.advance(t)
            part.hit(hit)
        elif schedule == "idle_jump":
            part.hit(hit)
            newest = max(newest, t)
            horizon = newest + rules.timeout_ms
            if all(later > horizon for later in times[i + 1:]):
                part.advance(horizon + 1)
        else:  # pragma: no cover
            raise AssertionError(schedule)
    part.finish()
    return part


def check(scenario: dict[str, Any], part: Partition) -> None:
    expected = scenario["sessions"]
    keys = sorted(set().union(*(e.keys() for e in expected)))
    got = [project(s, keys) for s in part.sessions()]
    order = lambda s: (s["guid"], s["started_at"], s.get("landing_url") or "")  # noqa: E731
    assert sorted(got, key=order) == sorted(expected, key=order)

    for session in part.sessions():
        assert session["status"] == "closed"
        assert session["ended_at"] == session["last_seen_at"]
        assert session["is_bounce"] == (session["pageviews"] == 1 and session["events"] == 0)

    # Every distinct hit is placed exactly once, in the session whose counts include it (after
    # the moves that merges and splits made), and no record names a retracted session.
    placed = part.placed()
    assert set(placed) == {raw["hit_id"] for raw in scenario["hits"]}
    assert all(rec["kind"] in ("pageview", "event") for rec in placed.values())
    per_session: dict[str, int] = {}
    for rec in placed.values():
        per_session[rec["session_id"]] = per_session.get(rec["session_id"], 0) + 1
    assert per_session == {s["session_id"]: s["hits"] for s in part.sessions()}
    assert not set(per_session) & set(part.retracted())


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
def test_scenario(scenario: dict[str, Any], schedule: str) -> None:
    check(scenario, run(scenario, schedule))


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("scenario", ARRIVAL, ids=[s["name"] for s in ARRIVAL])
def test_arrival_order_scenario_in_every_order(scenario: dict[str, Any], schedule: str) -> None:
    orders = list(itertools.permutations(range(len(scenario["hits"]))))
    assert orders[0] == tuple(range(len(scenario["hits"])))  # the file's own order among them
    for order in orders:
        part = run(scenario, schedule, order)
        try:
            check(scenario, part)
        except AssertionError as exc:
            raise AssertionError(f"arrival order {order}: {exc}") from exc


def test_arrival_order_scenarios_merge_insert_and_renumber() -> None:
    """The file's own orders do what their names say: the metrics of rule 6 count it."""
    by_name = {s["name"]: run(s, "partition") for s in ARRIVAL}
    assert by_name["bridge_merges_two_sessions"].counts.merges == 1
    assert by_name["bridge_chain_merges_three"].counts.merges == 2
    assert by_name["bridge_merge_renumbers_later_sessions"].counts.renumbered >= 1
    assert by_name["late_hit_opens_session_between"].counts.inserted == 1
    assert by_name["late_hit_before_first_session"].counts.inserted == 1
    assert by_name["late_hit_before_first_session"].counts.renumbered == 1
    merged = by_name["bridge_merges_two_sessions"]
    assert len(merged.retracted()) == 1 and merged.counts.moves == 1


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
def test_scenario_ids_are_deterministic(scenario: dict[str, Any]) -> None:
    """Same hits in the same order: same session ids, whatever the event-time schedule; and
    each id is UUIDv5 of the guid and the hit that opened the session in log order."""
    runs = [run(scenario, schedule) for schedule in ("never", "partition", "realtime")]
    ids = [[s["session_id"] for s in r.sessions()] for r in runs]
    assert ids[0] == ids[1] == ids[2]
    part = runs[0]
    first_seen: dict[str, str] = {}
    for rec in part.records:
        first_seen.setdefault(rec["session_id"], rec["hit_id"])
    for s in part.sessions():
        assert s["session_id"] == session_id(s["guid"], first_seen[s["session_id"]])
