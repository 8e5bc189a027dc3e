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


async def test_records_added_are_the_records_aiokafkas_own_append_writes() -> None:
    """The records go to the C record builder directly: the built batch (what Kafka receives)
    must be byte for byte what aiokafka's `BatchBuilder.append` builds, record count included."""
    from aiokafka.record.default_records import DefaultRecordBatch

    records = [(b"guid-%d" % i, b'{"n":%d}' % i) for i in range(50)] + [(None, b"no key"), (b"k", None)]
    producer = Producer(batch_bytes=1_000_000)
    batch = PartitionBatch(producer, "t.events", 1)
    assert all(batch.add(k, v) for k, v in records)
    await batch.send(producer)
    [(ours, _, _)] = producer.sent
    theirs = BatchBuilder(1_000_000, 0)
    for k, v in records:
        assert theirs.append(timestamp=None, key=k, value=v) is not None
    assert ours.record_count() == theirs.record_count() == len(records)
    built, expected = DefaultRecordBatch(bytes(ours._build())), DefaultRecordBatch(bytes(theirs._build()))
    got = [(r.offset, r.key, r.value) for r in built]
    assert got == [(r.offset, r.key, r.value) for r in expected] == [(i, k, v) for i, (k, v) in enumerate(records)]
