"""The session core in process, compiled (setup.py, mypyc) beside its own interpreted source, in one run.

    .venv/bin/python bench/core_bench.py [--hits 100000] [--repeat 3]

No services. `bench.hitgen` hits (the sessionizer bench's shape: ten per device) go through
`sessionizer.machine.on_hit` in rounds of 5,000 as the worker runs them: coalesced snapshots
built at the end of each round (`Emitted.flush`) and every touched device's state encoded
(`DeviceState.to_bytes`). Twice per build: in time order, and with 10 % of the hits up to 5
minutes late (SPEC rule 6: inserted, merged, renumbered). Each build runs in its own process:
the installed modules (compiled, where the install could), and a copy of the sources alone
first on the path (interpreted). Printed: CPU µs per hit (best of `--repeat`, garbage
collector off so that its timing does not decide between two runs), state bytes encoded per hit,
and compiled / interpreted. The sessionizer's whole worker, with Kafka, is
`bench/sessionizer_bench.py`'s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

RUN = r"""
import gc, json, random, sys, time
from datetime import datetime, timezone
from bench.hitgen import Shape, generate
from schemas.views import decode_hit_record
import sessionizer.machine
from sessionizer.machine import Emitted, Rules, on_hit, to_ms
hits, repeat = int(sys.argv[1]), int(sys.argv[2])
generated = generate(Shape(hits=hits, devices=hits // 10), datetime(2026, 12, 1, tzinfo=timezone.utc))
views = [decode_hit_record(v) for _, v in generated]
weights = [len(v) + 64 for _, v in generated]
rng = random.Random(12)
late = sorted((to_ms(v.received_at) + (rng.randrange(1, 300_001) if rng.random() < 0.1 else 0), n)
              for n, v in enumerate(views))
orders = {"in order": list(range(len(views))), "10 % up to 5 min late": [n for _, n in late]}
def run(order):
    rules, states, et, nbytes = Rules(), {}, 0, 0
    cpu = time.process_time()
    for start in range(0, len(order), 5000):
        out, touched = Emitted(coalesce=True), {}
        for n in order[start:start + 5000]:
            v = views[n]
            t = to_ms(v.occurred_at)
            if t > et:
                et = t
            g = v.guid.lower()
            states[g] = touched[g] = on_hit(states.get(g), v, rules, et, out, occurred_ms=t, weight=weights[n])
        out.flush()
        for s in touched.values():
            nbytes += len(s.to_bytes())
    return time.process_time() - cpu, nbytes
gc.disable()
result = {"compiled": not sessionizer.machine.__file__.endswith(".py")}
for name, order in orders.items():
    best = min(run(order) for _ in range(repeat))
    result[name] = (best[0] * 1e6 / len(order), best[1] / len(order))
print(json.dumps(result))
"""


def measure(path: list[Path], hits: int, repeat: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in path)}
    done = subprocess.run([sys.executable, "-c", RUN, str(hits), str(repeat)], cwd=path[0], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"core bench failed:\n{done.stderr}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"# core bench: {args.hits:,} hits over {args.hits // 10:,} devices, best of {args.repeat}, "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())} (2 cores)")
    installed = measure([REPO], args.hits, args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(REPO / "sessionizer", Path(tmp) / "sessionizer",
                        ignore=shutil.ignore_patterns("*.so", "compiled.json", "__pycache__"))
        source = measure([Path(tmp), REPO], args.hits, args.repeat)
    if not installed["compiled"]:
        print("the installed core is interpreted (not compiled: see `make venv`'s `touchstream build:` lines); "
              "both columns measure the same thing")
    print(f"{'order':<24}{'compiled µs/hit':>17}{'interpreted µs/hit':>20}{'ratio':>8}{'state bytes/hit':>17}")
    for order in ("in order", "10 % up to 5 min late"):
        fast, slow = installed[order], source[order]
        print(f"{order:<24}{fast[0]:>17.2f}{slow[0]:>20.2f}{fast[0] / slow[0]:>7.2f}x{fast[1]:>17.0f}")


if __name__ == "__main__":
    main()
