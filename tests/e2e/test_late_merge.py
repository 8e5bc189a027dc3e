"""A bridging hit that arrives after both sessions it bridges were closed and written to
PostgreSQL (SPEC rule 6), through the real edge, sessionizer and sink: the rows converge to one
session — its pageviews and events re-pointed, the device's counts right, the attribution
credits of the lead summing to 1 under every model, nothing naming the merged-away session."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner

from touchstream.pipeline import Pipeline

pytestmark = pytest.mark.e2e

PARTITIONS = 8
GUID = str(uuid.uuid4())
SITE = "https://www.oakridge-apts.com"
# The hits are dated March 2026 whatever today is: a backfill, to the edge and the sink.
BACKFILL = {"TOUCHSTREAM_INGEST_MAX_HIT_AGE_DAYS": "36500", "TOUCHSTREAM_SINK_MAX_ROW_AGE_DAYS": "36500"}


def _hit(n: int, at: str, **more: Any) -> dict[str, Any]:
    return {"guid": GUID, "hit_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{GUID}/{n}")), "created_at": at,
            "url": f"{SITE}/", **more}


def _clock_hits(at: str) -> list[dict[str, Any]]:
    """A hit from a device of its own on every partition: moves each partition's event time to `at`."""
    partitioner = DefaultPartitioner()
    found: dict[int, str] = {}
    while len(found) < PARTITIONS:
        guid = str(uuid.uuid4())
        found.setdefault(partitioner(guid.encode(), list(range(PARTITIONS)), list(range(PARTITIONS))), guid)
    return [{"guid": g, "url": "https://clock.example/", "created_at": at} for g in found.values()]


async def _until(check: Any, what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.5)


async def test_a_bridging_hit_after_both_sessions_were_written_merges_them(services, topic_prefix, pg_schema,
                                                                           tmp_path) -> None:
    pipeline = Pipeline(workdir=tmp_path, kafka_bootstrap=services.kafka_bootstrap, pg_dsn=pg_schema.dsn,
                        topic_prefix=topic_prefix, pg_schema=pg_schema.schema, partitions=PARTITIONS,
                        extra_env=BACKFILL)
    try:
        pipeline.start()
        conn = await pg_schema.connect()
        async with httpx.AsyncClient(base_url=pipeline.edge_url, timeout=30) as client:
            async def post(body: Any) -> None:
                response = await client.post("/v1/hits", json=body)
                assert response.status_code == 202, response.text

            # 09:00 an ad click; 09:55 a second visit with a lead at 09:56 (35 min apart: two sessions).
            await post([_hit(1, "2026-03-02T09:00:00Z", url=f"{SITE}/?utm_source=google&utm_medium=cpc&gclid=Cj0"),
                        _hit(2, "2026-03-02T09:55:00Z", referrer="https://www.facebook.com/"),
                        _hit(3, "2026-03-02T09:56:00Z", type="event",
                             event={"name": "lead", "module": "contact_form"})])
            await post(_clock_hits("2026-03-02T12:00:00Z"))  # both sessions close

            async def two_closed() -> bool:
                try:
                    rows = await conn.fetch("SELECT status FROM sessions WHERE guid = $1::uuid", GUID)
                except Exception:  # the sink migrates when it starts
                    return False
                return len(rows) == 2 and all(r["status"] == "closed" for r in rows)

            await _until(two_closed, "two closed sessions in PostgreSQL")
            credit_before = await conn.fetch(
                "SELECT channel, credit FROM attribution_credits WHERE guid = $1::uuid AND model = 'first_touch' "
                "AND credit > 0", GUID)
            assert [r["channel"] for r in credit_before] == ["Paid Search"]

            await post(_hit(4, "2026-03-02T09:28:00Z"))  # 28 min after the first, 27 before the second

        async def merged() -> Any:
            rows = await conn.fetch("SELECT * FROM sessions WHERE guid = $1::uuid", GUID)
            return rows if len(rows) == 1 and rows[0]["hits"] == 4 else None

        [session] = await _until(merged, "the two sessions to become one")
        sid = session["session_id"]
        assert (session["pageviews"], session["events"], session["session_index"], session["channel"],
                session["status"]) == (3, 1, 1, "Paid Search", "closed")

        async def converged() -> bool:
            named = await conn.fetch("SELECT session_id FROM pageviews WHERE guid = $1::uuid "
                                     "UNION ALL SELECT session_id FROM events WHERE guid = $1::uuid", GUID)
            return len(named) == 4 and {r["session_id"] for r in named} == {sid}

        await _until(converged, "every pageview and event re-pointed to the merged session")
        device = await conn.fetchrow("SELECT sessions, first_session_id FROM devices WHERE guid = $1::uuid", GUID)
        assert (device["sessions"], device["first_session_id"]) == (1, sid)
        credits = await conn.fetch(
            "SELECT model, sum(credit) AS total, array_agg(DISTINCT session_id) AS touched "
            "FROM attribution_credits WHERE guid = $1::uuid GROUP BY model", GUID)
        assert len(credits) == 6
        assert all(abs(r["total"] - 1) < 1e-9 and r["touched"] == [sid] for r in credits)
        retracted = await conn.fetch("SELECT session_id, merged_into FROM session_retractions WHERE guid = $1::uuid",
                                     GUID)
        assert [r["merged_into"] for r in retracted] == [sid]
        await conn.close()
        # The sessionizer counts what rule 6 did (its Prometheus text on the Faust web port).
        argv = pipeline.components["sessionizer-0"].argv
        port = argv[argv.index("--web-port") + 1]
        async with httpx.AsyncClient(timeout=10) as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        counters = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                    if line.startswith("touchstream_sessionizer_") and not line.startswith("#")}
        assert counters["touchstream_sessionizer_merges_total"] == 1
        assert counters["touchstream_sessionizer_hits_moved_total"] == 2  # the second visit's pageview and lead
        assert counters["touchstream_sessionizer_reordered_total"] == 1
    finally:
        pipeline.stop()
