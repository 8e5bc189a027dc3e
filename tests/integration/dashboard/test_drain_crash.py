"""kill -9 of a `touchstream sink` process in the middle of a rollup drain loses nothing: the drain's
transaction (queue rows deleted, rollups folded) never commits, the keys stay queued, and the next
worker's drain leaves the rollups equal to the views.

To catch the drain mid-way for certain, the test holds a lock on rollup_attribution_daily: the
drain has already taken its keys out of the queue and folded conversions and sessions when it
reaches that table, and waits there until the process is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from rollup_checks import mismatches
from schemas.timefmt import UTC
from schemas.topics import Topics
from schemas.wire import encode
from sink.testing import T0
from tests.dashboard_data import D, crowd, journeys
from tests.polling import wait_for

QUEUED = "SELECT (SELECT count(*) FROM rollup_pending_devices) + (SELECT count(*) FROM rollup_pending_conversions)"
STUCK = ("SELECT pid FROM pg_stat_activity WHERE application_name = 'touchstream-sink-rollups' "
         "AND wait_event_type = 'Lock' AND query LIKE '%rollup_drain%'")


async def produce(bootstrap: str, topics: Topics, items: list) -> None:
    """The snapshots and records as the sessionizer publishes them (keyed by session / device)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for item in items:
            if item.__class__.__name__ == "SessionSnapshot":
                await producer.send(topics.sessions, encode(item), key=item.session_id.encode())
            else:
                await producer.send(topics.events, encode(item), key=item.guid.encode())
        await producer.flush()
    finally:
        await producer.stop()


def sink_process(services: Any, topic_prefix: str, migrated: Any, group: str) -> subprocess.Popen:
    env = {**os.environ, **migrated.env(),
           "TOUCHSTREAM_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
           "TOUCHSTREAM_TOPIC_PREFIX": topic_prefix,
           "TOUCHSTREAM_SINK_GROUP": group,
           "TOUCHSTREAM_SINK_METRICS_PORT": "0",
           "TOUCHSTREAM_SINK_MAX_RECORDS": "50",  # many transactions, so keys are queued in many
           "TOUCHSTREAM_SINK_SESSION_TIMEOUT_MS": "6000",
           "TOUCHSTREAM_SINK_POLL_TIMEOUT_MS": "100",
           "TOUCHSTREAM_SINK_MAX_ROW_AGE_DAYS": "36500",  # the data is dated months back (sink.testing.T0)
           "TOUCHSTREAM_SINK_ROLLUP_INTERVAL_S": "0.2",
           "TOUCHSTREAM_SINK_ROLLUP_BATCH": "1000000"}  # one transaction: the kill lands in it
    return subprocess.Popen([sys.executable, "-m", "touchstream.cli", "sink", "--log-level", "WARNING"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def test_a_sink_killed_mid_drain_loses_nothing(services, topic_prefix, migrated, db):
    topics = Topics(topic_prefix)
    _, mine = journeys()
    first_wave, second_wave = mine + crowd(devices=25, seed=11), crowd(devices=15, seed=12)
    # The events partitions exist beforehand: creating one locks `events` whole, which would wait for
    # the drain held up here (a drain, like any reader of `events`, holds partition creation up while it runs).
    await db.execute("SELECT ensure_day_partitions('events', $1::date[])",
                     [(T0 + n * D).date() for n in range(-1, 17)])
    blocker = await migrated.connect()
    await blocker.execute("BEGIN; LOCK TABLE rollup_attribution_daily IN EXCLUSIVE MODE")
    first = sink_process(services, topic_prefix, migrated, f"sink-{topic_prefix}")
    second = None
    try:
        await produce(services.kafka_bootstrap, topics, first_wave)
        await wait_for(lambda: _landed(db, first_wave), timeout=60, what="the first wave's rows",
                       alive=lambda: _alive(first))
        stuck = await wait_for(lambda: db.fetchval(STUCK), timeout=30, what="a drain waiting inside its fold",
                               alive=lambda: _alive(first))
        queued = await db.fetchval(QUEUED)
        assert queued > 0
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        await blocker.execute("COMMIT")  # the orphaned backend goes on, cannot answer, and rolls back
        await wait_for(lambda: _gone(db, stuck), timeout=30, what="the killed drain's backend to end")
        # Nothing folded, nothing lost: every key the killed drain took is queued again.
        assert await db.fetchval(QUEUED) >= queued
        assert await db.fetchval("SELECT count(*) FROM rollup_attribution_daily") == 0
        assert await mismatches(db) != {}

        second = sink_process(services, topic_prefix, migrated, f"sink-{topic_prefix}")
        await produce(services.kafka_bootstrap, topics, second_wave)
        await wait_for(lambda: _landed(db, first_wave + second_wave), timeout=60, what="the second wave's rows",
                       alive=lambda: _alive(second))
        written = datetime.now(UTC)
        await wait_for(lambda: _folded_since(db, written), timeout=60, what="a drain after the last row")
        assert await db.fetchval(QUEUED) == 0
        assert await db.fetchval("SELECT count(*) FROM rollup_attribution_daily") > 0
        assert await mismatches(db) == {}
        second.terminate()
        assert second.wait(30) == 0, second.stderr.read().decode()[-2000:]  # SIGTERM: a clean stop
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        await blocker.close()


def _alive(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        raise AssertionError(f"the sink exited ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")


async def _landed(db: Any, items: list) -> bool:
    sessions = {i.session_id for i in items if i.__class__.__name__ == "SessionSnapshot"}
    events = sum(1 for i in items if i.__class__.__name__ == "EventRecord")
    return (await db.fetchval("SELECT count(*) FROM sessions") >= len(sessions)
            and await db.fetchval("SELECT count(*) FROM events") >= events)


async def _gone(db: Any, pid: int) -> bool:
    return not await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)


async def _folded_since(db: Any, since: datetime) -> bool:
    await asyncio.sleep(0)
    return await db.fetchval("SELECT as_of FROM rollup_state") > since
