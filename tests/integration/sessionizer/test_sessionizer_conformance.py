"""The conformance scenarios (shared/conformance/scenarios.json) through the real broker and a
running sessionizer worker process.

Hits are published as the edge publishes them (HitIn -> enrich with received_at = created_at,
so occurred_at = created_at; keyed by guid). Scenarios that share settings run together on one
worker, each in its own guid namespace (guids and hit ids are mapped to scenario-specific
uuids, keeping their case). The hits are from 2026-03: once a partition has nothing left to
consume its event time moves with the wall clock (SPEC rule 7), so every session closes
promptly and its final snapshot can be compared with the expected one.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from sessionizer_helpers import Worker, edge_records, event_records, latest_sessions, namespaced, produce, wait_for

from schemas.timefmt import parse_timestamp
from tests import conformance_data
from schemas.topics import Topics

SETTINGS_ENV = {"campaign_change": "TOUCHSTREAM_SESSION_SPLIT_ON_CAMPAIGN", "scope": "TOUCHSTREAM_SESSION_SCOPE"}
COMPARED = ("session_index", "started_at", "last_seen_at", "landing_url", "utm_source", "pageviews", "events",
            "hits", "end_reason")


def _scenarios() -> list[dict[str, Any]]:
    return conformance_data.load("scenarios.json")


def _groups() -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for scenario in _scenarios():
        groups[json.dumps(scenario["settings"], sort_keys=True)].append(scenario)
    return groups


GROUPS = _groups()


def _env_for(settings: dict[str, Any]) -> dict[str, str]:
    env = {}
    for key, value in settings.items():
        assert key in SETTINGS_ENV, f"scenario setting {key!r} has no sessionizer setting mapped in this test"
        env[SETTINGS_ENV[key]] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def _comparable(snapshot: dict[str, Any]) -> dict[str, Any]:
    out = {k: snapshot.get(k) for k in COMPARED}
    for k in ("started_at", "last_seen_at"):
        out[k] = parse_timestamp(out[k])
    return out


def test_scenarios_file_is_covered() -> None:
    """Every scenario is in exactly one settings group below (none silently left out)."""
    names = [s["name"] for s in _scenarios()]
    grouped = [s["name"] for group in GROUPS.values() for s in group]
    assert sorted(names) == sorted(grouped) and len(names) >= 14


@pytest.mark.parametrize("group", sorted(GROUPS), ids=lambda g: "default" if g == "{}" else g)
async def test_conformance_scenarios_through_kafka(services: Any, topic_prefix: str, tmp_path: Path, group: str) -> None:
    scenarios = GROUPS[group]
    topics = Topics(topic_prefix)
    settings = json.loads(group)

    # Each scenario in its own guid namespace; hit ids too, so they stay unique on `events`.
    records: list[tuple[bytes, bytes]] = []
    expected: dict[str, list[dict[str, Any]]] = {}
    back: dict[str, tuple[str, str]] = {}  # namespaced guid (lower) -> (scenario, original guid lower)
    hit_ids: set[str] = set()
    for scenario in scenarios:
        name = scenario["name"]
        hits = []
        for raw in scenario["hits"]:
            hit = dict(raw)
            hit["guid"] = namespaced(name, raw["guid"])
            hit["hit_id"] = namespaced(name, raw["hit_id"])
            back[hit["guid"].lower()] = (name, raw["guid"].lower())
            hit_ids.add(hit["hit_id"].lower())
            hits.append(hit)
        records += edge_records(hits)
        expected[name] = scenario["sessions"]

    worker = Worker("w", services.kafka_bootstrap, topic_prefix, f"{topic_prefix}sessionizer", tmp_path,
                    **_env_for(settings)).start()
    try:
        await worker.wait_partitions(8)
        await produce(services.kafka_bootstrap, topics.hits, records)
        want = sum(len(s) for s in expected.values())

        async def all_closed() -> bool:
            assert worker.alive(), worker.log_tail()
            latest = await latest_sessions(services.kafka_bootstrap, topics)
            return len(latest) >= want and all(s["status"] == "closed" for s in latest.values())

        await wait_for(all_closed, 90, f"{want} closed sessions")
        latest = await latest_sessions(services.kafka_bootstrap, topics)
        events = await event_records(services.kafka_bootstrap, topics)
    finally:
        worker.stop()

    got: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for snap in latest.values():
        name, guid = back[snap["guid"]]
        got[name].append({"guid": guid, **_comparable(snap)})
        assert snap["status"] == "closed" and snap["ended_at"] == snap["last_seen_at"]
    for name, sessions in expected.items():
        want_sessions = sorted(
            ({"guid": s["guid"].lower(), **_comparable(s)} for s in sessions),
            key=lambda s: (s["guid"], s["session_index"], s["started_at"]),
        )
        have = sorted(got.get(name, []), key=lambda s: (s["guid"], s["session_index"], s["started_at"]))
        assert have == want_sessions, f"scenario {name}"

    # Every hit is accounted for on `events` (a pageview/event with its session, or a late hit).
    seen = {rec["hit_id"].lower() for _, rec, _ in events}
    assert seen == hit_ids
    session_ids = set(latest)
    for key, rec, _ in events:
        assert key.decode() == rec["guid"]
        if rec["kind"] in ("pageview", "event"):
            assert rec["session_id"] in session_ids
