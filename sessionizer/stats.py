"""The worker's counters: Prometheus text on the Faust web port (`/metrics`) and, for benchmarks
and tests, a JSON file rewritten every second (`TOUCHSTREAM_SESSIONIZER_STATS_FILE`).

Counters are plain attributes bumped once per batch; the Prometheus collector reads them at
scrape time, so nothing costs anything per hit.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from sessionizer.machine import Counts


class _GcClock:
    """CPU seconds the process spent in the garbage collector, from a `gc.callbacks` hook (one
    call per collection: a few per second at most with the worker's threshold, see
    schemas.runtime). The collector is the process's, so the hook is too: registered once."""

    def __init__(self) -> None:
        self.by_generation = [[0, 0.0], [0, 0.0], [0, 0.0]]  # per generation: collections, CPU seconds
        self._started = 0.0
        self._watching = False

    @property
    def seconds(self) -> float:
        return sum(seconds for _, seconds in self.by_generation)

    def watch(self) -> None:
        if not self._watching:
            self._watching = True
            gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:
            counted = self.by_generation[info["generation"]]
            counted[0] += 1
            counted[1] += time.thread_time() - self._started


_GC_CLOCK = _GcClock()


class Stats:
    def __init__(self) -> None:
        self.started = time.time()
        self.records_in = 0       # records taken from `hits` and acked
        self.hits = 0             # hits placed by the core (close records and dead letters excluded)
        self.dead_letters = 0
        self.sessions_out = 0     # session snapshots produced (after coalescing)
        self.records_out = 0      # pageview/event/late-hit records produced
        self.state_writes = 0     # device states written (changelog + RocksDB)
        self.closed_by_time = 0   # on_time calls made by the sweep
        self.refused = 0          # hits dead-lettered by the bounded state (machine.StateLimit)
        self.idle_removed = 0     # idle devices removed from the state (machine.idle)
        self.arrival = Counts()   # what late hits did (SPEC rule 6): merges, inserts, renumbers, too late, moves
        self.batches = 0
        self.last_batch = 0
        self.retries = 0
        self.wait_s = 0.0         # time rounds spent producing outputs/changelog and waiting for acks
        # CPU seconds of the processing thread per step of a round (`Processor`): where a
        # worker's time goes, read once per round (time.thread_time), so free per hit.
        self.steps: dict[str, float] = {}
        self.first_taken: float | None = None   # wall time the first records were taken
        self.last_durable: float | None = None  # wall time of the last durable output/state write
        self.last_records_durable: float | None = None  # ... of a round that took records from hits
        # CPU seconds of the processing thread (its whole event loop) at those two moments: how
        # busy the thread was while records flowed, against the wall time between them.
        self.first_taken_cpu: float | None = None
        self.last_records_durable_cpu: float | None = None
        self.open_sessions: Callable[[], int] = lambda: 0
        self.inbox: Callable[[], int] = lambda: 0
        self.partitions: Callable[[], list[int]] = lambda: []  # hits partitions set up and processed

    def on_round(self, records: int, hits: int, dead: int, states: int) -> None:
        """A round became durable (its offsets are acked)."""
        self.records_in += records
        self.hits += hits
        self.dead_letters += dead
        self.state_writes += states
        if records:
            self.batches += 1
            self.last_batch = records

    @staticmethod
    def watch_gc() -> None:
        """Count the collector's time from now on (`gc_cpu_s`; the process's, shared by every Stats)."""
        _GC_CLOCK.watch()

    def step(self, name: str, seconds: float) -> None:
        self.steps[name] = self.steps.get(name, 0.0) + seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "started": self.started,
            "records_in": self.records_in,
            "hits": self.hits,
            "dead_letters": self.dead_letters,
            "sessions_out": self.sessions_out,
            "records_out": self.records_out,
            "state_writes": self.state_writes,
            "closed_by_time": self.closed_by_time,
            "reordered": self.arrival.reordered,
            "merges": self.arrival.merges,
            "sessions_inserted": self.arrival.inserted,
            "sessions_renumbered": self.arrival.renumbered,
            "too_late": self.arrival.too_late,
            "hits_moved": self.arrival.moves,
            "states_shrunk": self.arrival.shrunk,
            "state_limit_refused": self.refused,
            "idle_devices_removed": self.idle_removed,
            "batches": self.batches,
            "last_batch": self.last_batch,
            "retries": self.retries,
            "wait_s": round(self.wait_s, 3),
            "steps_cpu_s": {k: round(v, 4) for k, v in self.steps.items()},
            "gc_cpu_s": round(_GC_CLOCK.seconds, 4),
            # which generations: a young collection walks what the round allocated, an old one the heap
            "gc_by_generation": [[n, round(s, 4)] for n, s in _GC_CLOCK.by_generation],
            "first_taken": self.first_taken,
            "last_durable": self.last_durable,
            "last_records_durable": self.last_records_durable,
            "first_taken_cpu": self.first_taken_cpu,
            "last_records_durable_cpu": self.last_records_durable_cpu,
            "open_sessions": self.open_sessions(),
            "inbox": self.inbox(),
            "partitions": self.partitions(),
            "threads": {t.name: t.native_id for t in threading.enumerate()},
            "written_at": time.time(),
        }

    def write(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.as_dict()))
        tmp.replace(path)


