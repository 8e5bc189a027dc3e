"""What every Kafka producer of the project shares: the batching unit both producing stages
build on, and what to know about aiokafka's idempotent producer.

Why batches by hand: aiokafka's `send()` costs a coroutine, a future and a pure-Python murmur2
per record, more than the rest of a hit's work at the edge. Both the edge (`ingest.publisher`)
and the sessionizer (`sessionizer.output`) therefore place records on partitions themselves
(`schemas.partitioning`) and hand aiokafka whole record batches with its public batch API
(`create_batch` + `send_batch`), so aiokafka still compresses, numbers the records
(idempotence), retries and reconnects. `PartitionBatch` is that unit; what the two stages do
around it differs (the edge: one batch in flight per partition, deadlines per request; the
sessionizer: a round's batches, acknowledged together, in order).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from aiokafka import errors as aiokafka_errors
from aiokafka.producer.message_accumulator import BatchBuilder

# Errors after which an idempotent producer never recovers (seen after a broker restart): every
# later batch fails the same way, so the owner must replace the producer (a new producer id).
PRODUCER_STATE_LOST: tuple[type[BaseException], ...] = (
    aiokafka_errors.OutOfOrderSequenceNumber,
    aiokafka_errors.UnknownProducerId,
    aiokafka_errors.InvalidProducerEpoch,
)


class BatchProducer(Protocol):
    """The part of aiokafka's producer the batching unit uses (a fake in tests)."""

    def create_batch(self) -> Any: ...

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]: ...


class PartitionBatch:
    """Records of one (topic, partition) in one Kafka record batch: `add` until it is full (the
    first record always fits: Kafka takes one oversized record alone), then `send` it whole.

    With aiokafka's own `BatchBuilder` (what its producer's `create_batch` returns), records go
    straight to the C record builder inside it: the builder's `append` is a Python wrapper
    (serializers we do not use, an offset counter) that costs more than the C append itself
    (bench: 0.46 µs against 0.22 µs a record, a few hundred thousand records per sessionizer
    round). The counter it would have kept is set before the batch is handed over: aiokafka
    numbers the idempotent producer's sequences by it (`record_count`)."""

    __slots__ = ("topic", "partition", "count", "_builder", "_append", "_records")

    def __init__(self, producer: BatchProducer, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.count = 0
        self._builder = producer.create_batch()
        self._append = self._builder.append
        inner = getattr(self._builder, "_builder", None) if type(self._builder) is BatchBuilder else None
        self._records: Any = None if inner is None else inner.append

    def add(self, key: bytes | None, value: bytes | None) -> bool:
        """Append a record; False when the batch is full (the record is not in it)."""
        records = self._records
        if records is not None:
            if records(self.count, None, key, value, _NO_HEADERS) is None:
                return False
        elif self._append(timestamp=None, key=key, value=value) is None:
            return False
        self.count += 1
        return True

    async def send(self, producer: BatchProducer) -> asyncio.Future[Any]:
        """Close the batch and hand it to `producer`. The future is done when Kafka has
        acknowledged the whole batch; its result's `offset` is the first record's."""
        if self._records is not None:
            self._builder._relative_offset = self.count  # (what its append would have counted)
        self._builder.close()
        return await producer.send_batch(self._builder, self.topic, partition=self.partition)


_NO_HEADERS: list[Any] = []  # (read only by the record builder)
