"""Reading a whole topic back in tests: what a component wrote, and nothing more."""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord


async def read_topic(
    bootstrap: str, topic: str, expected: int, timeout: float = 30.0, settle: float = 0.5
) -> list[ConsumerRecord]:
    """Every record of `topic` from the beginning: at least `expected` of them (waiting up to
    `timeout`), then whatever else arrives within `settle` seconds (to catch extras)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or [])
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - a topic made after start
            partitions = sorted(consumer.partitions_for_topic(topic) or [])
        assert partitions, f"no partitions known for {topic}"
        consumer.assign([TopicPartition(topic, p) for p in partitions])
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
