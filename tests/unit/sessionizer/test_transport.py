"""The inbox between Faust's fetcher and the processing task (sessionizer.transport), without Kafka."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from faust.types import TP

from sessionizer.transport import Inbox

T0 = TP("x.hits", 0)
T1 = TP("x.hits", 1)


@dataclass
class Rec:
    offset: int
    value: bytes | None = b"{}"
    key: bytes | None = None


def recs(*offsets: int) -> list[Rec]:
    return [Rec(o) for o in offsets]


def test_chunks_come_out_whole_in_arrival_order_up_to_the_limit() -> None:
    inbox = Inbox(["x.hits"], max_records=100)
    inbox.put(1, {T0: recs(0, 1, 2), T1: recs(0, 1)})
    inbox.put(1, {T0: recs(3, 4)})
    assert inbox.count == 7 and inbox.pending(T0) and inbox.pending(T1)
    first = inbox.take(5)
    assert [(c.tp, len(c)) for c in first] == [(T0, 3), (T1, 2)]
    assert not inbox.pending(T1) and inbox.pending(T0)
    rest = inbox.take(1)  # at least one chunk even if larger than the limit
    assert [(c.tp, len(c)) for c in rest] == [(T0, 2)]
    assert inbox.count == 0 and inbox.take(10) == []


def test_a_chunk_keeps_offsets_keys_and_values_not_the_fetched_records() -> None:
    inbox = Inbox(["x.hits"], max_records=100)
    fetched = [Rec(5, b'{"a":1}', b"k5"), Rec(6, None, b"k6"), Rec(8, b"{}", None)]
    first = weakref.ref(fetched[0])
    inbox.put(1, {T0: fetched})
    del fetched
    assert first() is None, "the chunk still holds the fetched record objects"
    [chunk] = inbox.take(10)
    assert (chunk.offsets, chunk.keys, chunk.values) == ([5, 6, 8], [b"k5", b"k6", None], [b'{"a":1}', None, b"{}"])
    assert len(chunk) == 3 and chunk.last_offset == 8


def test_ack_ranges_cover_offset_gaps_between_chunks() -> None:
    inbox = Inbox(["x.hits"], max_records=100)
    inbox.put(1, {T0: recs(10, 11)})
    inbox.put(1, {T0: recs(15, 16)})  # 12-14 do not exist (e.g. transaction markers)
    a, b = inbox.take(100)
    assert (a.ack_from, a.last_offset) == (10, 11)
    assert (b.ack_from, b.last_offset) == (12, 16)
    assert inbox.delivered(T0) == 16


def test_full_inbox_and_drop_of_revoked_partitions() -> None:
    inbox = Inbox(["x.hits"], max_records=4)
    inbox.put(1, {T0: recs(0, 1, 2), T1: recs(0, 1)})
    assert inbox.full()
    assert inbox.drop([T0]) == 3
    assert not inbox.full() and not inbox.pending(T0) and inbox.delivered(T0) is None
    # after a rebalance the partition starts again from the committed offset
    inbox.put(2, {T0: recs(1, 2)})
    chunks = inbox.take(100)
    assert [(c.tp, c.ack_from, c.generation) for c in chunks] == [(T1, 0, 1), (T0, 1, 2)]
