"""Closing quiet sessions (SPEC rule 7): a per-partition heap of the devices' next deadlines.

Why a sweep, and where it runs
------------------------------
A session closes when its partition's event time (`sessionizer.clock`) passes `last hit +
timeout`. Nothing arrives for a quiet device, so something other than its own hits has to
notice. In Faust the natural candidates do not work: a table may only be written from inside
stream iteration (`Table.__setitem__` takes the changelog partition from the *current event*
and raises `TypeError: Cannot modify table key from outside of stream iteration` otherwise),
so an `@app.timer` cannot close a session, and neither can code inside `take()` /
`take_events()` batches, which do not set a current event. Windowed tables' expiry callbacks
have open bugs (faust #250, #385).

So the sweep is not a separate task. It runs in the sessionizer's one processing task
(`sessionizer.processor`), between batches of hits and on an idle tick, and it writes device
state through `sessionizer.store`, which puts records on the table's changelog partition and
into the partition's RocksDB directly — the same bytes `Table.__setitem__` would have
written, without needing a current event. Because hits and sweeps share one task, a device is
never touched by both at once, and because that task is quiesced before Faust revokes a
partition (see `sessionizer.transport`), a sweep never writes a partition this worker no
longer owns.

The heap
--------
Per partition: a min-heap of `(deadline_ms, guid)` where `deadline_ms` is
`sessionizer.machine.next_deadline_ms(state)`, the event time at which `on_time` would close
something. Entries are invalidated lazily: `_due` holds each device's current deadline and a
popped entry that disagrees with it is stale and skipped; the heap is compacted when stale
entries outnumber live ones. Devices with nothing open have no entry, so memory follows the
open sessions (about 150 bytes each), not all devices ever seen.

The heap is not persisted: on assignment (after Faust has recovered the table) it is rebuilt
by reading the partition's RocksDB once (`rebuild`), from each state's header
(`machine.peek_deadline_ms`: no device is decoded). The partition clock *is* persisted, so an
idle partition keeps closing on time after a restart or rebalance.

Idle devices
------------
A device that retains nothing and has been quiet for the idle TTL leaves the state
(`machine.idle`), so what a partition stores follows the devices of the TTL, not every guid
ever seen (random guids are free to send). Keeping an expiry deadline per device in the heap
would make its memory follow all stored devices; instead an `IdleCursor` per partition walks
the RocksDB keys in order, a bounded number per round, reading headers only, and starts over at
the end: every stored device is looked at once per pass.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class DeadlineHeap:
    """The devices of one partition that have a deadline (an open session to close, or retained
    hits to freeze: sessionizer.machine.next_deadline_ms), by that event time."""

    __slots__ = ("_heap", "_due")

    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []
        self._due: dict[str, int] = {}

    def __len__(self) -> int:
        """Devices with a deadline (live entries)."""
        return len(self._due)

    def set(self, guid: str, deadline_ms: int | None) -> None:
        """Record a device's next deadline after its state changed (None: none)."""
        current = self._due.get(guid)
        if deadline_ms is None:
            if current is not None:
                del self._due[guid]
            return
        if current == deadline_ms:
            return
        self._due[guid] = deadline_ms
        heapq.heappush(self._heap, (deadline_ms, guid))
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self._due):
            self._compact()

    def next_deadline(self) -> int | None:
        heap = self._heap
        due = self._due
        while heap:
            deadline, guid = heap[0]
            if due.get(guid) == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def pop_due(self, event_time_ms: int, limit: int | None = None) -> list[str]:
        """Devices whose deadline is at or before `event_time_ms`, earliest first; they leave the heap
        (the caller runs `on_time` and `set`s their new deadline)."""
        heap = self._heap
        due = self._due
        out: list[str] = []
        while heap and heap[0][0] <= event_time_ms:
            if limit is not None and len(out) >= limit:
                break
            deadline, guid = heapq.heappop(heap)
            if due.get(guid) == deadline:
                del due[guid]
                out.append(guid)
        return out

    def rebuild(self, deadlines: Iterable[tuple[str, int | None]]) -> None:
        """Replace the contents with `(guid, deadline)` pairs, e.g. read from the partition's store."""
        self._due = {guid: d for guid, d in deadlines if d is not None}
        self._heap = [(d, g) for g, d in self._due.items()]
        heapq.heapify(self._heap)

    def _compact(self) -> None:
        self._heap = [(d, g) for g, d in self._due.items()]
        heapq.heapify(self._heap)


class IdleCursor:
    """Where the idle scan of one partition's stored devices stands (the next key; None: the start)."""

    __slots__ = ("cursor", "passes")

    def __init__(self) -> None:
        self.cursor: bytes | None = None
        self.passes = 0  # full passes over the partition completed

    def scan(self, items: Iterable[tuple[bytes, bytes]], budget: int,
             is_idle: Callable[[bytes, bytes], bool]) -> tuple[int, list[str]]:
        """Look at up to `budget` stored devices from the cursor on (bookkeeping keys skipped);
        returns how many were looked at and the guids for which `is_idle(key, value)` held."""
        scanned = 0
        gone: list[str] = []
        for key, value in items:
            if scanned >= budget:
                self.cursor = key  # the next round goes on from here
                return scanned, gone
            if not key or not value or key[0] == 0 or key.startswith(b"__faust"):
                continue
            scanned += 1
            if is_idle(key, value):
                gone.append(key.decode())
        self.cursor = None  # reached the end: start over
        self.passes += 1
        return scanned, gone


def stored_states(items: Iterable[tuple[bytes, bytes]], decode: Callable[[bytes], T]) -> Iterator[tuple[str, T]]:
    """(guid, decoded state) for each stored device: `items` are a partition's (key, value) pairs.

    Bookkeeping keys are skipped: Faust's persisted-offset key (`__faust\\0offset__`) and
    this project's own, which start with a NUL byte (`sessionizer.store`)."""
    for key, value in items:
        if not key or not value or key[0] == 0 or key.startswith(b"__faust"):
            continue
        yield key.decode(), decode(value)
