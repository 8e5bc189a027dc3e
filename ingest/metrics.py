"""The edge's Prometheus metrics (GET /metrics).

prometheus-client takes a lock and walks the buckets on every increment, a noticeable share of
a single-hit request's CPU (`bench/micro_bench.py` measures both ways). The request path
therefore counts into plain attributes (one event loop, no threads: no lock needed), and `sync()` moves
the increments into the prometheus-client metrics when /metrics is read, and every second
in multiprocess mode, so the exposition, names and types are prometheus-client's own.

Each app gets its own registry, so tests can build many apps in one process. With several
uvicorn workers (`--workers N`), `__main__` turns on prometheus-client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR) and `render()` then sums every worker's values.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from schemas.internals import histogram_add, histogram_bounds

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

HIT_REFUSALS = ("invalid_hit", "too_old", "site_not_allowed", "unavailable")
REQUEST_REFUSALS = (
    "malformed_body",
    "too_many_items",
    "too_large",
    "unsupported_media_type",
    "origin_not_allowed",
    "client_gone",
    "unavailable",
)
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Count:
    """A counter the request path increments for free; `sync()` hands it to prometheus-client."""

    __slots__ = ("value", "_synced", "_target")

    def __init__(self, target: Counter) -> None:
        self.value = 0.0
        self._synced = 0.0
        self._target = target

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def sync(self) -> None:
        delta = self.value - self._synced
        if delta:
            self._target.inc(delta)
            self._synced = self.value


class Distribution:
    """A histogram the request path observes for free; `sync()` adds its new counts to the
    prometheus-client Histogram's buckets (same bounds, same `value <= bound` rule)."""

    __slots__ = ("bounds", "counts", "sum", "_synced", "_synced_sum", "_target")

    def __init__(self, target: Histogram) -> None:
        self.bounds: list[float] = histogram_bounds(target)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self._synced = [0] * len(self.bounds)
        self._synced_sum = 0.0
        self._target = target

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.sum += amount

    def sync(self) -> None:
        counts = list(self.counts)
        new = [count - synced for count, synced in zip(counts, self._synced, strict=True)]
        histogram_add(self._target, new, self.sum - self._synced_sum)
        self._synced, self._synced_sum = counts, self.sum


Instrument = TypeVar("Instrument", Count, Distribution)


class Metrics:
    """The edge's metrics: request-path counters (`Count`, `Distribution`) over one registry."""

    def __init__(self, registry: CollectorRegistry | None = None, *, multiprocess: bool = False) -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.multiprocess = multiprocess
        self._all: list[Count | Distribution] = []
        self.hits_accepted = self._count("ingest_hits_accepted", "hits acknowledged by Kafka and answered 202")
        self.dead_letters = self._count("ingest_dead_letters", "records written to the deadletter topic")
        self.dead_letter_payloads_dropped = self._count(
            "ingest_dead_letter_payloads_dropped",
            "dead letters written without their original bytes (the client's dead-letter budget was spent)",
        )
        self.dead_letter_failures = self._count(
            "ingest_dead_letter_failures", "dead letters Kafka did not take (the request was still answered)"
        )
        self.publish_seconds = self._spread(
            "ingest_publish_seconds",
            "time from queueing a request's records to Kafka's acknowledgement of all of them",
            SECONDS,
        )
        self.request_hits = self._spread(
            "ingest_request_hits", "hits per POST /v1/hits request", (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
        )
        self.kafka_batch_records = self._spread(
            "ingest_kafka_batch_records",
            "records per Kafka batch the edge sent",
            (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
        )
        self.kafka_batch_seconds = self._spread(
            "ingest_kafka_batch_seconds", "time from sending a Kafka batch to its acknowledgement", SECONDS
        )
        self.buffered_bytes = Gauge(
            "ingest_buffered_bytes", "bytes of records waiting for Kafka", registry=r, multiprocess_mode="livesum"
        )
        self._requests = Counter("ingest_requests", "POST /v1/hits requests by HTTP status", ["status"], registry=r)
        hits_refused = Counter("ingest_hits_refused", "hits refused, by reason", ["reason"], registry=r)
        requests_refused = Counter(
            "ingest_requests_refused", "requests refused as a whole, by reason", ["reason"], registry=r
        )
        self.status = {code: self._label(self._requests, str(code)) for code in (202, 400, 403, 413, 415, 503)}
        self.hit_refusal = {reason: self._label(hits_refused, reason) for reason in HIT_REFUSALS}
        self.request_refusal = {reason: self._label(requests_refused, reason) for reason in REQUEST_REFUSALS}

    def _count(self, name: str, documentation: str) -> Count:
        return self._kept(Count(Counter(name, documentation, registry=self.registry)))

    def _label(self, counter: Counter, value: str) -> Count:
        return self._kept(Count(counter.labels(value)))

    def _spread(self, name: str, documentation: str, buckets: tuple[float, ...]) -> Distribution:
        return self._kept(Distribution(Histogram(name, documentation, buckets=buckets, registry=self.registry)))

    def _kept(self, instrument: Instrument) -> Instrument:
        """`instrument`, remembered for `sync`."""
        self._all.append(instrument)
        return instrument

    def count_status(self, code: int) -> None:
        count = self.status.get(code)
        if count is None:
            count = self.status[code] = self._label(self._requests, str(code))
        count.inc()

    def sync(self) -> None:
        """Move what the request path counted into prometheus-client."""
        for instrument in self._all:
            instrument.sync()

    def render(self) -> bytes:
        self.sync()
        if self.multiprocess:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
