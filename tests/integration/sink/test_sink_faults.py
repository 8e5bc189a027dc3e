"""Fault tests of the sink: PostgreSQL and the Kafka broker go away mid-stream.

They run on a private broker + PostgreSQL of this test session (`fault_services`), never on the
shared local stack, which other runs and the demo use.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

from sink import metrics

from sink_helpers import (committed_reach, count, counts_reach, end_offsets, journey_records, produce, running_sink,
                          wait_for)


@pytest.fixture(scope="session")
def services(fault_services):
    return fault_services


async def test_a_postgres_outage_mid_stream_loses_and_duplicates_nothing(services, roles, sink_settings, db, caplog):
    """PostgreSQL stops (fast shutdown) for ~6 s while records keep arriving."""
    caplog.set_level(logging.INFO)
    total_devices, waves = 40, 8
    produced_hits: list[str] = []
    retries_before = metrics.DB_RETRIES.labels("unavailable")._value.get()

    async def producer() -> None:
        for _ in range(waves):
            items = journey_records(roles, devices=total_devices // waves, pageviews=4)
            produced_hits.extend(item[2] for item in items if item[0] == roles.events)
            await produce(services.kafka_bootstrap, items)
            await asyncio.sleep(1.0)

    await db.close()  # the outage kills it anyway
    async with running_sink(sink_settings) as sink:
        feeding = asyncio.create_task(producer())
        await asyncio.sleep(2.0)
        await services.stop_postgres()
        try:
            await asyncio.sleep(6.0)
        finally:
            await services.start_postgres()
        await feeding
        conn = await _connect(sink_settings)
        try:
            expected = {"sessions": total_devices, "pageviews": total_devices * 4, "events": total_devices,
                        "late_hits": total_devices}
            await wait_for(lambda: counts_reach(conn, expected), timeout=60, what="every record after the outage")
            ends = await end_offsets(services.kafka_bootstrap, roles.all())
            await wait_for(lambda: committed_reach(services, sink_settings.sink_group, roles, ends), timeout=30,
                           what="offsets committed to the end")
            await asyncio.sleep(1.0)  # anything re-delivered would have landed by now
            for table, n in expected.items():
                assert await count(conn, table) == n, table
            assert await conn.fetchval("SELECT count(DISTINCT hit_id) FROM pageviews") == total_devices * 4
            assert await count(conn, "deadletter") == 0  # nothing was refused for lack of a database
            assert await conn.fetchval("SELECT count(*) FROM sessions WHERE version <> 3") == 0
            assert await conn.fetchval("SELECT sum(sessions) FROM devices") == total_devices
        finally:
            await conn.close()
        assert sink.stats["records"] >= len(produced_hits)
    assert metrics.DB_RETRIES.labels("unavailable")._value.get() > retries_before  # the outage was felt




async def _connect(settings):
    for _ in range(100):
        try:
            return await asyncpg.connect(settings.pg_dsn, server_settings={"search_path": settings.pg_schema})
        except (OSError, asyncpg.CannotConnectNowError):
            await asyncio.sleep(0.2)
    raise AssertionError("PostgreSQL did not come back")


async def test_a_broker_restart_mid_stream_loses_and_duplicates_nothing(services, roles, sink_settings, db, caplog):
    """The Kafka broker stops (SIGTERM) for ~5 s right after a wave of records; the sink carries on."""
    caplog.set_level(logging.INFO)
    async with running_sink(sink_settings):
        await produce(services.kafka_bootstrap, journey_records(roles, devices=20, pageviews=4))
        await wait_for(lambda: counts_reach(db, {"late_hits": 20}), timeout=60, what="the first wave")
        await produce(services.kafka_bootstrap, journey_records(roles, devices=20, pageviews=4))
        await services.stop_kafka()
        try:
            await asyncio.sleep(5.0)
        finally:
            await services.start_kafka()
        await produce(services.kafka_bootstrap, journey_records(roles, devices=20, pageviews=4))
        expected = {"sessions": 60, "pageviews": 240, "events": 60, "late_hits": 60}
        await wait_for(lambda: counts_reach(db, expected), timeout=120, what="every record after the restart")
        ends = await end_offsets(services.kafka_bootstrap, roles.all())
        await wait_for(lambda: committed_reach(services, sink_settings.sink_group, roles, ends), timeout=60,
                       what="offsets committed to the end")
    for table, n in expected.items():
        assert await count(db, table) == n, table
    assert await db.fetchval("SELECT sum(sessions) FROM devices") == 60
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE version <> 3") == 0
    assert await count(db, "deadletter") == 0
