"""The small choices the code makes for speed, each measured beside what it replaced, in one run.

    .venv/bin/python bench/micro_bench.py [--repeat 7]

Comments in the code say *why* a hot path is written the way it is ("cheaper than
uuid.uuid4()", "the default GC threshold costs a share of the CPU"); the figures live here and
in the other benches, so they are measured on the machine at hand instead of going stale in a
docstring. No services needed. Each row: the project's way, the usual way, ns per call
(best of `--repeat` timings of many calls) and the ratio.

    partition of a key        schemas.partitioning (murmur2 + memo) vs murmur2 each time, lru_cache, aiokafka's
    hit id                    ingest.intake.new_hit_id vs str(uuid.uuid4())
    a request's Edge          ingest.intake.Edge (slots dataclass) vs a frozen dataclass
    session id                sessionizer.identity.session_id vs str(uuid.uuid5(...))
    metrics on the request    ingest.metrics Count/Distribution vs prometheus-client Counter/Histogram
    datetime from ms          schemas.timefmt.from_ms (positional timedelta) vs a keyword timedelta
    datetime to ms            schemas.timefmt.to_ms (one timedelta) vs a new timedelta per call
    occurred_at               schemas.hit.derive_occurred_at (a comparison) vs min()
    a user agent              sessionizer.useragent.describe, cached vs parsed (ua-parser)
    compression of hits       a 100-hit Kafka batch with none/gzip/snappy/lz4/zstd: bytes and µs

The Faust-level choices (bulk fetches, direct table writes) are `bench/faust_variants.py`'s;
the collector's threshold is `bench/sessionizer_bench.py` run with and without
TOUCHSTREAM_GC_GEN0_THRESHOLD=0; the edge's fast path is `bench/intake_bench.py`'s.
"""

from __future__ import annotations

import argparse
import sys
import timeit
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aiokafka.partitioner import murmur2 as aiokafka_murmur2  # noqa: E402
from aiokafka.record.default_records import DefaultRecordBatchBuilder  # noqa: E402
from prometheus_client import CollectorRegistry, Counter, Histogram  # noqa: E402

from bench.ingest_bench import UA, make_bodies  # noqa: E402
from ingest.body import media_format, parse  # noqa: E402
from ingest.intake import Edge, Intake, new_hit_id  # noqa: E402
from ingest.metrics import SECONDS, Count, Distribution  # noqa: E402
from schemas.hit import derive_occurred_at  # noqa: E402
from schemas.partitioning import Partitioner  # noqa: E402
from schemas.partitioning import murmur2 as our_murmur2  # noqa: E402
from schemas.timefmt import EPOCH, from_ms, to_ms  # noqa: E402
from sessionizer.identity import SESSION_NAMESPACE, session_id  # noqa: E402
from sessionizer.useragent import describe  # noqa: E402

@dataclass(frozen=True, slots=True)
class FrozenEdge:
    """ingest.intake.Edge as a frozen dataclass (what it was)."""

    received_at: datetime
    ip: str | None
    user_agent: str


GUID = "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01"
HIT_ID = "0b8f3f1e-7a01-4c3e-9d61-6f1c2b0e4a57"
MS = 1_772_442_000_123
NOW = datetime(2026, 3, 2, 9, 0, 5, tzinfo=timezone.utc)
CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}  # aiokafka's compression type ids


def ns_per_call(func: Callable[[], object], repeat: int, number: int = 20_000) -> float:
    return min(timeit.repeat(func, number=number, repeat=repeat)) / number * 1e9


