"""Sessionizer throughput, beside a raw aiokafka loop measured in the same run on the same topic.

    python -m bench.sessionizer_bench [--hits 200000] [--devices 20000] [--full-records]
                                      [--modes in-order,out-of-order] [--late 0.1] [--late-by 300]

1. pre-fills a fresh `hits` topic (8 partitions) with enriched hits keyed by guid
   (`bench.hitgen`: ~300-400 bytes each, or the edge's full form with --full-records);
2. (a) raw baseline: an aiokafka consumer group reading it — getmany, one produced record per
   input keyed like the input, wait for the acks, commit — timed from the first records
   received to the last ack. Printed twice: with aiokafka's default partitioner (the stated
   baseline) and with the partition given explicitly (no per-record murmur2: a stronger floor);
3. (b) one sessionizer worker (`python -m sessionizer`, a separate process, fresh app id and
   data dir) processing the same topic to completion: from the first records it took to the
   moment the round holding the last of them was durable (outputs and changelog acked,
   offsets acked), read from the worker's stats file — once per mode: `in-order` (the hits as
   generated, in time order per device) and `out-of-order` (the same hits, a fraction `--late`
   of them delayed by up to `--late-by` seconds: the arrival order of retries, tabs and
   beacons, which makes the core merge, insert and renumber sessions, SPEC rule 6), each on its
   own topic;
4. state size: `DeviceState.to_bytes()` per device (read back from the changelog) and the
   worker's RocksDB folder on disk (flushed and compacted after the worker stopped) per device.

The machine has 2 cores shared with the broker (and possibly other runs): the load average is
printed with the figures. Topics are deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import kafkabench as kb
from bench.hitgen import Shape, generate
from schemas.internals import partitions_of

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_worker(env: dict[str, str], stats_file: Path, total: int, timeout: float, log_path: Path,
               profile: str | None = None, cmd: list[str] | None = None, settle: float = 2.5) -> dict:
    """Run a worker (the sessionizer, or `cmd`) until its stats file says it took and made
    durable `total` records; then wait `settle` s, stop it and return its last stats."""
    if cmd is None:
        cmd = [sys.executable, "-m", "sessionizer"]
    if profile:
        cmd = [sys.executable, "-m", "pyinstrument", "-r", "text", "-o", profile, *cmd[1:]]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    stats: dict = {}
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}; see {log_path}")
            try:
                stats = json.loads(stats_file.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                stats = {}
            if stats.get("records_in", 0) >= total and stats.get("last_records_durable"):
                break
            time.sleep(0.25)
        else:
            raise RuntimeError(f"worker did not finish in {timeout}s: {stats}; see {log_path}")
        # Let the final sweep (everything idle once caught up) run, then stop cleanly.
        time.sleep(settle)
        try:
            stats = json.loads(stats_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        stats["thread_cpu"] = thread_cpu(proc.pid, stats.get("threads", {}))
        stats["memory"] = memory(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return stats


def memory(pid: int) -> dict[str, float]:
    """The worker's peak resident memory (MB) and its minor page faults so far (each a page the
    kernel had to hand over and clear: a cost in CPU that grows with the memory a worker keeps)."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return {"peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024, "minor_faults": int(fields[7])}