class _Collector:
    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Any]:
        s = self.stats
        for name, value, doc in (
            ("records_in", s.records_in, "records taken from hits and acked"),
            ("hits", s.hits, "hits placed in sessions (or as late hits)"),
            ("dead_letters", s.dead_letters, "records of hits refused to deadletter"),
            ("sessions_out", s.sessions_out, "session snapshots produced"),
            ("records_out", s.records_out, "pageview/event/late-hit records produced"),
            ("state_writes", s.state_writes, "device states written to the table"),
            ("closed_by_time", s.closed_by_time, "devices swept by event time"),
            ("reordered", s.arrival.reordered, "hits placed out of order (their device's sessions cut again)"),
            ("merges", s.arrival.merges, "sessions merged into another by a late hit (retracted)"),
            ("sessions_inserted", s.arrival.inserted, "sessions opened by a late hit before a device's latest"),
            ("sessions_renumbered", s.arrival.renumbered, "published sessions whose session_index changed"),
            ("too_late", s.arrival.too_late, "hits older than the allowed lateness (late_hits, too_late)"),
            ("hits_moved", s.arrival.moves, "earlier hits re-pointed to another session"),
            ("states_shrunk", s.arrival.shrunk, "device states that dropped retained hits to stay within max_state_bytes"),
            ("state_limit_refused", s.refused, "hits dead-lettered: the device's state would pass max_slots or max_state_bytes"),
            ("idle_devices_removed", s.idle_removed, "devices idle past the TTL removed from the state (rows stay)"),
            ("batches", s.batches, "batches processed"),
            ("retries", s.retries, "batches retried after a Kafka error"),
        ):
            yield CounterMetricFamily(f"touchstream_sessionizer_{name}", doc, value=value)
        steps = CounterMetricFamily("touchstream_sessionizer_step_cpu_seconds",
                                    "CPU seconds of the processing thread by step of a round", labels=["step"])
        for name, seconds in sorted(s.steps.items()):
            steps.add_metric([name], seconds)
        yield steps
        gc_seconds = CounterMetricFamily("touchstream_sessionizer_gc_cpu_seconds",
                                         "CPU seconds of the process's garbage collector, by generation", labels=["generation"])
        for generation, (_, seconds) in enumerate(_GC_CLOCK.by_generation):
            gc_seconds.add_metric([str(generation)], seconds)
        yield gc_seconds
        yield GaugeMetricFamily("touchstream_sessionizer_open_sessions", "devices with an open session", value=s.open_sessions())
        yield GaugeMetricFamily("touchstream_sessionizer_inbox", "fetched hits waiting", value=s.inbox())
        yield GaugeMetricFamily("touchstream_sessionizer_last_batch", "records in the last batch", value=s.last_batch)


def prometheus_text(stats: Stats, registry: CollectorRegistry | None = None) -> bytes:
    if registry is None:
        registry = CollectorRegistry()
        registry.register(_Collector(stats))  # type: ignore[arg-type]
    return generate_latest(registry)


def registry_for(stats: Stats) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(_Collector(stats))  # type: ignore[arg-type]
    return registry
