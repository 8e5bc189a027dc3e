"""The sink worker end to end: Kafka topics -> PostgreSQL, offsets committed only after the write."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import pytest

from schemas.timefmt import UTC
from schemas.wire import dead_letter, encode
from sink import metrics
from sink.testing import T0, pageview

from sink_helpers import (committed_reach, count, counts_reach, dump, end_offsets, journey_records, produce,
                          running_sink, wait_for)


async def test_records_land_in_their_tables_and_offsets_are_committed_after(services, roles, sink_settings, db,
                                                                             caplog):
    caplog.set_level(logging.DEBUG)  # every log call on the way runs (and must not fail)
    items = journey_records(roles, devices=10)
    garbage = [(roles.events, b"k", b"\xffnot json"), (roles.sessions, b"k", b'{"v": 9}')]
    letter = dead_letter("ingest", "invalid hit", b'{"guid": 1}', at=T0)
    written_before = metrics.ROWS_WRITTEN.labels("pageviews")._value.get()
    await produce(services.kafka_bootstrap, items[:40] + garbage + [(roles.deadletter, None, encode(letter))]
                  + items[40:])
    async with running_sink(sink_settings) as sink:
        await wait_for(lambda: counts_reach(db, {"sessions": 10, "pageviews": 50, "events": 10, "late_hits": 10,
                                                  "deadletter": 3}), what="all rows")
        ends = await end_offsets(services.kafka_bootstrap, roles.all())
        await wait_for(lambda: committed_reach(services, sink_settings.sink_group, roles, ends),
                       what="offsets committed to the end")
        assert sink.stats["records"] == len(items) + 3
        sink._update_lag()
        lags = {(m.labels["topic"], m.labels["partition"]): m.value
                for metric in metrics.LAG.collect() for m in metric.samples if m.labels["topic"] in roles.all()}
        assert len(lags) >= 8 and set(lags.values()) == {0}
    assert metrics.ROWS_WRITTEN.labels("pageviews")._value.get() - written_before == 50
    today = datetime.now(UTC).date()
    days = {r[0] for r in await db.fetch("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                         "WHERE i.inhparent = 'events'::regclass")}
    assert {f"events_p{today + timedelta(days=n):%Y%m%d}" for n in range(-2, 8)} <= days  # made ahead at start
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE version = 3 AND pageviews = 3") == 10
    assert await count(db, "devices") == 10
    letters = {r["reason"]: r for r in await db.fetch("SELECT * FROM deadletter")}
    assert set(letters) == {"not valid JSON", "unsupported schema version", "invalid hit"}
    assert letters["not valid JSON"]["payload"] == b"\xffnot json"
    assert letters["not valid JSON"]["consumed_topic"] == roles.events
    assert letters["invalid hit"]["source"] == "ingest" and letters["invalid hit"]["payload"] == b'{"guid": 1}'


async def test_the_consumer_keeps_going_after_an_undecodable_record(services, roles, sink_settings, db):
    async with running_sink(sink_settings):
        await produce(services.kafka_bootstrap, [(roles.events, b"k", b"{")])
        await wait_for(lambda: counts_reach(db, {"deadletter": 1}), what="the dead letter")
        pv = pageview()
        await produce(services.kafka_bootstrap, [(roles.events, b"k", encode(pv))])
        await wait_for(lambda: counts_reach(db, {"pageviews": 1}), what="the pageview after it")
    assert str(await db.fetchval("SELECT hit_id FROM pageviews")) == pv.hit_id
    assert await db.fetchval("SELECT reason FROM deadletter") == "not valid JSON"


async def test_a_restarted_worker_writes_nothing_twice(services, roles, sink_settings, db):
    await produce(services.kafka_bootstrap, journey_records(roles, devices=5))
    async with running_sink(sink_settings):
        await wait_for(lambda: counts_reach(db, {"pageviews": 25, "late_hits": 5}), what="first round")
    before = await dump(db, "pageviews", "hit_id")
    await produce(services.kafka_bootstrap, journey_records(roles, devices=5))
    async with running_sink(sink_settings) as sink:
        await wait_for(lambda: counts_reach(db, {"pageviews": 50, "late_hits": 10}), what="second round")
        # only the new records were read: the first round's offsets were committed
        assert sink.stats["records"] == 5 * (3 + 5 + 2)
    after = await dump(db, "pageviews", "hit_id")
    assert set(before) < set(after) and len(after) == 50


@pytest.mark.topic_partitions(4)
async def test_two_workers_share_the_topics_and_write_everything_once(services, roles, sink_settings, db):
    await produce(services.kafka_bootstrap, journey_records(roles, devices=20))
    async with running_sink(sink_settings, client_id="w1") as first:
        await wait_for(lambda: counts_reach(db, {"late_hits": 1}), what="the first worker to write")
        async with running_sink(sink_settings, client_id="w2") as second:
            await produce(services.kafka_bootstrap, journey_records(roles, devices=20))
            await wait_for(lambda: counts_reach(db, {"sessions": 40, "pageviews": 200, "events": 40,
                                                      "late_hits": 40}), timeout=60, what="both rounds")
            ends = await end_offsets(services.kafka_bootstrap, roles.all())
            await wait_for(lambda: committed_reach(services, sink_settings.sink_group, roles, ends), timeout=30,
                           what="offsets committed to the end")
            assert first.consumer.assignment() and second.consumer.assignment()
            assert not (first.consumer.assignment() & second.consumer.assignment())
    assert await count(db, "pageviews") == 200
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE version = 3") == 40
    assert second.stats["records"] > 0


async def test_a_worker_killed_mid_stream_loses_and_duplicates_nothing(services, roles, sink_settings, db):
    """kill -9 of a `touchstream sink` process while records arrive; a new process finishes the job."""
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ,
           "TOUCHSTREAM_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
           "TOUCHSTREAM_TOPIC_PREFIX": sink_settings.topic_prefix,
           "TOUCHSTREAM_PG_DSN": sink_settings.pg_dsn,
           "TOUCHSTREAM_PG_SCHEMA": sink_settings.pg_schema,
           "TOUCHSTREAM_SINK_GROUP": sink_settings.sink_group,
           "TOUCHSTREAM_SINK_METRICS_PORT": "0",
           "TOUCHSTREAM_SINK_MAX_RECORDS": "100",
           "TOUCHSTREAM_SINK_SESSION_TIMEOUT_MS": "6000",
           "TOUCHSTREAM_SINK_POLL_TIMEOUT_MS": "100",
           # (records dated around sink.testing.T0: as the sink_settings fixture)
           "TOUCHSTREAM_SINK_MAX_ROW_AGE_DAYS": str(sink_settings.sink_max_row_age_days),
           "TOUCHSTREAM_SINK_LATE_HITS_RETENTION_DAYS": "off",
           "TOUCHSTREAM_SINK_DEADLETTER_RETENTION_DAYS": "off"}

    def start() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "touchstream.cli", "sink", "--log-level", "WARNING"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    devices, waves = 60, 6
    first = start()
    try:
        for wave in range(waves):
            await produce(services.kafka_bootstrap, journey_records(roles, devices=devices // waves, pageviews=5))
            if wave == 2:
                await wait_for(lambda: counts_reach(db, {"pageviews": 20}), timeout=60, what="the first rows")
                first.send_signal(signal.SIGKILL)
                first.wait(10)
        second = start()
        try:
            expected = {"sessions": devices, "pageviews": devices * 5, "events": devices, "late_hits": devices}
            await wait_for(lambda: counts_reach(db, expected), timeout=90, what="every record after the kill")
            ends = await end_offsets(services.kafka_bootstrap, roles.all())
            await wait_for(lambda: committed_reach(services, sink_settings.sink_group, roles, ends), timeout=30,
                           what="offsets committed to the end")
            for table, n in expected.items():
                assert await count(db, table) == n, table
            assert await db.fetchval("SELECT sum(sessions) FROM devices") == devices
            assert await db.fetchval("SELECT count(*) FROM sessions WHERE version <> 3") == 0
            assert await count(db, "deadletter") == 0
        finally:
            second.terminate()
            assert second.wait(30) == 0, second.stderr.read().decode()[-2000:]  # SIGTERM: a clean stop
    finally:
        if first.poll() is None:
            first.kill()
