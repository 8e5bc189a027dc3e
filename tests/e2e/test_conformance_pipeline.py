"""Every conformance scenario posted over HTTP gives the expected session rows in PostgreSQL
(scenarios.json, and arrival-order.json: late hits that merge, insert and renumber sessions).

The real edge, a real Faust sessionizer worker and a real sink run as separate processes
against the real broker and PostgreSQL. Scenarios that share settings share one pipeline; each
scenario's guids and hit ids are mapped into a namespace of their own (uuid5), so the
scenarios cannot see each other's devices, and mapped back before comparing.

The hits date from 2026, so the partitions' event time would take 30 minutes of wall clock
to pass the last sessions' timeout. A final "clock" hit per partition, a day after the last
scenario hit and from a device of its own, moves every partition's event time on (SPEC rule
7), which closes every session by inactivity the way a busy site would.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner

from schemas.timefmt import iso
from touchstream.pipeline import Pipeline
from tests import conformance_data

pytestmark = pytest.mark.e2e

SCENARIOS = conformance_data.load("scenarios.json")

SETTING_ENV = {
    "campaign_change": ("TOUCHSTREAM_SESSION_SPLIT_ON_CAMPAIGN", lambda v: "true" if v else "false"),
    "scope": ("TOUCHSTREAM_SESSION_SCOPE", str),
    "midnight_tz": ("TOUCHSTREAM_SESSION_MIDNIGHT_TZ", str),
    "timeout_ms": ("TOUCHSTREAM_SESSION_TIMEOUT_MS", str),
    "max_length_ms": ("TOUCHSTREAM_SESSION_MAX_LENGTH_MS", str),
    "drop_bots": ("TOUCHSTREAM_SESSION_DROP_BOTS", lambda v: "true" if v else "false"),
}
COMPARED = ("session_index", "started_at", "last_seen_at", "landing_url", "utm_source", "pageviews", "events", "hits", "end_reason")
PARTITIONS = 8


def settings_key(scenario: dict) -> str:
    return json.dumps(scenario["settings"], sort_keys=True)


GROUPS: dict[str, list[dict]] = {}
for _scenario in SCENARIOS:
    GROUPS.setdefault(settings_key(_scenario), []).append(_scenario)
# SPEC rule 6: late hits merge, insert and renumber sessions (all with default settings). Each
# scenario's hits are posted in the file's order, which is an out-of-order one.
ARRIVAL = conformance_data.load("arrival-order.json")
assert all(s["settings"] == {} for s in ARRIVAL)
GROUPS["arrival-order"] = ARRIVAL


def mapped(scenario: str, value: str) -> str:
    """A scenario's guid or hit id moved into the scenario's own namespace."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"touchstream-conformance/{scenario}/{value.lower()}"))


def clock_guids() -> list[str]:
    """One guid per partition (murmur2 of the key, as the edge's producer picks)."""
    partitioner = DefaultPartitioner()
    found: dict[int, str] = {}
    n = 0
    while len(found) < PARTITIONS:
        guid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"touchstream-conformance/clock/{n}"))
        found.setdefault(partitioner(guid.encode(), list(range(PARTITIONS)), list(range(PARTITIONS))), guid)
        n += 1
    return [found[p] for p in range(PARTITIONS)]


def expected_rows(scenarios: list[dict]) -> dict[tuple[str, str, int], dict]:
    """Keyed by (guid, site, session_index): under scope=site one guid has a session 1 per site.

    No scenario posts `site`, so the edge takes it from the URL's host, as here.
    """
    rows = {}
    for scenario in scenarios:
        for s in scenario["sessions"]:
            guid = mapped(scenario["name"], s["guid"])
            site = (urlsplit(s["landing_url"]).hostname or "").lower()
            key = (guid, site, s["session_index"])
            assert key not in rows, f"two expected sessions share {key}"
            rows[key] = {k: s[k] for k in COMPARED} | {"scenario": scenario["name"]}
    return rows


def as_compared(row) -> dict:
    out = {}
    for k in COMPARED:
        v = row[k]
        out[k] = iso(v) if isinstance(v, datetime) else v
    return out


