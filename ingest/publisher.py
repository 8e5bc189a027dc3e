"""Getting hits into Kafka, and knowing when Kafka has them (acks=all, idempotent producer).

aiokafka's `send()` costs a coroutine, a future and a pure-Python murmur2 per record, more than
the rest of a hit's work (`bench/publisher_bench.py` measures both). So the edge batches
itself, with aiokafka's public batch API underneath:

- `publish()` puts each record on its partition's pending list (partition = murmur2 of the
  key, exactly as aiokafka's DefaultPartitioner and the Java client choose) and returns a
  `Ticket` that completes when Kafka has acknowledged every record of the request;
- each partition has at most one batch in flight. While it is in flight, new records wait in
  the pending list and leave together as the next batch the moment the acknowledgement
  arrives (so batches grow with load, like Kafka's own accumulator); an idle partition waits
  `linger_ms` for company first;
- a batch is a `schemas.producer.PartitionBatch` (the unit the sessionizer's output uses too):
  aiokafka's `create_batch()`, handed over whole with `send_batch()`, so aiokafka still does
  compression, idempotence (producer id, sequence numbers), retries and reconnection after a
  broker restart. One task per topic hands over the batches of a flush;
  each acknowledgement settles its batch's tickets in a done-callback (no task per batch).

Bounds (aiokafka has no max.block.ms): a request waits at most `publish_timeout_s` and then
gets 503; its records that have not left yet are dropped (`Ticket.abandoned`, also when one
of its batches fails), so a request reported as failed cannot be completed later by its own
retry logic. Records already in flight may still land: the client's retry then duplicates
them, which the sessionizer drops by `hit_id` (SPEC rule 8; the tracker always sends one). A
partition whose batch has been waiting longer than the bound fails new requests at once
instead of queueing behind it, and the buffer of pending bytes is capped, so a broker outage
costs memory and time bounded by settings, never unbounded queues.
"""

from __future__ import annotations


import asyncio
import contextlib
import heapq
import logging
import random
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol

from ingest.errors import PublishUnavailable
from ingest.metrics import Metrics
from ingest.settings import IngestSettings
from schemas.backoff import Backoff
from schemas.internals import KafkaProducer, ProducerPort, require
from schemas.partitioning import Partitioner
from schemas.producer import PRODUCER_STATE_LOST, PartitionBatch


log = logging.getLogger(__name__)

Record = tuple[bytes | None, bytes]  # (key, value)
_OVERHEAD = 64  # bytes a record costs beyond key and value (headers, varints, bookkeeping)
_SWEEP_SLACK = 0.05  # s: deadlines are enforced this precisely (one timer for all requests)
_WATCH_S = 1.0  # how often the watcher checks the producer and the partition lists


class Publisher(Protocol):
    """What the app needs from a publisher (the Kafka one, or a fake in tests)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, batches: Sequence[tuple[str, Sequence[Record]]], timeout: float) -> None: ...

    async def ready(self) -> bool: ...


class Ticket:
    """One request's records: done when every one is acknowledged, or failed with a reason."""

    __slots__ = ("future", "remaining", "abandoned")

    def __init__(self, future: asyncio.Future[str | None]) -> None:
        self.future = future  # result: None when all acknowledged, else why not
        self.remaining = 0
        self.abandoned = False

    def fail(self, reason: str) -> None:
        # The request is answered 503 and will be retried whole: what has not left yet never will.
        self.abandoned = True
        if not self.future.done():
            self.future.set_result(reason)


class _Partition:
    __slots__ = ("topic", "partition", "pending", "pending_bytes", "inflight_since")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.pending: list[tuple[bytes | None, bytes, Ticket]] = []
        self.pending_bytes = 0
        self.inflight_since: float | None = None


class _Batch:
    """A partition's batch handed to aiokafka, and the tickets waiting for its acknowledgement."""

    __slots__ = ("partition", "records", "tickets", "size", "started", "handed")

    def __init__(
        self, partition: _Partition, records: PartitionBatch, tickets: list[Ticket], size: int, started: float
    ) -> None:
        self.partition = partition
        self.records = records
        self.tickets = tickets
        self.size = size
        self.started = started
        self.handed = False  # given to aiokafka (or settled when it refused)


