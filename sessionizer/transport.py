"""Receiving `hits` in bulk inside Faust: a transport whose consumer hands whole fetches over.

Why
---
Faust delivers every record on its own: the fetcher loop (`Consumer._drain_messages`) awaits
`wait_first(callback(message), ...)` per record, the conductor decodes it into an `Event` and
puts it on the agent's queue, and the stream takes it off again, sets the current event,
sleeps(0) and acks it, even with `take_events`: a per-record cost that caps a worker before
any work is done (`bench/faust_variants.py` measures it). Faust offers no bulk receive for
agents, so this module adds one at the seam Faust has for it: the transport.

How
---
`Transport` is Faust's aiokafka transport with one change, its `Consumer`. Faust selects a
transport from the scheme of `broker_consumer` (the `faust.transports` registry; this module
registers `touchstream://`). `BulkConsumer` intercepts every fetch from the consumer thread (a
`{TP: [records]}` mapping; `schemas.internals.FetchHook`, on a private Faust method) and moves
the records of the bulk topics (`hits`) into an `Inbox` in one step, returning the rest (table
changelogs during recovery, standby changelogs) to Faust's normal per-record path.
The sessionizer's processing task takes whole chunks from the inbox.

What Faust still does, unchanged: group membership and partition assignment (its
co-partitioning assignor puts `hits` partition p and changelog partition p on the same
worker), rebalancing, pausing `hits` partitions until table recovery is done and seeking them
to the committed offsets afterwards, table recovery and standby replicas from the changelog,
opening/closing the RocksDB partitions, offset commits (every `broker_commit_interval` and at
shutdown; at a rebalance Faust drops what was acked since the last commit, so the next owner
reads those hits again and the core ignores them as already applied) and the web/monitoring
services.

What this module does instead of Faust: it delivers `hits` records in chunks rather than
through the conductor and stream queues, and it acks them in ranges (`ack_range`, the bulk
counterpart of `Consumer.ack`, `schemas.internals.RangeAcks`) once the processor has made
their effects durable; Faust's commit loop then commits exactly those offsets. Back-pressure: while the inbox holds more
than its limit, `hits` partitions are left out of the fetch (other topics keep flowing).

Rebalance: before Faust revokes partitions, `on_partitions_revoked` first lets the receiver
quiesce (finish the round in flight, drop buffered chunks of the revoked partitions and
forget their sweep state), so nothing writes a partition's state after it has been handed on.
Dropped chunks were never acked, so their offsets are not committed and the next owner reads
them again. Shutdown: `wait_empty` (Faust's "wait for streams" step) first lets the receiver
finish its round and stop, so Faust's last commit includes it and the tables close after it.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from schemas.internals import Fetch, FetchHook, RangeAcks

SCHEME = "touchstream"


class Chunk:
    """Records of one partition from one fetch, in offset order: their offsets, keys and
    values in three lists. The fetch's `ConsumerRecord`s are let go at once: a record object
    is tracked by the garbage collector, and records wait here for a round or two, so the
    young collections meanwhile walked each of them, about a third of all they walked (a list
    of ints or bytes is one object). In `bench/sessionizer_bench.py` the records walked fell
    from about 198,000 to 135,000 a run: the others wait as objects in the consumer thread,
    before they reach the inbox."""

    __slots__ = ("tp", "offsets", "keys", "values", "generation", "ack_from")

    def __init__(self, tp: TP, records: list[Any], generation: int, ack_from: int) -> None:
        self.tp = tp
        self.offsets: list[int] = [r.offset for r in records]
        self.keys: list[bytes | None] = [r.key for r in records]
        self.values: list[bytes | None] = [r.value for r in records]
        self.generation = generation    # Faust's consumer generation when they were fetched
        self.ack_from = ack_from        # first offset to ack with this chunk (covers gaps before it)

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def last_offset(self) -> int:
        return self.offsets[-1]


class Inbox:
    """Fetched `hits` chunks waiting for the processing task. Lives on the event loop."""

    def __init__(self, topics: Iterable[str], max_records: int) -> None:
        self.topics = frozenset(topics)
        self.max_records = max_records
        self._chunks: deque[Chunk] = deque()
        self._pending: Counter[TP] = Counter()
        self._delivered: dict[TP, int] = {}  # last offset put, per partition (for gap-free ack ranges)
        self.count = 0
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()

    def full(self) -> bool:
        return self.count >= self.max_records

    def put(self, generation: int, records: Mapping[TP, list[Any]]) -> None:
        for tp, recs in records.items():
            if not recs:
                continue
            tp = TP(tp.topic, tp.partition)
            previous = self._delivered.get(tp)
            first = recs[0].offset
            ack_from = previous + 1 if previous is not None and previous < first else first
            self._delivered[tp] = recs[-1].offset
            self._chunks.append(Chunk(tp, recs, generation, ack_from))
            self._pending[tp] += 1
            self.count += len(recs)
        if self._chunks:
            self._ready.set()
        if self.full():
            self._space.clear()

    def take(self, max_records: int) -> list[Chunk]:
        """Whole chunks, oldest first, up to `max_records` records (at least one chunk if any)."""
        out: list[Chunk] = []
        n = 0
        chunks = self._chunks
        while chunks and (not out or n + len(chunks[0]) <= max_records):
            chunk = chunks.popleft()
            out.append(chunk)
            n += len(chunk)
            self._pending[chunk.tp] -= 1
            if not self._pending[chunk.tp]:
                del self._pending[chunk.tp]
        self.count -= n
        if not chunks:
            self._ready.clear()
        if not self.full():
            self._space.set()
        return out

    def delivered(self, tp: TP) -> int | None:
        """The last offset of `tp` handed over since the partition was (re)assigned, if any."""
        return self._delivered.get(tp)

    def pending(self, tp: TP) -> bool:
        """Whether records of `tp` wait here (then the partition is not caught up)."""
        return tp in self._pending

    def drop(self, tps: Iterable[TP]) -> int:
        """Forget everything buffered for `tps` (revoked): their offsets were never acked."""
        doomed = {TP(tp.topic, tp.partition) for tp in tps}
        kept = deque(c for c in self._chunks if c.tp not in doomed)
        dropped = sum(len(c) for c in self._chunks if c.tp in doomed)
        self._chunks = kept
        for tp in doomed:
            self._pending.pop(tp, None)
            self._delivered.pop(tp, None)
        self.count -= dropped
        if not kept:
            self._ready.clear()
        if not self.full():
            self._space.set()
        return dropped

    async def wait(self, timeout: float) -> bool:
        """Wait until something is buffered (True) or `timeout` seconds pass (False)."""
        if self._chunks:
            return True
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def wait_space(self, timeout: float) -> None:
        if self.full():
            try:
                await asyncio.wait_for(self._space.wait(), timeout)
            except asyncio.TimeoutError:
                pass


class BulkReceiver(Protocol):
    """What the consumer needs from the app: the inbox, a hook run before partitions are
    revoked, and one run when the worker stops (before Faust's last commit and the tables close)."""

    inbox: Inbox

    async def before_revoke(self, revoked: set[TP]) -> None: ...

    async def before_stop(self) -> None: ...


def _receiver(app: Any) -> BulkReceiver | None:
    return getattr(app, "bulk_receiver", None)


class BulkConsumer(FetchHook, RangeAcks, faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, handing the bulk topics' fetches to an `Inbox` whole, and
    acking offsets in ranges (`ack_range`): a `schemas.internals.ConsumerPort`."""

    async def intercept_fetch(self, active_partitions: set[TP] | None, timeout: float, fetch: Fetch) -> Any:
        receiver = _receiver(self.app)
        if receiver is None:
            return await fetch(active_partitions, timeout)
        inbox = receiver.inbox
        if inbox.full() and active_partitions:
            await inbox.wait_space(timeout)
            if inbox.full():
                # Keep the changelog/standby partitions flowing; leave `hits` where it is.
                active_partitions = {tp for tp in active_partitions if tp.topic not in inbox.topics}
                if not active_partitions:
                    return {}
        records = await fetch(active_partitions, timeout)
        if not records:
            return records
        bulk = {tp: recs for tp, recs in records.items() if tp.topic in inbox.topics}
        if not bulk:
            return records
        rest = {tp: recs for tp, recs in records.items() if tp.topic not in inbox.topics}
        # Faust drops what arrives while the flow is stopped (a rebalance began): so do we. The
        # offsets were not acked, so after the rebalance they are fetched again.
        if self.flow_active and not self.should_stop:
            inbox.put(self.app.consumer_generation_id, bulk)
        return rest

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        receiver = _receiver(self.app)
        if receiver is not None:
            await receiver.before_revoke(set(revoked))
        await super().on_partitions_revoked(revoked)

    async def wait_empty(self) -> None:
        # Called by Faust when the worker stops (and during rebalances): let the processor
        # finish its round and stop first, so Faust's final commit includes it and the tables
        # are not closed under it.
        receiver = _receiver(self.app)
        if receiver is not None and self.app.should_stop:
            await receiver.before_stop()
        await super().wait_empty()


class Transport(faust_aiokafka.Transport):
    Consumer = BulkConsumer


TRANSPORTS.aliases.setdefault(SCHEME, "sessionizer.transport:Transport")
