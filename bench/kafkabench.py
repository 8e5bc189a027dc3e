"""Kafka helpers shared by the sessionizer benchmarks: topic set-up, pre-filling, the raw
aiokafka baseline loop, and reading how far a consumer group has come."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from schemas.internals import partitions_of


async def create(bootstrap: str, names: Sequence[str], partitions: int, configs: dict[str, dict[str, str]] | None = None) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(n, num_partitions=partitions, replication_factor=1, topic_configs=(configs or {}).get(n, {}))
            for n in names
            if n not in existing
        ]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def delete(bootstrap: str, prefix: str) -> None:
    """Delete every topic whose name starts with `prefix` (a finished benchmark's topics)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


async def prefill(bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes]]) -> float:
    """Produce (key, value) records with the default (murmur2) partitioner; returns seconds taken."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=20, max_batch_size=512 * 1024
    )
    await producer.start()
    started = time.perf_counter()
    try:
        futures = []
        for key, value in records:
            futures.append(await producer.send(topic, value, key=key))
            if len(futures) >= 20_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        parts = await partitions_of(consumer, topic)
        tps = [TopicPartition(topic, p) for p in parts]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def count(bootstrap: str, topic: str) -> int:
    return sum((await end_offsets(bootstrap, topic)).values())


async def raw_loop(bootstrap: str, source: str, dest: str, total: int, group: str, *,
                   explicit_partition: bool = False) -> dict[str, float]:
    """The baseline: getmany -> one produced record per input (keyed like the input) -> await acks -> commit.

    `explicit_partition`: each output goes to its input's partition number, so the producer
    skips its per-record murmur2 (a stronger floor). Timed from the first records received to
    the last output acknowledged (and committed)."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5, max_batch_size=512 * 1024
    )
    await consumer.start()
    await producer.start()
    done = 0
    started = None
    try:
        while done < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if not batches:
                continue
            if started is None:
                started = time.perf_counter()
            futures = []
            for tp, records in batches.items():
                partition = tp.partition if explicit_partition else None
                for r in records:
                    futures.append(await producer.send(dest, r.value, key=r.key, partition=partition))
            await asyncio.gather(*futures)
            await consumer.commit()
            done += len(futures)
        elapsed = time.perf_counter() - (started or time.perf_counter())
    finally:
        await producer.stop()
        await consumer.stop()
    return {"records": done, "seconds": elapsed, "per_s": done / elapsed if elapsed else 0.0}