@pytest.mark.parametrize("group", list(GROUPS), ids=lambda k: "defaults" if k == "{}" else k)
async def test_conformance_through_the_pipeline(group, services, topic_prefix, pg_schema, tmp_path):
    scenarios = GROUPS[group]
    # The scenarios are independent timelines multiplexed onto shared partitions: posted one
    # after another, a scenario dated 09:00 can follow one whose hits run a day later on its
    # partition (crawler_max_length), which would make it older than the default allowed
    # lateness (24 h, rule 6). Within each scenario the file's arrival order is kept.
    env = {"TOUCHSTREAM_SESSION_ALLOWED_LATENESS_MS": str(30 * 86_400_000),
           # The scenarios are dated March 2026 whatever today is: a backfill, to the edge and the sink.
           "TOUCHSTREAM_INGEST_MAX_HIT_AGE_DAYS": "36500", "TOUCHSTREAM_SINK_MAX_ROW_AGE_DAYS": "36500"}
    for name, value in ({} if group == "arrival-order" else json.loads(group)).items():
        var, conv = SETTING_ENV[name]
        env[var] = conv(value)
    pipeline = Pipeline(
        workdir=tmp_path,
        kafka_bootstrap=services.kafka_bootstrap,
        pg_dsn=pg_schema.dsn,
        topic_prefix=topic_prefix,
        pg_schema=pg_schema.schema,
        partitions=PARTITIONS,
        extra_env=env,
    )
    try:
        pipeline.start()
        latest = datetime.fromisoformat("2000-01-01T00:00:00+00:00")
        async with httpx.AsyncClient(base_url=pipeline.edge_url, timeout=30) as client:
            # Arrival order matters (rules 5 and 6): one hit per request, each acknowledged by
            # Kafka before the next is sent, so the topic holds them in the scenario's order.
            for scenario in scenarios:
                for hit in scenario["hits"]:
                    body = dict(hit, guid=mapped(scenario["name"], hit["guid"]), hit_id=mapped(scenario["name"], hit["hit_id"]))
                    response = await client.post("/v1/hits", json=body)
                    assert response.status_code == 202, (scenario["name"], response.text)
                    assert response.json()["accepted"] == 1
                    latest = max(latest, datetime.fromisoformat(hit["created_at"]))
            clock_time = iso(latest + timedelta(days=1))
            for guid in clock_guids():
                response = await client.post("/v1/hits", json={"guid": guid, "url": "https://clock.example/", "created_at": clock_time})
                assert response.status_code == 202, response.text

        expected = expected_rows(scenarios)
        guids = sorted({g for g, _, _ in expected})
        conn = await pg_schema.connect()
        try:
            deadline = time.monotonic() + 180
            while True:
                pipeline.check_alive()
                try:
                    rows = await conn.fetch(
                        "SELECT guid::text AS guid_text, * FROM sessions WHERE guid = ANY($1::uuid[]) ORDER BY guid, session_index",
                        guids,
                    )
                except asyncpg.UndefinedTableError:  # the sink migrates when it starts
                    rows = []
                actual = {(r["guid_text"], r["site"], r["session_index"]): as_compared(r) for r in rows}
                # Hits re-pointed by merges name only sessions that exist (no retracted one).
                orphans = await conn.fetchval(
                    "SELECT count(*) FROM (SELECT session_id FROM pageviews WHERE guid = ANY($1::uuid[]) "
                    "UNION ALL SELECT session_id FROM events WHERE guid = ANY($1::uuid[])) h "
                    "WHERE NOT EXISTS (SELECT 1 FROM sessions s WHERE s.session_id = h.session_id)", guids,
                ) if rows else None
                late = await conn.fetchval("SELECT count(*) FROM late_hits WHERE guid = ANY($1::uuid[])", guids) if rows else 0
                done = len(rows) == len(expected) and all(r["status"] == "closed" for r in rows) and orphans == 0
                if done or time.monotonic() > deadline:
                    break
                await asyncio.sleep(1.0)
        finally:
            await conn.close()

        problems = []
        for key, want in sorted(expected.items()):
            got = actual.get(key)
            want_fields = {k: want[k] for k in COMPARED}
            if got != want_fields:
                problems.append(f"{want['scenario']} site {key[1]} session {key[2]}:\n  want {want_fields}\n  got  {got}")
        extra = sorted(set(actual) - set(expected))
        if len(rows) != len(actual):
            problems.append(f"{len(rows)} session rows but {len(actual)} distinct (guid, site, session_index)")
        if extra:
            problems.append(f"unexpected sessions: {extra}")
        if orphans:
            problems.append(f"{orphans} pageview/event rows name a session that is not in sessions")
        unique = len({mapped(sc["name"], h["hit_id"]) for sc in scenarios for h in sc["hits"]})
        assert sum(r["hits"] for r in rows) + late == unique, "every distinct hit counted once, in a session or late"
        assert not problems, "\n".join(problems)
        assert all(r["status"] == "closed" and r["ended_at"] == r["last_seen_at"] for r in rows)
    finally:
        pipeline.stop()
