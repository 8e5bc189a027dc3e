"""The batching unit both producing stages use (schemas.producer.PartitionBatch), on aiokafka's
own record batch builder; only the hand-over to a producer is faked."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder

from schemas.producer import PartitionBatch


class Producer:
    def __init__(self, batch_bytes: int) -> None:
        self.batch_bytes = batch_bytes
        self.sent: list[tuple[BatchBuilder, str, int]] = []

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_bytes, 0)  # 0: no compression

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future[Any]:
        self.sent.append((batch, topic, partition))
        return asyncio.get_running_loop().create_future()


async def test_records_go_in_until_the_batch_is_full_and_leave_closed_and_whole() -> None:
    producer = Producer(batch_bytes=1024)
    batch = PartitionBatch(producer, "t.events", 3)
    added = [batch.add(b"k", b"x" * 100) for _ in range(20)]
    assert added[:5] == [True] * 5 and added[-1] is False
    assert batch.count == added.count(True) < 20
    future = await batch.send(producer)
    [(builder, topic, partition)] = producer.sent
    assert (topic, partition, builder.record_count()) == ("t.events", 3, batch.count)
    assert builder.append(timestamp=None, key=None, value=b"late") is None, "handed over closed"
    assert not future.done()


def test_a_record_larger_than_a_batch_still_fits_alone() -> None:
    batch = PartitionBatch(Producer(batch_bytes=64), "t.deadletter", 0)
    assert batch.add(None, b"x" * 1000) and not batch.add(None, b"y")
    assert batch.count == 1
