"""Helpers of the sink's integration tests: dump tables, wait, produce, run a sink worker, read offsets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas.wire import encode
from sink.consumer import SinkConsumer
from sink.settings import SinkSettings
from sink.testing import T0, event, late_hit, new_id, pageview, session
from tests.polling import wait_for  # noqa: F401  (re-exported for the tests here)

VOLATILE = {"updated_at", "written_at"}  # set by the database at write time


async def dump(conn: Any, table: str, order_by: str) -> list[tuple]:
    """Every row of `table` without the columns the database stamps at write time."""
    rows = await conn.fetch(f"SELECT * FROM {table} ORDER BY {order_by}")
    return [tuple(v for k, v in r.items() if k not in VOLATILE) for r in rows]


async def produce(bootstrap: str, items: list[tuple[str, bytes | None, bytes | None]]) -> None:
    """(topic, key, value) records, acknowledged by the broker before this returns."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key) for topic, key, value in items]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def running_sink(settings: SinkSettings, client_id: str = "test-sink") -> AsyncIterator[SinkConsumer]:
    """A sink worker running in a task; stopped (and its errors raised) on exit."""
    sink = SinkConsumer(settings, client_id=client_id)
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    try:
        done, _ = await asyncio.wait({task, asyncio.create_task(sink.started.wait())},
                                     timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # raises what made it stop
        assert sink.started.is_set(), "sink did not start within 60 s"
        yield sink
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def committed_offsets(bootstrap: str, group: str, topics: list[str]) -> dict[tuple[str, int], int]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if tp.topic in topics}


async def end_offsets(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer.topics()  # loads metadata of every topic
        tps = [tp for t in topics for tp in _partitions(consumer, t)]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): off for tp, off in ends.items() if off > 0}


def _partitions(consumer: Any, topic: str) -> list[Any]:
    from aiokafka import TopicPartition

    return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]


def key(guid: str) -> bytes:
    return guid.encode()


def journey_records(roles, devices: int = 10, pageviews: int = 5, start=T0):
    """Per device: one session in 3 versions, pageviews, one lead, one late hit."""
    items = []
    for _ in range(devices):
        guid = new_id()
        sid = new_id()
        for v in (1, 2, 3):
            items.append((roles.sessions, sid.encode(),
                          encode(session(session_id=sid, guid=guid, version=v, pageviews=v, started_at=start))))
        for n in range(pageviews):
            items.append((roles.events, key(guid), encode(pageview(session_id=sid, guid=guid,
                                                                   occurred_at=start + timedelta(seconds=n)))))
        items.append((roles.events, key(guid), encode(event(name="lead", session_id=sid, guid=guid,
                                                            occurred_at=start + timedelta(minutes=1)))))
        items.append((roles.events, key(guid), encode(late_hit(guid=guid))))
    return items


async def count(db, table: str) -> int:
    return await db.fetchval(f"SELECT count(*) FROM {table}")


async def counts_reach(db, expected: dict[str, int]) -> bool:
    for table, n in expected.items():
        if await count(db, table) < n:
            return False
    return True


async def committed_reach(services, group: str, roles, ends: dict) -> bool:
    committed = await committed_offsets(services.kafka_bootstrap, group, roles.all())
    return all(committed.get(tp, -1) >= end for tp, end in ends.items())
