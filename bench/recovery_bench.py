"""A partition's set-up after recovery (its deadline heap and open devices), at 1M stored devices.

    python -m bench.recovery_bench [--devices 1000000] [--distinct 2000]

When Faust has recovered a partition's table, the sessionizer rebuilds the partition's deadline
heap from every stored device (sessionizer.processor `_setup_ready`). Measured in one run on
one RocksDB holding `--devices` states (realistic states made by the core — one to a few
visits, open, closed and frozen — `--distinct` of them, stored under as many guids as asked):

  (a) the floor: iterating the RocksDB (keys and values), nothing else;
  (b) now: each state's header only (sessionizer.machine.peek_deadline_ms, format 3);
  (c) before: each state decoded (DeviceState.from_bytes + next_deadline_ms), as until format 2;
  (d) the idle scan's step: 500 stored devices looked at from a cursor (sessionizer.sweep), its default.

Devices idle past the TTL leave the state, so what a partition stores follows the devices of the
TTL (400 days by default), not every guid ever seen.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
import uuid

import rocksdict

from sessionizer.machine import DeviceState, Emitted, Rules, idle, next_deadline_ms, on_hit, on_time, peek_deadline_ms
from sessionizer.sweep import DeadlineHeap, IdleCursor, stored_states

MIN = 60_000
T0 = 1_772_442_000_000  # 2026-03-02


def _states(n: int, rules: Rules, rng: random.Random) -> list[bytes]:
    from tests.unit.sessionizer.driver import make_hit  # (a hit as the edge publishes it)

    out = []
    for i in range(n):
        guid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        t = T0 + rng.randrange(0, 3 * 24 * 60) * MIN
        state = None
        for visit in range(rng.choice([1, 1, 2, 3])):
            for k in range(rng.choice([1, 2, 4, 8])):
                t += rng.choice([15_000, 60_000, 120_000])
                state = on_hit(state, make_hit(t, hid=i * 100 + visit * 10 + k, guid=guid,
                                               url=f"https://www.oakridge-apts.com/p/{rng.randrange(50)}"),
                               rules, t, Emitted())
            t += rng.choice([40 * MIN, 5 * 60 * MIN])
        if rng.random() < 0.6:  # most devices are long gone: everything frozen
            on_time(state, rules, t + rules.timeout_ms + rules.lateness_ms + 1, Emitted())
        out.append(state.to_bytes())
    return out


def _timed(label: str, fn, baseline: float | None = None) -> float:
    started = time.perf_counter()
    n = fn()
    took = time.perf_counter() - started
    ratio = f"   {took / baseline:5.1f}x the floor" if baseline else ""
    print(f"{label:<46}: {took:7.2f} s  ({n:,} devices){ratio}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--distinct", type=int, default=2_000)
    args = parser.parse_args()
    rules = Rules()
    rng = random.Random(11)
    samples = _states(args.distinct, rules, rng)
    folder = tempfile.mkdtemp(prefix="ts-recovery-")
    try:
        db = rocksdict.Rdict(folder, options=rocksdict.Options(raw_mode=True))
        started = time.perf_counter()
        batch = rocksdict.WriteBatch(raw_mode=True)
        for i in range(args.devices):
            batch.put(str(uuid.UUID(int=rng.getrandbits(128), version=4)).encode(), samples[i % len(samples)])
            if i % 50_000 == 49_999:
                db.write(batch)
                batch = rocksdict.WriteBatch(raw_mode=True)
        db.write(batch)
        db.flush()
        db.compact_range(None, None)
        mean = sum(len(s) for s in samples) / len(samples)
        print(f"stored {args.devices:,} devices ({mean:.0f} bytes mean) in {time.perf_counter() - started:.1f} s")

        def floor() -> int:
            return sum(1 for _ in db.items())

        def header() -> int:
            heap = DeadlineHeap()
            open_ = set()
            deadlines = []
            for guid, (deadline, has_open) in stored_states(db.items(), lambda raw: peek_deadline_ms(raw, rules)):
                deadlines.append((guid, deadline))
                if has_open:
                    open_.add(guid)
            heap.rebuild(deadlines)
            return len(deadlines)

        def decoded() -> int:
            heap = DeadlineHeap()
            open_ = set()
            deadlines = []
            for guid, state in stored_states(db.items(), DeviceState.from_bytes):
                deadlines.append((guid, next_deadline_ms(state, rules)))
                if state.open_sessions():
                    open_.add(guid)
            heap.rebuild(deadlines)
            return len(deadlines)

        base = _timed("(a) iterate RocksDB (floor)", floor)
        new = _timed("(b) set-up from headers (now)", header, base)
        old = _timed("(c) set-up decoding every state (before)", decoded, base)
        print(f"headers / decoding: {new / old:.2f}x the time ({old / new:.1f}x faster)")

        cursor = IdleCursor()
        now = T0 + 500 * 24 * 60 * MIN
        steps = 50

        def scan() -> int:
            n = 0
            for _ in range(steps):
                it = db.items() if cursor.cursor is None else db.items(from_key=cursor.cursor)
                scanned, _ = cursor.scan(it, 500, lambda key, raw: idle(raw, rules, now))
                n += scanned
            return n

        took = _timed(f"(d) idle scan, {steps} steps of 500", scan)
        print(f"idle scan: {took / steps * 1000:.1f} ms per step of 500 devices")
        db.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
