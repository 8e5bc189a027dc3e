"""Device state in the Faust table, written in batches: changelog first, then RocksDB.

The table (`devices`, keyed by guid) is a real Faust table with the RocksDB store: Faust owns
its changelog topic, opens and closes the partition databases on rebalance, recovers them from
the changelog (also onto an empty data directory, e.g. after `kill -9` on a new machine) and
keeps standby replicas. What this module changes is how state is *written*. `Table.__setitem__`
costs a `FutureMessage`, a trip through the producer buffer and a callback per key (see
`bench/faust_variants.py`, variant take-table against sessionizer) and needs a
current event, which a batch or a sweep does not have. Instead, per processed round
(`encode` when it is computed, `write` when its outputs are acknowledged):

1. every touched device's final state (once, however many of its hits the round held) and the
   partition clock are appended to the changelog partition of their `hits` partition — key:
   the guid as UTF-8 bytes, value: `DeviceState.to_bytes()`, or a tombstone (None) when a
   device's state is gone — through `sessionizer.output.BatchWriter`, and acknowledged;
2. then the same keys and values, plus Faust's persisted-offset key (`Store.offset_key`, the
   offset of the last changelog record), go into the partition's RocksDB in one `WriteBatch`,
   without RocksDB's write-ahead log: the changelog is the log. Kafka Streams writes its
   RocksDB stores so too (`setDisableWAL(true)`). The WAL took about half the CPU of these
   writes (60,000 values of 0.3-3 KB in batches of 5,000: 0.30-0.40 s with it, 0.18 s
   without). RocksDB flushes what the log would have held when a database closes; a `kill -9`
   loses the memtable, so the database comes back as it was at its last flush — a prefix of
   the batches, the offset key with the rows it was written with — and Faust's recovery
   replays the changelog from that older offset.

That is byte for byte what `Table.__setitem__` + `Table._on_changelog_sent` produce for a
table with raw key and value serializers, so Faust's recovery (`Store.apply_changelog_batch`:
`put(msg.key, msg.value)`, `delete` on a tombstone) and its standbys read it unchanged, and on
restart Faust resumes recovery after the persisted offset as always.

The caller has the outputs (sessions/events/deadletter) acknowledged *before* calling `write`,
and acks the source offsets after it. A crash between outputs and changelog leaves the old
state and uncommitted offsets: the hits are processed again and give the same outputs. A crash
after the changelog leaves the new state (with the newest `hits` offset applied to each device,
`DeviceState.offset`) and uncommitted offsets: the hits are processed again, the core ignores
them as already applied, and their outputs were already durable. Local RocksDB may lag the
changelog after a crash, never lead it; Faust's recovery catches it up.

A bounded in-memory cache keeps the decoded `DeviceState`s of recently touched devices, as the
processor last computed them, so that a busy device is not decoded from bytes in every round
and the next round sees the previous round's states before they are written. It may be ahead
of RocksDB (never of what the processor computed): after a failed round the processor
`forget`s the partitions and reads them again from RocksDB, which only holds durable states.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import rocksdict

from schemas.internals import PartitionDb, PartitionStore
from sessionizer.clock import PartitionClock
from sessionizer.output import BatchWriter
from sessionizer.state import DeviceState

# RocksDB writes without its write-ahead log (see 2. above): the changelog is the log.
NO_WAL = rocksdict.WriteOptions()
NO_WAL.disable_wal = True

# Bookkeeping keys start with NUL, which no guid does (sessionizer.sweep skips them too).
CLOCK_KEY = b"\x00touchstream:clock"


class DeviceStore:
    """Device states of the table's partitions: `partitions` is the table's storage
    (`schemas.internals.FaustTableStore` in a worker, a fake in tests)."""

    def __init__(self, partitions: PartitionStore, cache_size: int = 200_000, min_size: int = 0) -> None:
        self.partitions = partitions
        # The processor computes a round while the previous one is being written, so the cache
        # must hold the states of two rounds: it is what the next round reads.
        self.cache_size = max(cache_size, min_size)
        self._cache: dict[tuple[int, str], DeviceState | None] = {}

    # -- where things are ------------------------------------------------------------------

    @property
    def changelog_topic(self) -> str:
        return self.partitions.changelog_topic

    def _db(self, partition: int) -> PartitionDb:
        return self.partitions.db(partition)

    # -- reading ---------------------------------------------------------------------------

    def get(self, partition: int, guid: str) -> DeviceState | None:
        key = (partition, guid)
        cache = self._cache
        if key in cache:
            return cache[key]
        raw = self._db(partition).get(guid.encode())
        return None if raw is None else DeviceState.from_bytes(raw)

    def load_clock(self, partition: int) -> PartitionClock:
        return PartitionClock.from_bytes(self._db(partition).get(CLOCK_KEY))

    def items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) in the partition's RocksDB, bookkeeping keys included."""
        db = self._db(partition)
        yield from db.items()

    def items_from(self, partition: int, key: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """The partition's (key, value) pairs in key order, from `key` on (None: from the start)."""
        db = self._db(partition)
        yield from (db.items() if key is None else db.items(from_key=key))

    def cached(self, partition: int, guid: str) -> tuple[bool, DeviceState | None]:
        """Whether the device's state is cached (the processor touched it recently: it may be ahead
        of RocksDB), and that state (None: deleted)."""
        key = (partition, guid)
        cache = self._cache
        return (True, cache[key]) if key in cache else (False, None)

    def persisted_offset(self, partition: int) -> int | None:
        """The last changelog offset the partition's RocksDB holds (as Faust reads it at recovery)."""
        raw = self._db(partition).get(self.partitions.offset_key)
        return None if raw is None else int(raw)

    # -- writing ---------------------------------------------------------------------------

    def encode(
        self, states: dict[int, dict[str, DeviceState | None]], clocks: dict[int, PartitionClock]
    ) -> dict[int, list[tuple[bytes, bytes | None]]]:
        """The changelog rows of a round, encoded now (the core changes states in place, and the
        next round may run before this one is written), and the cache updated to them."""
        encoded: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for partition, devices in states.items():
            if not devices:
                continue
            rows = encoded[partition] = []
            for guid, state in devices.items():
                if state is None:
                    rows.append((guid.encode(), None))
                    continue
                raw = state.to_bytes()
                state.size = len(raw)  # (what Rules.max_state_bytes is checked against)
                rows.append((guid.encode(), raw))
            self._remember(partition, devices)
        for partition, clock in clocks.items():
            encoded.setdefault(partition, []).append((CLOCK_KEY, clock.to_bytes()))
        return encoded

    async def write(self, encoded: dict[int, list[tuple[bytes, bytes | None]]], writer: BatchWriter,
                    step: Callable[[str, float], None] | None = None) -> int:
        """Make a round's rows durable: changelog (acknowledged), then RocksDB with the persisted
        offset in the same write batch. Returns the number of rows. `step` is told the CPU time
        of the changelog batches and of the RocksDB writes."""
        topic = self.changelog_topic
        started = time.thread_time()
        n = 0
        for partition, rows in encoded.items():
            for key, value in rows:
                writer.add(topic, partition, key, value)
                n += 1
        if not n:
            return 0
        writer.submit()
        if step is not None:
            step("changelog", time.thread_time() - started)
        last = await writer.wait()
        started = time.thread_time()
        offset_key = self.partitions.offset_key
        for partition, rows in encoded.items():
            batch = rocksdict.WriteBatch(raw_mode=True)
            for key, value in rows:
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
            end = last.get((topic, partition))
            if end is not None:
                batch.put(offset_key, str(end).encode())
            self._db(partition).write(batch, NO_WAL)
        if step is not None:
            step("rocksdb", time.thread_time() - started)
        return n

    def _remember(self, partition: int, devices: dict[str, DeviceState | None]) -> None:
        cache = self._cache
        if len(cache) + len(devices) > self.cache_size:
            # Oldest quarter first (insertion order = order of computation). The entries of the
            # round being written and of the round before it are the newest, and the cache holds
            # at least two rounds (`min_size`), so what is dropped is in RocksDB already.
            for key in list(_first(cache, len(cache) // 4 + len(devices))):
                del cache[key]
        for guid, state in devices.items():
            key = (partition, guid)
            cache.pop(key, None)  # re-insert: the newest go last
            cache[key] = state    # None: deleted (a tombstone not yet in RocksDB)

    def forget(self, partition: int) -> None:
        """Drop the cached states of a partition (revoked, or a round failed)."""
        for key in [k for k in self._cache if k[0] == partition]:
            del self._cache[key]

    def forget_all(self) -> None:
        self._cache.clear()


def _first(d: dict[Any, Any], n: int) -> Iterator[Any]:
    for i, key in enumerate(d):
        if i >= n:
            return
        yield key