class KafkaPublisher:
    """The edge's producer. Start it inside the running loop (the app's lifespan does)."""

    def __init__(
        self,
        settings: IngestSettings,
        topics: Sequence[str],
        *,
        metrics: Metrics | None = None,
        producer_factory: Callable[..., ProducerPort] = KafkaProducer,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        require("aiokafka")  # KafkaProducer.sender_stopped reads a private aiokafka attribute
        self._settings = settings
        self._fatal = False  # set by a delivery error this producer cannot recover from
        self._topics = tuple(topics)
        self._metrics = metrics
        self._factory = producer_factory
        self._clock = clock  # for stall detection (injected in tests)
        self._stall_after = settings.ingest_publish_timeout_s
        self._max_buffer = settings.ingest_buffer_bytes
        self._linger = settings.ingest_linger_ms / 1000
        self._producer: ProducerPort | None = None
        self._partitions: dict[str, tuple[int, ...]] = {}
        self._states: dict[str, list[_Partition]] = {}  # by topic, indexed by partition id
        self._partitioners: dict[str, Partitioner] = {}
        self._buffered = 0
        self._flush_handle: asyncio.Handle | None = None
        self._followers: list[_Partition] = []  # partitions to send at the next loop turn
        self._tasks: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._deadlines: list[tuple[float, int, float, Ticket]] = []
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._sweep_at = 0.0
        self._seq = 0
        self._ready_at = -1e9
        self._ready = False
        self._ready_lock = asyncio.Lock()
        self._stopping = False
        self.last_error = "not connected to Kafka yet"

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, waiting a little; when Kafka is not there yet, go on connecting in the
        background (the edge answers 503 and /readyz says why until it is)."""
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_task(self._connect_logged(), name="ingest-kafka-connect")
        await asyncio.wait((self._connecting,), timeout=min(3.0, self._settings.ingest_publish_timeout_s))
        self._watcher = loop.create_task(self._watch(), name="ingest-kafka-watch")

    async def _connect_logged(self) -> None:
        try:
            await asyncio.wait_for(self._connect(), self._settings.ingest_request_timeout_ms / 1000 + 5)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.last_error = f"cannot reach Kafka at {self._settings.kafka_bootstrap}: {_describe(exc)}"
            log.warning("cannot reach Kafka; retrying",
                        extra={"bootstrap": self._settings.kafka_bootstrap, "error": _describe(exc)})

    async def _connect(self) -> None:
        s = self._settings
        producer = self._factory(
            bootstrap_servers=s.kafka_bootstrap,
            client_id="touchstream-ingest",
            enable_idempotence=True,
            acks="all",
            linger_ms=0,  # batches are built here and handed over closed
            max_batch_size=s.ingest_max_batch_bytes,
            compression_type=None if s.ingest_compression == "none" else s.ingest_compression,
            request_timeout_ms=s.ingest_request_timeout_ms,
            retry_backoff_ms=100,
            metadata_max_age_ms=60_000,
        )
        try:
            await producer.start()
            # Check the topics exist first: asking aiokafka for a missing topic's partitions
            # retries (and logs an error) every 100 ms until the request timeout.
            cluster = await producer.client.fetch_all_metadata()
            missing = [t for t in self._topics if not cluster.partitions_for_topic(t)]
            if missing:
                raise PublishUnavailable(
                    f"topic(s) {', '.join(missing)} do not exist; create them with `touchstream topics`"
                )
            for topic in self._topics:
                self._set_partitions(topic, await producer.partitions_for(topic))
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)
            raise
        self._producer = producer
        self.last_error = ""
        log.info("connected to Kafka", extra={"bootstrap": s.kafka_bootstrap, "topics": list(self._topics)})
        self._schedule_flush()  # anything that waited for the connection

    def _set_partitions(self, topic: str, partitions: Any) -> None:
        ids = tuple(sorted(partitions or ()))
        if not ids:
            raise PublishUnavailable(f"topic {topic!r} has no partitions (run `touchstream topics`)")
        if ids != self._partitions.get(topic):
            self._partitions[topic] = ids
            states = {st.partition: st for st in self._states.get(topic, [])}
            self._states[topic] = [states.get(p) or _Partition(topic, p) for p in ids]
            self._partitioners[topic] = Partitioner(len(ids))

    async def stop(self, timeout: float = 10.0) -> None:
        """Send what is pending, wait (bounded) for the acknowledgements, close."""
        self._stopping = True
        for task in (self._watcher, self._connecting):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._producer is not None:
            self._flush()
            deadline = self._clock() + timeout
            while (self._tasks or self._buffered) and self._clock() < deadline:
                if self._tasks:
                    await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - self._clock()))
                else:
                    await asyncio.sleep(0.01)
            producer, self._producer = self._producer, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), timeout)
        self._fail_pending("the edge is shutting down")
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        for _, _, _, ticket in self._deadlines:
            ticket.fail("the edge is shutting down")
        self._deadlines.clear()

    async def _watch(self) -> None:
        """Reconnects when the producer is gone or broken; keeps partition lists current."""
        delay = _WATCH_S
        reconnect = Backoff(2 * _WATCH_S, 10.0)  # while Kafka stays away: 2, 4, 8, 10 s between attempts
        while not self._stopping:
            await asyncio.sleep(delay)
            if self._connecting is not None and not self._connecting.done():
                continue  # a connection attempt is under way
            try:
                if self._producer is None:
                    await self._connect_logged()
                    if self._producer is not None:
                        reconnect.succeeded()
                    delay = _WATCH_S if self._producer is not None else reconnect.failed()
                elif self._producer_broken():
                    log.error("the Kafka producer stopped working; replacing it")
                    old, self._producer = self._producer, None
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(old.stop(), 5)
                    await self._connect_logged()
                else:
                    cluster = self._producer.client.cluster
                    for topic in self._topics:
                        known = cluster.partitions_for_topic(topic)
                        if known:
                            self._set_partitions(topic, known)
                if self._metrics is not None:
                    self._metrics.buffered_bytes.set(self._buffered)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let the watcher die
                log.warning("Kafka watcher failed; it goes on", extra={"error": _describe(exc)})

    def _producer_broken(self) -> bool:
        # A fatal error (e.g. OutOfOrderSequenceNumber) ends aiokafka's sender task for good, or
        # leaves it running while every batch fails (then a batch's error says so: `_fatal`).
        if self._fatal:
            self._fatal = False
            return True
        return self._producer is not None and self._producer.sender_stopped()

    # --- health -------------------------------------------------------------------------

    async def ready(self) -> bool:
        """Kafka answers a metadata request (cached for `ingest_ready_cache_s`)."""
        if self._clock() - self._ready_at < self._settings.ingest_ready_cache_s:
            return self._ready
        async with self._ready_lock:
            if self._clock() - self._ready_at < self._settings.ingest_ready_cache_s:
                return self._ready
            self._ready = await self._check()
            self._ready_at = self._clock()
            return self._ready

    async def _check(self) -> bool:
        producer = self._producer
        if producer is None or self._stalled_partition() is not None:
            return False
        try:
            cluster = await asyncio.wait_for(
                producer.client.fetch_all_metadata(), min(2.0, self._settings.ingest_publish_timeout_s)
            )
        except Exception as exc:
            self.last_error = f"Kafka metadata request failed: {_describe(exc)}"
            return False
        return bool(cluster.brokers()) and all(cluster.partitions_for_topic(t) for t in self._topics)

    def _stalled_partition(self) -> _Partition | None:
        now = self._clock()
        for states in self._states.values():
            for st in states:
                if st.inflight_since is not None and now - st.inflight_since > self._stall_after:
                    return st
        return None

    # --- publishing ---------------------------------------------------------------------

    async def publish(self, batches: Sequence[tuple[str, Sequence[Record]]], timeout: float) -> None:
        """Return once Kafka acknowledged every record; PublishUnavailable otherwise (within `timeout`)."""
        ticket = self.submit(batches)
        # The records now sit in the partitions' pending lists; the caller handed them over
        # (`Outcome.take_records`), so dropping this reference lets a built batch's records go.
        del batches
        if ticket.remaining == 0:
            return
        # One shared timer enforces every request's deadline: far cheaper per request than
        # asyncio.wait/wait_for, which each arm a timer and wrap the future.
        loop = asyncio.get_running_loop()
        self._seq += 1
        deadline = loop.time() + timeout
        heapq.heappush(self._deadlines, (deadline, self._seq, timeout, ticket))
        if self._sweep_handle is None or deadline < self._sweep_at:
            self._arm_sweep(loop, deadline)
        reason = await ticket.future
        if reason is not None:
            raise PublishUnavailable(reason)

    def _sweep(self) -> None:
        """Fail (and abandon) every ticket past its deadline; forget the finished ones."""
        self._sweep_handle = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadlines = self._deadlines
        while deadlines:
            deadline, _, timeout, ticket = deadlines[0]
            if ticket.future.done():
                if deadline > now + _SWEEP_SLACK:
                    break
            elif deadline > now:
                break
            else:
                ticket.abandoned = True  # what has not left yet never will
                ticket.fail(f"Kafka did not acknowledge within {timeout:g} s")
            heapq.heappop(deadlines)
        if deadlines:
            self._arm_sweep(loop, max(deadlines[0][0], now + _SWEEP_SLACK))

    def _arm_sweep(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
        self._sweep_at = at
        self._sweep_handle = loop.call_at(at, self._sweep)

    def submit(self, batches: Sequence[tuple[str, Sequence[Record]]]) -> Ticket:
        """Queue the records of one request; the ticket completes when all are acknowledged."""
        if self._producer is None:
            raise PublishUnavailable(self.last_error or "not connected to Kafka")
        if self._buffered > self._max_buffer:
            raise PublishUnavailable(f"more than {self._max_buffer} bytes wait for Kafka")
        ticket = Ticket(asyncio.get_running_loop().create_future())
        now = self._clock()
        stall = self._stall_after
        added = 0
        try:
            for topic, records in batches:
                if not records:
                    continue
                states = self._states.get(topic)
                if not states:
                    raise PublishUnavailable(f"no metadata for topic {topic!r} yet")
                partition_of = self._partitioners[topic]
                for key, value in records:
                    st = states[partition_of(key) if key is not None else random.randrange(len(states))]
                    if st.inflight_since is not None and now - st.inflight_since > stall:
                        raise PublishUnavailable(
                            f"Kafka has not acknowledged {st.topic}[{st.partition}] for {now - st.inflight_since:.1f} s"
                        )
                    size = len(value) + (len(key) if key is not None else 0) + _OVERHEAD
                    st.pending.append((key, value, ticket))
                    st.pending_bytes += size
                    added += size
                    ticket.remaining += 1
        except PublishUnavailable:
            ticket.abandoned = True  # what was queued above is skipped when its batch is built
            raise
        finally:
            self._buffered += added
        if ticket.remaining:
            self._schedule_flush()
        return ticket

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            if self._linger > 0:
                self._flush_handle = loop.call_later(self._linger, self._flush)
            else:
                self._flush_handle = loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Send a batch for every partition that has pending records and nothing in flight."""
        self._flush_handle = None
        self._hand_over_batches([st for states in self._states.values() for st in states])

    def _flush_followers(self) -> None:
        """Send the records that gathered while their partition's batch was in flight."""
        followers, self._followers = self._followers, []
        self._hand_over_batches(followers)

    def _hand_over_batches(self, partitions: list[_Partition]) -> None:
        producer = self._producer
        if producer is None:
            return
        outgoing = []
        for st in partitions:
            if st.pending and st.inflight_since is None:
                batch = self._build(producer, st)
                if batch is not None:
                    outgoing.append(batch)
        # One task per topic hands its batches to aiokafka; each acknowledgement then completes
        # its tickets in a callback. (A task per batch, awaiting its acknowledgement, cost a
        # sixth of the publishing CPU with small batches.) Per topic, because `send_batch` can
        # wait for a topic's metadata: one topic's wait must not hold the other's batches.
        by_topic: dict[str, list[_Batch]] = {}
        for batch in outgoing:
            by_topic.setdefault(batch.partition.topic, []).append(batch)
        loop = asyncio.get_running_loop()
        for batches in by_topic.values():
            task = loop.create_task(self._hand_over(producer, batches))
            self._tasks.add(task)
            task.add_done_callback(partial(self._handed_over, batches))

    def _handed_over(self, batches: list[_Batch], task: asyncio.Task[None]) -> None:
        """The hand-over task ended: a batch it never handed over (the task was cancelled, even
        before it first ran) is settled here, so no partition stays marked in flight."""
        self._tasks.discard(task)
        for batch in batches:
            if not batch.handed:
                batch.handed = True
                self._complete(batch, "the edge is shutting down")

    def _build(self, producer: ProducerPort, st: _Partition) -> _Batch | None:
        """The partition's next batch, from its pending records; None when all were abandoned."""
        records = PartitionBatch(producer, st.topic, st.partition)
        tickets: list[Ticket] = []
        pending = st.pending
        taken = 0
        sent_bytes = 0
        dropped_bytes = 0
        add = records.add
        for key, value, ticket in pending:
            size = len(value) + (len(key) if key is not None else 0) + _OVERHEAD
            if ticket.abandoned:
                dropped_bytes += size
                taken += 1
                continue
            if not add(key, value):
                break  # full: the rest goes with the next batch
            tickets.append(ticket)
            sent_bytes += size
            taken += 1
        st.pending = pending[taken:]
        st.pending_bytes -= sent_bytes + dropped_bytes
        self._buffered -= dropped_bytes
        if not tickets:
            return None
        st.inflight_since = self._clock()
        return _Batch(st, records, tickets, sent_bytes, st.inflight_since)

    async def _hand_over(self, producer: ProducerPort, batches: list[_Batch]) -> None:
        for batch in batches:
            try:
                acknowledged = await batch.records.send(producer)
            except Exception as exc:
                batch.handed = True
                self._complete(batch, self._refused(batch, exc))
            else:  # (cancelled inside send_batch, the batch never reached aiokafka: _handed_over settles it)
                batch.handed = True
                acknowledged.add_done_callback(partial(self._acknowledged, batch))

    def _acknowledged(self, batch: _Batch, future: asyncio.Future[Any]) -> None:
        """aiokafka's delivery future of `batch` is done (a done-callback)."""
        if future.cancelled():
            self._complete(batch, "the edge is shutting down")
        elif (exc := future.exception()) is not None:
            self._complete(batch, self._refused(batch, exc))
        else:
            self._complete(batch, None)

    def _refused(self, batch: _Batch, exc: BaseException) -> str:
        st = batch.partition
        error = f"Kafka refused {st.topic}[{st.partition}]: {exc!r}"
        log.warning("Kafka refused a batch", extra={"topic": st.topic, "partition": st.partition,
                                                     "records": len(batch.tickets), "error": repr(exc)})
        if isinstance(exc, PRODUCER_STATE_LOST):
            # After a broker restart the idempotent producer's sequence numbers no longer
            # match the broker's; this producer will fail every batch from now on.
            self._fatal = True
        return error

    def _complete(self, batch: _Batch, error: str | None) -> None:
        """A batch is acknowledged (error None) or failed: settle its tickets, send what waits."""
        st = batch.partition
        st.inflight_since = None
        self._buffered -= batch.size
        if error is None:
            for ticket in batch.tickets:
                ticket.remaining -= 1
                if not ticket.remaining and not ticket.future.done():
                    ticket.future.set_result(None)
        else:
            for ticket in batch.tickets:
                ticket.fail(error)
        if self._metrics is not None:
            self._metrics.kafka_batch_records.observe(len(batch.tickets))
            self._metrics.kafka_batch_seconds.observe(self._clock() - batch.started)
        if st.pending and self._producer is not None:
            # What gathered while this batch was in flight leaves now (at the next loop turn,
            # with the other partitions this acknowledgement freed: one hand-over for all).
            if not self._followers:
                asyncio.get_running_loop().call_soon(self._flush_followers)
            self._followers.append(st)

    def _fail_pending(self, reason: str) -> None:
        for states in self._states.values():
            for st in states:
                for _, _, ticket in st.pending:
                    ticket.fail(reason)
                self._buffered -= st.pending_bytes
                st.pending = []
                st.pending_bytes = 0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, PublishUnavailable):
        return exc.reason
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return repr(exc)
