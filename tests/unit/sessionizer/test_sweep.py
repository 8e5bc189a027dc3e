"""The deadline heap that closes quiet sessions (sessionizer.sweep), without Kafka or Faust."""

from __future__ import annotations

from datetime import datetime, timezone

from schemas.views import HitView
from sessionizer.machine import DeviceState, Emitted, Rules, next_deadline_ms, on_hit, on_time
from sessionizer.sweep import DeadlineHeap, stored_states

UTC = timezone.utc
MIN = 60_000


def test_pop_due_returns_devices_in_deadline_order_and_removes_them() -> None:
    heap = DeadlineHeap()
    heap.set("c", 300)
    heap.set("a", 100)
    heap.set("b", 200)
    assert heap.next_deadline() == 100
    assert heap.pop_due(250) == ["a", "b"]
    assert len(heap) == 1
    assert heap.pop_due(250) == []
    assert heap.next_deadline() == 300


def test_boundary_is_inclusive() -> None:
    heap = DeadlineHeap()
    heap.set("a", 100)
    assert heap.pop_due(99) == []
    assert heap.pop_due(100) == ["a"]


def test_a_moved_deadline_replaces_the_old_one() -> None:
    heap = DeadlineHeap()
    heap.set("a", 100)
    heap.set("a", 500)  # the device got another hit
    assert heap.pop_due(400) == []
    assert heap.next_deadline() == 500
    assert heap.pop_due(500) == ["a"]


def test_nothing_open_removes_the_device() -> None:
    heap = DeadlineHeap()
    heap.set("a", 100)
    heap.set("a", None)
    assert len(heap) == 0
    assert heap.next_deadline() is None
    assert heap.pop_due(10**15) == []


def test_limit_leaves_the_rest_for_later() -> None:
    heap = DeadlineHeap()
    for i in range(10):
        heap.set(f"d{i}", i)
    first = heap.pop_due(100, limit=4)
    assert first == ["d0", "d1", "d2", "d3"]
    assert heap.pop_due(100) == [f"d{i}" for i in range(4, 10)]


def test_stale_entries_are_compacted() -> None:
    heap = DeadlineHeap()
    for round_ in range(50):
        for i in range(10):
            heap.set(f"d{i}", round_ * 1000 + i)
    assert len(heap) == 10
    assert len(heap._heap) <= 2 * 10 + 64  # bounded, not 500 entries
    assert heap.pop_due(49 * 1000 + 9) == [f"d{i}" for i in range(10)]


def test_rebuild_replaces_contents() -> None:
    heap = DeadlineHeap()
    heap.set("old", 1)
    heap.rebuild([("a", 30), ("b", None), ("c", 10)])
    assert len(heap) == 2
    assert heap.pop_due(100) == ["c", "a"]


def _hit(guid: str, hit_id: str, at: datetime) -> HitView:
    return HitView(hit_id=hit_id, guid=guid, type="pageview", url="https://example.com/", path="/", site="example.com",
               received_at=at, occurred_at=at)


def test_rebuilt_from_store_bytes_closes_what_the_core_says_is_due() -> None:
    """The heap built from stored DeviceState bytes gives exactly the devices on_time closes."""
    rules = Rules()
    out = Emitted()
    t0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    guids = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(3)]
    states: dict[str, DeviceState] = {}
    for i, guid in enumerate(guids):
        at = t0.replace(minute=i * 10)
        state = on_hit(None, _hit(guid, f"10000000-0000-4000-8000-00000000000{i}", at), rules, 0, out)
        assert state is not None
        states[guid] = state
    items = [(b"__faust\x00offset__", b"42"), (b"\x00touchstream:clock", b"x")]
    items += [(g.encode(), s.to_bytes()) for g, s in states.items()]
    heap = DeadlineHeap()
    heap.rebuild((g, next_deadline_ms(s, rules)) for g, s in stored_states(items, DeviceState.from_bytes))
    assert len(heap) == 3  # bookkeeping keys skipped

    # event time 9:41 passes 9:00 + 30 min and 9:10 + 30 min, not 9:20 + 30 min
    now = int(t0.timestamp() * 1000) + 41 * MIN
    due = heap.pop_due(now)
    assert due == guids[:2]
    for guid in guids:
        out.clear()
        on_time(states[guid], rules, now, out)
        closed = [s for s in out.sessions if s["status"] == "closed"]
        assert bool(closed) == (guid in due)
