"""Reading a whole topic back in tests: what a component wrote, and nothing more."""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from schemas.internals import partitions_of


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The topic's partitions, asking the broker again if the consumer started before the topic."""
    return [TopicPartition(topic, p) for p in await partitions_of(consumer, topic)]


async def read_topic(
    bootstrap: str, topic: str, expected: int, timeout: float = 30.0, settle: float = 0.5
) -> list[ConsumerRecord]:
    """Every record of `topic` from the beginning: at least `expected` of them (waiting up to
    `timeout`), then whatever else arrives within `settle` seconds (to catch extras)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic)
        assert tps, f"no partitions known for {topic}"
        consumer.assign(tps)
        await consumer.seek_to_beginning()
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=300, max_records=10_000)).values():
                records.extend(batch)
        quiet_until = time.monotonic() + settle
        while time.monotonic() < quiet_until:
            for batch in (await consumer.getmany(timeout_ms=100, max_records=10_000)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def read_all(bootstrap: str, topic: str, start: dict[int, int] | None = None) -> list[ConsumerRecord]:
    """Every record of `topic` up to its current end (from `start` offsets per partition if given)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic)
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, (start or {}).get(tp.partition, 0))
        remaining = {tp for tp in tps if ends[tp] > (start or {}).get(tp.partition, 0)}
        out: list[ConsumerRecord] = []
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=2000)
            for tp, records in batch.items():
                for r in records:
                    if r.offset < ends[tp]:
                        out.append(r)
                    if r.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """partition -> the offset the next record of `topic` will get."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(await topic_partitions(consumer, topic))
        return {tp.partition: o for tp, o in ends.items()}
    finally:
        await consumer.stop()