def pairs(repeat: int) -> list[tuple[str, str, float, str, float]]:
    """(choice, ours, ns, theirs, ns) for each pure-Python choice."""
    keys = [str(uuid.UUID(int=i)).encode() for i in range(1000)]  # guids, as the edge keys hits
    partitioner = Partitioner(8)
    for key in keys:
        partitioner(key)
    cached = lru_cache(maxsize=262_144)(lambda key: (our_murmur2(key) & 0x7FFFFFFF) % 8)
    for key in keys:
        cached(key)
    registry = CollectorRegistry()
    counter = Counter("c", "c", registry=registry)
    histogram = Histogram("h", "h", buckets=SECONDS, registry=registry)
    count, distribution = Count(counter), Distribution(histogram)
    created, sent = NOW - timedelta(seconds=3), NOW - timedelta(seconds=1)
    describe(UA)
    fresh = iter(f"{UA} build/{n}" for n in range(10**7))
    return [
        ("partition of a known key", "Partitioner (memo)", ns_per_call(lambda: partitioner(keys[7]), repeat),
         "murmur2 each time", ns_per_call(lambda: (our_murmur2(keys[7]) & 0x7FFFFFFF) % 8, repeat)),
        ("partition of a known key", "Partitioner (memo)", ns_per_call(lambda: partitioner(keys[7]), repeat),
         "lru_cache", ns_per_call(lambda: cached(keys[7]), repeat)),
        ("murmur2 of a 36-byte key", "schemas.partitioning", ns_per_call(lambda: our_murmur2(keys[7]), repeat),
         "aiokafka", ns_per_call(lambda: aiokafka_murmur2(keys[7]), repeat)),
        ("hit id", "new_hit_id", ns_per_call(new_hit_id, repeat),
         "str(uuid4())", ns_per_call(lambda: str(uuid.uuid4()), repeat)),
        ("session id", "session_id", ns_per_call(lambda: session_id(GUID, HIT_ID), repeat),
         "str(uuid5())", ns_per_call(lambda: str(uuid.uuid5(SESSION_NAMESPACE, f"{GUID}:{HIT_ID}")), repeat)),
        ("a request's Edge", "slots dataclass", ns_per_call(lambda: Edge(NOW, "192.0.2.0", UA), repeat),
         "frozen dataclass", ns_per_call(lambda: FrozenEdge(NOW, "192.0.2.0", UA), repeat)),
        ("count a request", "Count.inc", ns_per_call(count.inc, repeat),
         "Counter.inc", ns_per_call(counter.inc, repeat)),
        ("observe a latency", "Distribution", ns_per_call(lambda: distribution.observe(0.004), repeat),
         "Histogram", ns_per_call(lambda: histogram.observe(0.004), repeat)),
        ("datetime from ms", "from_ms", ns_per_call(lambda: from_ms(MS), repeat),
         "keyword timedelta", ns_per_call(lambda: EPOCH + timedelta(milliseconds=MS), repeat)),
        ("datetime to ms", "to_ms", ns_per_call(lambda: to_ms(NOW), repeat),
         "new timedelta", ns_per_call(lambda: (NOW - EPOCH) // timedelta(milliseconds=1), repeat)),
        ("occurred_at", "derive_occurred_at", ns_per_call(lambda: derive_occurred_at(NOW, created, sent), repeat),
         "with min()", ns_per_call(lambda: min(NOW - (sent - created), NOW), repeat)),
        ("a user agent", "describe, cached", ns_per_call(lambda: describe(UA), repeat),
         "parsed", ns_per_call(lambda: describe(next(fresh)), repeat, number=200)),
    ]


def compression(repeat: int) -> list[tuple[str, int, float]]:
    """(codec, bytes, µs) of one Kafka record batch of 100 hits as the edge encodes them."""
    intake = Intake()
    [body] = make_bodies(1, 100, 10_000, seed=100)
    records = intake.process(parse(body, media_format(b"application/json"), 500), Edge(NOW, "192.0.2.0", UA)).hits

    def build(codec: int) -> bytes:
        builder = DefaultRecordBatchBuilder(2, codec, 0, -1, -1, 0, 1 << 22)
        for offset, (key, value) in enumerate(records):
            builder.append(offset, None, key, value, [])
        return bytes(builder.build())

    rows = []
    for name, codec in CODECS.items():
        size = len(build(codec))
        rows.append((name, size, min(timeit.repeat(lambda: build(codec), number=20, repeat=repeat)) / 20 * 1e6))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    print(f"{'choice':<26} {'ours':<20} {'ns':>8}   {'instead of':<18} {'ns':>8}  {'ours/theirs':>11}")
    for choice, ours, ours_ns, theirs, theirs_ns in pairs(args.repeat):
        print(f"{choice:<26} {ours:<20} {ours_ns:>8.0f}   {theirs:<18} {theirs_ns:>8.0f}  {ours_ns / theirs_ns:>10.2f}x")
    print()
    rows = compression(args.repeat)
    plain = rows[0][1]
    print(f"{'100 hits, compression':<22} {'bytes':>8} {'of none':>8} {'µs to build':>12}")
    for name, size, micros in rows:
        print(f"{name:<22} {size:>8,} {size / plain:>7.2f}x {micros:>12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
