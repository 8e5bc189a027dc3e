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
