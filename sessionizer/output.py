"""Producing the sessionizer's records: whole Kafka batches per partition, acknowledged together.

Faust's `topic.send` and aiokafka's `producer.send` cost a coroutine, a future and a
pure-Python murmur2 per record. This module appends encoded records to one
`schemas.producer.PartitionBatch` per (topic, partition) — the batching unit the edge uses
too — submits each whole, and `flush()` returns only when the broker has acknowledged every
batch (the producer is idempotent with acks=all). The caller orders its flushes: outputs
first, then the table changelog, then the source offsets.

The processor co-partitions its outputs with `hits` (a device's records and snapshots go to
its `hits` partition number); `schemas.partitioning.Partitioner` — murmur2, exactly as the
Java client and aiokafka's default partitioner — places what has no `hits` partition to follow.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas.producer import PartitionBatch


class Sender:
    """Submits closed batches to the producer, one (topic, partition) at a time in submission
    order — across writers too — so a later snapshot of a session, or a later state of a device
    in the changelog, can never land before an earlier one (compaction keeps the last)."""

    def __init__(self, producer: AIOKafkaProducer | None = None) -> None:
        self.producer: Any = producer
        self._tails: dict[tuple[str, int], asyncio.Future[Any]] = {}

    def submit(self, batch: PartitionBatch) -> asyncio.Future[tuple[str, int, int]]:
        """Returns a future of the batch's (topic, partition, last offset), set once acknowledged."""
        slot = (batch.topic, batch.partition)
        previous = self._tails.get(slot)
        task = asyncio.ensure_future(self._send(previous, batch))
        self._tails[slot] = task
        task.add_done_callback(lambda t, slot=slot: self._tails.pop(slot, None) if self._tails.get(slot) is t else None)
        return task

    async def _send(self, previous: asyncio.Future[Any] | None, batch: PartitionBatch) -> tuple[str, int, int]:
        if previous is not None:
            # Only the hand-over to the producer is ordered here (aiokafka keeps one batch per
            # partition in flight, in order); a failure of the previous batch is its writer's.
            await asyncio.wait([previous])
        acknowledged = await batch.send(self.producer)
        meta = await acknowledged
        return batch.topic, batch.partition, meta.offset + batch.count - 1


class BatchWriter:
    """Records for many (topic, partition)s, sent as whole batches: `submit` hands them to the
    producer, `wait` returns once every batch is acknowledged (`flush` does both).

    One writer per round of the processing task; writers share one `Sender`."""

    def __init__(self, sender: Sender) -> None:
        self._sender = sender
        self._open: dict[tuple[str, int], PartitionBatch] = {}
        self._pending: list[asyncio.Future[tuple[str, int, int]]] = []
        self.records = 0

    def add(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> None:
        slot = (topic, partition)
        batch = self._open.get(slot)
        if batch is None:
            batch = self._open[slot] = PartitionBatch(self._sender.producer, topic, partition)
        if not batch.add(key, value):  # full: submit it and start another
            self._pending.append(self._sender.submit(batch))
            batch = self._open[slot] = PartitionBatch(self._sender.producer, topic, partition)
            if not batch.add(key, value):  # (aiokafka takes any first record: this would be a bug of ours)
                raise ValueError(f"an empty producer batch for {topic} refused a record")
        self.records += 1

    def submit(self) -> None:
        """Hand every open batch to the producer (returns at once)."""
        for batch in self._open.values():
            if batch.count:
                self._pending.append(self._sender.submit(batch))
        self._open.clear()

    async def wait(self) -> dict[tuple[str, int], int]:
        """Wait for every submitted batch's ack. Returns the last offset written per (topic,
        partition). Raises the first error (then nothing of this writer is known to be durable)."""
        pending, self._pending = self._pending, []
        last: dict[tuple[str, int], int] = {}
        if pending:
            for topic, partition, end in await asyncio.gather(*pending):
                if last.get((topic, partition), -1) < end:
                    last[(topic, partition)] = end
        return last

    async def flush(self) -> dict[tuple[str, int], int]:
        self.submit()
        return await self.wait()

    def discard(self) -> None:
        """Forget what was added (after a failure); batches already submitted may still land."""
        self._open.clear()
        for fut in self._pending:
            fut.add_done_callback(_consume_exception)
        self._pending = []
        self.records = 0


def _consume_exception(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
