"""Producing the sessionizer's records: whole Kafka batches per partition, acknowledged together.

Faust's `topic.send` costs about 140 µs a record here and aiokafka's `producer.send` about
18 µs plus the key's partition (aiokafka's pure-Python murmur2 alone takes tens of µs). This
module appends encoded records to one aiokafka `BatchBuilder` per (topic, partition) —
a few µs a record — submits each with `send_batch`, and `flush()` returns only when the
broker has acknowledged every batch (the producer is idempotent with acks=all). The caller
orders its flushes: outputs first, then the table changelog, then the source offsets.

The processor co-partitions its outputs with `hits` (a device's records and snapshots go to
its `hits` partition number); `schemas.partitioning.Partitioner` — murmur2, exactly as the
Java client and aiokafka's default partitioner — places what has no `hits` partition to follow.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer


class Sender:
    """Submits closed batches to the producer, one (topic, partition) at a time in submission
    order — across writers too — so a later snapshot of a session, or a later state of a device
    in the changelog, can never land before an earlier one (compaction keeps the last)."""

    def __init__(self, producer: AIOKafkaProducer | None = None) -> None:
        self.producer: Any = producer
        self._tails: dict[tuple[str, int], asyncio.Future[Any]] = {}

    def submit(self, topic: str, partition: int, batch: Any, count: int) -> asyncio.Future[Any]:
        """Returns a future of the batch's (topic, partition, last offset), set once acknowledged."""
        slot = (topic, partition)
        previous = self._tails.get(slot)
        task = asyncio.ensure_future(self._send(previous, topic, partition, batch, count))
        self._tails[slot] = task
        task.add_done_callback(lambda t, slot=slot: self._tails.pop(slot, None) if self._tails.get(slot) is t else None)
        return task

    async def _send(self, previous: asyncio.Future[Any] | None, topic: str, partition: int, batch: Any,
                    count: int) -> tuple[str, int, int]:
        if previous is not None:
            # Only the hand-over to the producer is ordered here (aiokafka keeps one batch per
            # partition in flight, in order); a failure of the previous batch is its writer's.
            await asyncio.wait([previous])
        future = await self.producer.send_batch(batch, topic, partition=partition)
        meta = await future
        return topic, partition, meta.offset + count - 1


class BatchWriter:
    """Records for many (topic, partition)s, sent as whole batches: `submit` hands them to the
    producer, `wait` returns once every batch is acknowledged (`flush` does both).

    One writer per round of the processing task; writers share one `Sender`."""

    def __init__(self, sender: Sender) -> None:
        self._sender = sender
        self._open: dict[tuple[str, int], Any] = {}
        self._counts: dict[tuple[str, int], int] = {}
        self._pending: list[asyncio.Future[Any]] = []
        self.records = 0

    def add(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> None:
        slot = (topic, partition)
        batch = self._open.get(slot)
        if batch is None:
            batch = self._open[slot] = self._sender.producer.create_batch()
            self._counts[slot] = 0
        if batch.append(key=key, value=value, timestamp=None) is None:
            # Full: submit it and start another. An empty batch that cannot take the record
            # means the record is larger than max_batch_size: refuse loudly.
            if self._counts[slot] == 0:
                size = (len(key) if key else 0) + (len(value) if value else 0)
                raise ValueError(f"a {size}-byte record does not fit in one producer batch for {topic}")
            self._submit(slot, batch)
            batch = self._open[slot] = self._sender.producer.create_batch()
            self._counts[slot] = 0
            if batch.append(key=key, value=value, timestamp=None) is None:
                size = (len(key) if key else 0) + (len(value) if value else 0)
                raise ValueError(f"a {size}-byte record does not fit in one producer batch for {topic}")
        self._counts[slot] += 1
        self.records += 1

    def _submit(self, slot: tuple[str, int], batch: Any) -> None:
        batch.close()
        self._pending.append(self._sender.submit(slot[0], slot[1], batch, self._counts[slot]))

    def submit(self) -> None:
        """Hand every open batch to the producer (returns at once)."""
        for slot, batch in self._open.items():
            if self._counts[slot]:
                self._submit(slot, batch)
        self._open.clear()
        self._counts.clear()

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
        self._counts.clear()
        for fut in self._pending:
            fut.add_done_callback(_consume_exception)
        self._pending = []
        self.records = 0


def _consume_exception(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
