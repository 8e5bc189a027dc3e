"""Benchmark of the edge's per-hit work without HTTP or Kafka: body parsing, validation,
enrichment and encoding (`ingest.body.parse` + `ingest.intake.Intake.process`), in process.

    .venv/bin/python bench/intake_bench.py [--repeat 9]

Baseline in the same run: the same bodies through the pydantic path (`HitIn` + `enrich` +
orjson, what the fast path must agree with), `Intake(fast_path=False)`. Bodies are the ones
`bench/ingest_bench.py` sends (tracker-like hits, 10,000 devices): 300 bodies of 100 hits, and
30,000 single-hit bodies. Prints the median and best µs per hit of `--repeat` passes, and the
fast/pydantic ratio. The collector's policy is the edge process's (`schemas.runtime`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.ingest_bench import UA, make_bodies  # noqa: E402
from ingest.body import media_format, parse  # noqa: E402
from ingest.intake import Edge, Intake  # noqa: E402
from schemas.runtime import tune_gc  # noqa: E402
from schemas.settings import RuntimeSettings  # noqa: E402


def per_hit(intake: Intake, bodies: list[bytes], hits: int, repeat: int) -> tuple[float, float]:
    """(median, best) µs per hit of `repeat` passes over `bodies`."""
    fmt = media_format(b"application/json")
    edge = Edge(datetime.now(timezone.utc), "192.0.2.0", UA)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for body in bodies:
            out = intake.process(parse(body, fmt, 500), edge)
        times.append(time.perf_counter() - start)
        assert out.accepted == len(parse(bodies[-1], fmt, 500).values), "every bench hit is valid"
    return statistics.median(times) / hits * 1e6, min(times) / hits * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args(argv)
    scenarios = (
        ("batch100", make_bodies(300, 100, 10_000, seed=100), 30_000),
        ("single", make_bodies(30_000, 1, 10_000, seed=1), 30_000),
    )
    tune_gc(RuntimeSettings())
    rows = []
    for name, bodies, hits in scenarios:
        for path, intake in (("pydantic", Intake(fast_path=False)), ("fast", Intake())):
            median, best = per_hit(intake, bodies, hits, args.repeat)
            rows.append((name, path, median, best))
            print(f"  {name:9} {path:9} median {median:6.2f} us/hit  best {best:6.2f}", flush=True)
    print()
    print(f"{'bodies':<9} {'path':<9} {'median us/hit':>13} {'best us/hit':>11}")
    for name, path, median, best in rows:
        print(f"{name:<9} {path:<9} {median:>13.2f} {best:>11.2f}")
    print()
    for name, *_ in scenarios:
        slow = next(r for r in rows if r[0] == name and r[1] == "pydantic")
        fast = next(r for r in rows if r[0] == name and r[1] == "fast")
        print(f"{name}: fast/pydantic = {fast[2] / slow[2]:.2f}x time per hit (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
