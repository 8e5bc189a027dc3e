"""SPEC rule 7's event-time clock of one partition (sessionizer.clock), with the wall clock as an argument."""

from __future__ import annotations

from sessionizer.clock import PartitionClock

MIN = 60_000


def test_unseen_partition_has_no_event_time() -> None:
    clock = PartitionClock()
    assert clock.now(wall_ms=10**12, caught_up=True) is None


def test_event_time_is_the_newest_occurred_at_seen() -> None:
    clock = PartitionClock()
    assert clock.observe(1_000, 1_000) == 1_000
    assert clock.observe(5_000, 5_000) == 5_000
    # a late hit (older occurred_at) does not move event time back
    assert clock.observe(2_000, 6_000) == 5_000
    assert clock.newest_ms == 5_000 and clock.arrived_ms == 5_000


def test_lagging_partition_ignores_the_wall_clock() -> None:
    """Replay / catch-up: records still wait, so event time is only what the data says."""
    clock = PartitionClock()
    clock.observe(1_000, 1_000)
    assert clock.now(wall_ms=1_000 + 24 * 60 * MIN, caught_up=False) == 1_000


def test_caught_up_partition_moves_with_the_wall_clock_since_the_newest_hit_arrived() -> None:
    clock = PartitionClock()
    clock.observe(100 * MIN, 100 * MIN + 2_000)  # occurred 2 s before it arrived
    # 31 minutes of wall time after it arrived, nothing left to consume:
    assert clock.now(wall_ms=131 * MIN + 2_000, caught_up=True) == 131 * MIN
    # never beyond the wall clock minus the hit's own delay
    assert clock.now(wall_ms=131 * MIN + 2_000, caught_up=True) <= 131 * MIN + 2_000


def test_event_time_never_goes_back_when_lag_returns() -> None:
    clock = PartitionClock()
    clock.observe(0, 0)
    assert clock.now(wall_ms=40 * MIN, caught_up=True) == 40 * MIN
    # new records arrive (lag again): the idle advance already given stays
    assert clock.now(wall_ms=41 * MIN, caught_up=False) == 40 * MIN
    assert clock.observe(10 * MIN, 10 * MIN) == 40 * MIN


def test_a_newer_hit_restarts_the_idle_measure_from_its_arrival() -> None:
    clock = PartitionClock()
    clock.observe(0, 0)
    clock.observe(50 * MIN, 60 * MIN)  # arrived 10 min after it occurred (a slow device)
    assert clock.now(wall_ms=60 * MIN, caught_up=True) == 50 * MIN
    assert clock.now(wall_ms=90 * MIN, caught_up=True) == 80 * MIN


def test_edge_clock_ahead_of_ours_does_not_move_time_back() -> None:
    clock = PartitionClock()
    clock.observe(10 * MIN, 10 * MIN)
    assert clock.now(wall_ms=5 * MIN, caught_up=True) == 10 * MIN


def test_old_data_closes_once_caught_up() -> None:
    """Hits from last March, replayed now: nothing moves while lagging, everything once caught up."""
    march = 1_772_442_000_000  # 2026-03-02T09:00Z
    clock = PartitionClock()
    clock.observe(march, march)
    assert clock.now(wall_ms=march + 300 * 24 * 60 * MIN, caught_up=False) == march
    assert clock.now(wall_ms=march + 300 * 24 * 60 * MIN, caught_up=True) == march + 300 * 24 * 60 * MIN


def test_bytes_round_trip() -> None:
    for clock in (PartitionClock(), PartitionClock(5, 7, 9), PartitionClock(5, 7, None)):
        assert PartitionClock.from_bytes(clock.to_bytes()) == clock
    assert PartitionClock.from_bytes(None) == PartitionClock()
    assert PartitionClock.from_bytes(b"") == PartitionClock()


def test_restored_clock_keeps_closing_on_time() -> None:
    """A restart with nothing to consume: the saved clock still advances with the wall clock."""
    clock = PartitionClock()
    clock.observe(0, 0)
    restored = PartitionClock.from_bytes(clock.to_bytes())
    assert restored.now(wall_ms=31 * MIN, caught_up=True) == 31 * MIN