def thread_cpu(pid: int, names: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each thread of the worker (Python threads by name, the rest
    -- RocksDB's and the like -- summed as "native")."""
    by_tid = {str(tid): name for name, tid in names.items()}
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
        name = by_tid.get(task.name, "native")
        out[name] = out.get(name, 0.0) + cpu
    return out


async def state_sizes(bootstrap: str, changelog: str) -> tuple[int, float]:
    """(devices, mean DeviceState bytes) from the changelog: the latest value per key."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    latest: dict[bytes, int] = {}
    try:
        parts = await partitions_of(consumer, changelog)
        tps = [TopicPartition(changelog, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batch.items():
                for r in records:
                    if r.key and r.key[0] != 0:
                        if r.value is None:
                            latest.pop(r.key, None)
                        else:
                            latest[r.key] = len(r.value)
                    if r.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
    n = len(latest)
    return n, (sum(latest.values()) / n if n else 0.0)


def rocksdb_bytes(data_dir: Path) -> tuple[int, int]:
    """(bytes on disk as left by the worker, bytes after flush + full compaction)."""
    def du(path: Path) -> int:
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())

    tables = [p for p in data_dir.rglob("*.db") if p.is_dir()]
    before = sum(du(p) for p in tables)
    import rocksdict

    for path in tables:
        db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
        db.flush(wait=True)
        db.compact_range(None, None)
        db.close()
    after = sum(du(p) for p in tables)
    return before, after


def disorder(records: list[tuple[bytes, bytes]], fraction: float, late_by_s: float,
             seed: int) -> list[tuple[bytes, bytes]]:
    """The same hits in another arrival order: each with probability `fraction` arrives up to
    `late_by_s` seconds after it happened (its received_at moves with it, as a retried beacon's
    does), the rest on time; the list is sorted by arrival."""
    import random

    rng = random.Random(seed + 1)
    late_ms = int(late_by_s * 1000)
    arriving: list[tuple[int, int, bytes, bytes]] = []
    for n, (key, value) in enumerate(records):
        obj = orjson.loads(value)
        received = int(datetime.fromisoformat(obj["received_at"]).timestamp() * 1000)
        if rng.random() < fraction:
            delay = rng.randrange(1, late_ms + 1)
            received += delay
            obj["received_at"] = datetime.fromtimestamp(received / 1000, timezone.utc).isoformat().replace("+00:00", "Z")
            value = orjson.dumps(obj)
        arriving.append((received, n, key, value))
    arriving.sort()
    return [(key, value) for _, _, key, value in arriving]


async def run_mode(args: argparse.Namespace, mode: str, prefix: str, records: list[tuple[bytes, bytes]]) -> float:
    """(b) for one mode: its own hits topic and worker; prints and returns hits/s."""
    bootstrap = args.bootstrap
    mode_prefix = f"{prefix}{mode}."
    await kb.create(bootstrap, [mode_prefix + "hits"], args.partitions)
    await kb.prefill(bootstrap, mode_prefix + "hits", records)
    total = len(records)
    work = Path(tempfile.mkdtemp(prefix="sessionizer-bench-"))
    stats_file = work / "stats.json"
    app_id = mode_prefix + "sessionizer"
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": str(REPO),
        "TOUCHSTREAM_KAFKA_BOOTSTRAP": bootstrap,
        "TOUCHSTREAM_TOPIC_PREFIX": mode_prefix,
        "TOUCHSTREAM_PARTITIONS": str(args.partitions),
        "TOUCHSTREAM_SESSIONIZER_APP_ID": app_id,
        "TOUCHSTREAM_SESSIONIZER_DATA_DIR": str(work / "data"),
        "TOUCHSTREAM_SESSIONIZER_WEB_PORT": str(free_port()),
        "TOUCHSTREAM_SESSIONIZER_STATS_FILE": str(stats_file),
        "TOUCHSTREAM_SESSIONIZER_STANDBY_REPLICAS": "0",
    })
    for item in args.env:
        k, _, v = item.partition("=")
        env[k] = v
    print(f"load before sessionizer ({mode}): {load()}")
    stats = run_worker(env, stats_file, total, args.timeout, work / "worker.log", args.profile)
    seconds = stats["last_records_durable"] - stats["first_taken"]
    per_s = total / seconds
    label = f"(b)  sessionizer worker, {mode}"
    print(f"{label:<45}: {per_s:>9,.0f} hits/s     ({seconds:.2f}s; "
          f"{stats['batches']} batches, {stats['sessions_out']:,} session snapshots, "
          f"{stats['records_out']:,} event records, {stats['state_writes']:,} state writes, "
          f"{stats['closed_by_time']:,} swept, {stats['dead_letters']} dead letters; "
          f"{stats.get('wait_s', 0):.2f}s producing + waiting for acks)")
    print(f"     rule 6: {stats.get('reordered', 0):,} hits placed out of order, {stats.get('merges', 0):,} merges, {stats.get('sessions_inserted', 0):,} sessions inserted, "
          f"{stats.get('sessions_renumbered', 0):,} renumbered, {stats.get('hits_moved', 0):,} hits moved, "
          f"{stats.get('too_late', 0):,} too late")
    cpu = stats.get("thread_cpu", {})
    print("     worker CPU seconds by thread (whole run, start-up included): "
          + ", ".join(f"{k} {v:.1f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])))
    mem = stats.get("memory")
    if mem:
        print(f"     worker memory: peak RSS {mem['peak_rss_mb']:.0f} MB, {mem['minor_faults']:,} minor page faults")
    steps = stats.get("steps_cpu_s", {})
    if steps:
        print(f"     processing thread CPU by step of a round (s, {sum(steps.values()):.2f} in all): "
              + ", ".join(f"{k} {v:.2f}" for k, v in steps.items())
              + f"; garbage collector {stats.get('gc_cpu_s', 0):.2f} (whole run, within the steps and outside"
              + "".join(f"; generation {g}: {n} in {s:.2f}s" for g, (n, s) in enumerate(stats.get("gc_by_generation", [])))
              + ")")
    if stats.get("first_taken_cpu") is not None and stats.get("last_records_durable_cpu") is not None:
        busy = stats["last_records_durable_cpu"] - stats["first_taken_cpu"]
        print(f"     processing thread CPU while records flowed: {busy:.2f}s of {seconds:.2f}s "
              f"({busy / seconds:.0%} busy; the rest waited for Kafka)")
    devices, mean_state = await state_sizes(bootstrap, f"{app_id}-devices-changelog")
    before, after = rocksdb_bytes(work / "data")
    print(f"     state: {devices:,} devices; DeviceState.to_bytes mean {mean_state:.0f} bytes; RocksDB on disk "
          f"{before / max(devices, 1):.0f} bytes/device as left (WAL + memtables flushed at stop), "
          f"{after / max(devices, 1):.0f} bytes/device after flush + compaction")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"     kept {work}")
    return per_s


async def main_async(args: argparse.Namespace) -> int:
    bootstrap = args.bootstrap
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    hits_topic = prefix + "hits"
    shape = Shape(hits=args.hits, devices=args.devices, compact=not args.full_records)
    print(f"# sessionizer bench  {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%SZ}  prefix {prefix}")
    print(f"load average at start: {load()}  (2 cores, broker on the same machine)")
    t0 = time.perf_counter()
    records = generate(shape, datetime.now(timezone.utc) - timedelta(hours=3))
    size = sum(len(v) for _, v in records) / len(records)
    print(f"generated {len(records):,} hits over {shape.devices:,} devices, {size:.0f} bytes each "
          f"({time.perf_counter() - t0:.1f}s)")
    await kb.create(bootstrap, [hits_topic, prefix + "raw-out", prefix + "raw-out2"], args.partitions)
    print(f"pre-filled {hits_topic} ({args.partitions} partitions) in {await kb.prefill(bootstrap, hits_topic, records):.1f}s")
    total = len(records)
    results: dict[str, float] = {}
    try:
        if not args.skip_raw:
            print(f"load before raw: {load()}")
            raw = await kb.raw_loop(bootstrap, hits_topic, prefix + "raw-out", total, prefix + "raw")
            results["raw"] = raw["per_s"]
            print(f"(a)  raw aiokafka loop, default partitioner : {raw['per_s']:>9,.0f} records/s  ({raw['seconds']:.2f}s)")
            raw2 = await kb.raw_loop(bootstrap, hits_topic, prefix + "raw-out2", total, prefix + "raw2", explicit_partition=True)
            results["raw_explicit"] = raw2["per_s"]
            print(f"(a') raw aiokafka loop, explicit partition   : {raw2['per_s']:>9,.0f} records/s  ({raw2['seconds']:.2f}s)")

        for mode in args.modes.split(","):
            mode_records = records if mode == "in-order" else disorder(records, args.late, args.late_by, shape.seed)
            per_s = await run_mode(args, mode, prefix, mode_records)
            results[mode] = per_s
            if "raw" in results:
                print(f"ratio {mode} / raw (default partitioner) : {per_s / results['raw']:.2f}x   "
                      f"(explicit partition: {per_s / results['raw_explicit']:.2f}x)")
        if {"in-order", "out-of-order"} <= set(results):
            print(f"out-of-order / in-order: {results['out-of-order'] / results['in-order']:.2f}x")
        print(f"load after: {load()}")
    finally:
        if not args.keep:
            await kb.delete(bootstrap, prefix)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("TOUCHSTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    parser.add_argument("--hits", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--full-records", action="store_true", help="every key of the enriched hit, as the edge writes it")
    parser.add_argument("--skip-raw", action="store_true")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--profile", help="run the worker under pyinstrument, text report to this file")
    parser.add_argument("--env", action="append", default=[], help="extra KEY=VALUE for the worker")
    parser.add_argument("--keep", action="store_true", help="keep topics and the data dir")
    parser.add_argument("--modes", default="in-order,out-of-order", help="comma-separated: in-order, out-of-order")
    parser.add_argument("--late", type=float, default=0.1, help="out-of-order: fraction of hits that arrive late")
    parser.add_argument("--late-by", type=float, default=300.0, help="out-of-order: up to this many seconds late")
    args = parser.parse_args(argv)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
