"""The worker's counters reach its Prometheus text and its stats file (rule 6's included)."""

from __future__ import annotations

from sessionizer.machine import Counts
from sessionizer.stats import Stats, prometheus_text


def test_rule_6_counters_are_exported() -> None:
    stats = Stats()
    stats.arrival.add(Counts(reordered=5, merges=2, inserted=1, renumbered=3, too_late=4, moves=6))
    text = prometheus_text(stats).decode()
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and line[0] != "#"}
    assert {k: values[f"touchstream_sessionizer_{k}_total"] for k in
            ("reordered", "merges", "sessions_inserted", "sessions_renumbered", "too_late", "hits_moved")} == {
        "reordered": 5, "merges": 2, "sessions_inserted": 1, "sessions_renumbered": 3, "too_late": 4, "hits_moved": 6}
    dumped = stats.as_dict()
    assert (dumped["merges"], dumped["too_late"], dumped["hits_moved"]) == (2, 4, 6)


def test_cpu_by_step_adds_up_per_step_and_is_exported() -> None:
    stats = Stats()
    for name, seconds in (("place", 0.5), ("states", 0.25), ("place", 0.75)):
        stats.step(name, seconds)
    text = prometheus_text(stats).decode()
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and line[0] != "#"}
    assert values['touchstream_sessionizer_step_cpu_seconds_total{step="place"}'] == 1.25
    assert values['touchstream_sessionizer_step_cpu_seconds_total{step="states"}'] == 0.25
    assert stats.as_dict()["steps_cpu_s"] == {"place": 1.25, "states": 0.25}


def test_the_collectors_time_is_counted_once_however_many_stats_watch_it() -> None:
    import gc

    first, second = Stats(), Stats()
    first.watch_gc()
    second.watch_gc()
    hooks = len(gc.callbacks)
    second.watch_gc()
    assert len(gc.callbacks) == hooks, "one hook per process"
    before = first.as_dict()["gc_cpu_s"]
    full_before = first.as_dict()["gc_by_generation"][2]
    garbage = [[i] for i in range(200_000)]
    for item in garbage:
        item.append(item)  # cycles: only the collector frees them
    del garbage, item
    gc.collect()
    assert first.as_dict()["gc_cpu_s"] > before
    assert first.as_dict()["gc_cpu_s"] == second.as_dict()["gc_cpu_s"]
    full = first.as_dict()["gc_by_generation"][2]  # gc.collect() is a full collection: generation 2
    assert full[0] > full_before[0] and full[1] > full_before[1]
    text = prometheus_text(first).decode()
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and line[0] != "#"}
    assert abs(values['touchstream_sessionizer_gc_cpu_seconds_total{generation="2"}'] - full[1]) < 1e-3  # (the file rounds)
