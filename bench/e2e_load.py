"""End-to-end load benchmark: HTTP in, rows visible in PostgreSQL out, at increasing rates.

    .venv/bin/python bench/e2e_load.py [--rates 500,1000,2000,3500,5000,7000] [--duration 20]
        [--batch 10] [--edges 1] [--sessionizers 1] [--sinks 1] [--partitions 8]
        [--loaders 1] [--connections 64] [--sample 10] [--all]
        [--profile edge|sessionizer|sink --profile-rate 3500]

Everything runs on this machine: the shared dev stack (Kafka + PostgreSQL, `touchstream stack
up`, started if needed), the pipeline's components as separate processes (`touchstream.pipeline`:
`--edges` uvicorn workers, `--sessionizers` and `--sinks` workers), on a fresh topic prefix and
PostgreSQL schema that are deleted at the end, pass or fail. The load comes from `--loaders`
separate processes on loopback: open-loop, each request scheduled at the target rate (one
device's beacon of `--batch` realistic hits from `touchstream.traffic`, fresh hit_ids,
`created_at` = the moment it is sent), on keep-alive connections with a minimal HTTP/1.1
client (so the load generator costs little CPU).

Per rate, for `--duration` seconds, it prints:

- target and sustained accepted hits/s (hits in 202 answers / duration), HTTP statuses;
- p50/p99 HTTP latency;
- p50/p99 visibility: from the 202 to the row being visible in `pageviews`/`events`, on a
  sample of one hit in `--sample` (the loaders stream the sampled hit_ids with their 202 time;
  this process looks them up by primary key, `(occurred_at, hit_id)`, every 100 ms);
- consumer lag of the sessionizer (hits) and sink (events + sessions) groups when the load
  stops, and CPU of each stage during the step (% of one core), which show the stage that
  saturates first;
- SATURATED when accepted < 95 % of the target or visibility p99 > 5 s (or samples never seen).

It stops after two saturated rates in a row (`--all` runs every rate). Each step is bounded:
`--duration` of load, then at most `--drain` seconds for the sampled rows to appear and the
lags to reach zero. `--profile STAGE` samples that stage with py-spy (pip install py-spy)
during the `--profile-rate` step and prints its hottest functions (raw stacks in bench/out/).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import queue
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OUT = REPO / "bench" / "out"
UTC = timezone.utc
CLK_TCK = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(p / 100 * (len(ordered) - 1)))))
    return ordered[k]


# --- the load generator (runs in its own processes) -----------------------------------------


def _templates(seed: int) -> list[list[dict]]:
    """Per device, its hits as the traffic generator makes them (urls, referrers, titles, events)."""
    from touchstream import traffic

    devices: dict[str, list[dict]] = {}
    for hit in traffic.generate(datetime(2026, 1, 1, tzinfo=UTC), traffic.TrafficShape(devices=2000), seed=seed):
        devices.setdefault(hit["guid"], []).append(hit)
    return [hits for hits in devices.values() if hits]


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _hit_id() -> str:
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Connection:
    """A keep-alive HTTP/1.1 connection that posts JSON bodies (a few µs of Python a request)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: bytes, body: bytes, ua: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nUser-Agent: %s\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (path, self.host.encode(), ua, len(body), body))
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            answer = await self.reader.readexactly(int(m.group(1))) if m else b""
            if re.search(rb"(?i)\r\nconnection:\s*close", head):
                self.close()
        except BaseException:
            self.close()
            raise
        return status, answer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def loader_main(cfg: dict[str, Any], samples: Any, results: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results.put(asyncio.run(_loader(cfg, samples)))


async def _loader(cfg: dict[str, Any], samples: Any) -> dict[str, Any]:
    import orjson

    rng = random.Random(cfg["seed"])
    templates = _templates(cfg["seed"])
    namespace = uuid.UUID(cfg["namespace"])
    devices = []
    for n, hits in enumerate(templates * 10):  # 20,000 devices
        guid = str(uuid.uuid5(namespace, f"{cfg['index']}/{n}"))
        devices.append((guid, hits[0]["_ua"].encode(), hits))
    cursor = [0] * len(devices)
    batch, rate, duration = cfg["batch"], cfg["rate"], cfg["duration"]
    interval = batch / rate  # seconds between two requests of this loader
    host, port = cfg["host"], cfg["port"]
    sample_every = cfg["sample"]
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    accepted = 0
    pending_samples: list[tuple[str, str, int, float]] = []
    next_index = 0
    start = cfg["start_at"]
    deadline = start + duration
    last_answer = start

    def body_for(device: int) -> tuple[bytes, bytes, list[tuple[str, str, int]]]:
        guid, ua, hits = devices[device]
        now_ms = int(time.time() * 1000)
        items, sampled = [], []
        for i in range(batch):
            template = hits[cursor[device] % len(hits)]
            cursor[device] += 1
            created = now_ms - (batch - 1 - i)
            hit = {"hit_id": _hit_id(), "guid": guid, "type": template["type"], "url": template["url"],
                   "referrer": template.get("referrer", ""), "created_at": _iso_ms(created)}
            if template.get("title"):
                hit["title"] = template["title"]
            if template["type"] == "event":
                hit["event"] = template["event"]
            items.append(hit)
            if rng.random() * sample_every < 1:
                sampled.append((hit["hit_id"], "events" if hit["type"] == "event" else "pageviews", created))
        return orjson.dumps(items), ua, sampled

    async def flush_samples() -> None:
        while True:
            await asyncio.sleep(0.1)
            if pending_samples:
                samples.put(list(pending_samples))
                pending_samples.clear()

    async def connection_task() -> None:
        nonlocal next_index, accepted, last_answer
        conn = Connection(host, port)
        try:
            while True:
                index = next_index
                next_index += 1
                due = start + index * interval
                if due >= deadline:
                    return
                delay = due - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                body, ua, sampled = body_for(rng.randrange(len(devices)))
                sent = time.time()
                try:
                    status, answer = await asyncio.wait_for(conn.post(b"/v1/hits", body, ua), 30)
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                    statuses[type(exc).__name__] += 1
                    conn.close()
                    continue
                done = time.time()
                last_answer = max(last_answer, done)
                statuses[str(status)] += 1
                latencies.append(done - sent)
                if status == 202:
                    n = batch if answer.endswith(b'"rejected":[]}') and b'"accepted":%d' % batch in answer \
                        else orjson.loads(answer)["accepted"]
                    accepted += n
                    pending_samples.extend((h, t, c, done) for h, t, c in sampled)
        finally:
            conn.close()

    wait = start - time.time()
    if wait > 0:
        await asyncio.sleep(wait)
    flusher = asyncio.create_task(flush_samples())
    await asyncio.gather(*(connection_task() for _ in range(cfg["connections"])))
    flusher.cancel()
    if pending_samples:
        samples.put(list(pending_samples))
    return {"statuses": dict(statuses), "latencies": latencies, "accepted": accepted,
            "requests": next_index, "last_answer": last_answer}


# --- process CPU ----------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for root in pids:
        for p in _tree(root):
            try:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, all cores (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


# --- one rate step --------------------------------------------------------------------------


@dataclass
class Step:
    target: int
    accepted_rate: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    http_p50: float = float("nan")
    http_p99: float = float("nan")
    vis_p50: float = float("nan")
    vis_p99: float = float("nan")
    samples: int = 0
    unseen: int = 0
    lag: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    drained_s: float = float("nan")

    @property
    def saturated(self) -> bool:
        return (self.accepted_rate < 0.95 * self.target or not self.vis_p99 <= 5.0
                or self.unseen > max(1, self.samples // 100))


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        from touchstream.devstack import StackConfig, ensure_up

        self.stack_cfg = StackConfig.from_env()
        info = ensure_up(self.stack_cfg)
        self.bootstrap, self.dsn = info.kafka_bootstrap, info.pg_dsn
        run = uuid.uuid4().hex[:8]
        self.prefix = f"load{run}."
        self.schema = f"load_{run}"
        self.namespace = str(uuid.uuid4())
        self.workdir = OUT / "e2e_load" / run
        self.pipeline: Any = None
        self.steps: list[Step] = []

    # -- set up / tear down --

    async def setup(self) -> None:
        import asyncpg

        from schemas.topics import create_topics
        from touchstream.pipeline import Pipeline

        await create_topics(self.bootstrap, self.prefix, self.args.partitions)
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(f'CREATE SCHEMA "{self.schema}"')
        finally:
            await conn.close()
        a = self.args
        self.pipeline = Pipeline(workdir=self.workdir, kafka_bootstrap=self.bootstrap, pg_dsn=self.dsn,
                                 topic_prefix=self.prefix, pg_schema=self.schema, partitions=a.partitions)
        self.pipeline.add_ingest(a.edges)
        for i in range(a.sessionizers):
            self.pipeline.add_sessionizer(i)
        for i in range(a.sinks):
            self.pipeline.add_sink(i)
        for comp in self.pipeline.components.values():
            comp.start()
        await asyncio.to_thread(self.pipeline.wait_edge_ready, 90)

    async def teardown(self) -> None:
        import asyncpg

        from tests.conftest import delete_topics_with_prefix

        if self.pipeline is not None:
            await asyncio.to_thread(self.pipeline.stop)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(delete_topics_with_prefix(self.bootstrap, self.prefix), 60)
        # The sessionizer's changelog topic is named after its app id, which starts with the prefix.
        with contextlib.suppress(Exception):
            conn = await asyncpg.connect(self.dsn)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            finally:
                await conn.close()
        if not self.args.keep_logs:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- measuring --

    def stage_pids(self) -> dict[str, list[int]]:
        from touchstream.devstack import kafka, postgres

        comps = self.pipeline.components
        pids = {
            "edge": [comps["ingest"].process.pid],
            "sessionizer": [c.process.pid for n, c in comps.items() if n.startswith("sessionizer")],
            "sink": [c.process.pid for n, c in comps.items() if n.startswith("sink")],
        }
        kpid, ppid = kafka.kafka_pid(self.stack_cfg), postgres.postgres_pid(self.stack_cfg)
        if kpid:
            pids["kafka"] = [kpid]
        if ppid:
            pids["postgres"] = [ppid]
        return pids

    async def lags(self) -> dict[str, int]:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.structs import TopicPartition

        from schemas.topics import Topics

        topics = Topics(self.prefix)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await admin.start()
        await consumer.start()
        try:
            out = {}
            for label, group, names in (("sessionizer", f"{self.prefix}sessionizer", [topics.hits]),
                                        ("sink", f"{self.prefix}sink", [topics.events, topics.sessions])):
                tps = [TopicPartition(n, p) for n in names for p in range(self.args.partitions)]
                ends = await consumer.end_offsets(tps)
                committed = await admin.list_consumer_group_offsets(group, partitions=tps)
                out[label] = sum(max(0, ends[tp] - (committed[tp].offset if tp in committed and committed[tp].offset >= 0
                                                    else 0)) for tp in tps)
            return out
        finally:
            await consumer.stop()
            await admin.close()

    async def warm_up(self) -> None:
        """A short step at a low rate until its rows appear (partitions assigned, caches warm)."""
        deadline = time.monotonic() + 120
        while True:
            step = await self.step(200, duration=3.0, quiet=True)
            if step.samples and not step.unseen:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the pipeline does not deliver: {step}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {c.name}:\n{c.log_tail(10)}" for c in self.pipeline.components.values())

    async def step(self, rate: int, duration: float | None = None, quiet: bool = False) -> Step:
        import asyncpg

        a = self.args
        duration = duration or a.duration
        ctx = mp.get_context("spawn")
        samples_q, results_q = ctx.Queue(), ctx.Queue()
        start_at = time.time() + 4.0 + 0.5 * a.loaders  # spawn, imports and templates first
        host, port = "127.0.0.1", self.pipeline.ingest_port
        procs = []
        for i in range(a.loaders):
            cfg = {"index": i, "seed": 1000 * i + rate, "namespace": self.namespace, "batch": a.batch,
                   "rate": rate / a.loaders, "duration": duration, "host": host, "port": port,
                   "connections": max(4, a.connections // a.loaders), "sample": a.sample, "start_at": start_at}
            p = ctx.Process(target=loader_main, args=(cfg, samples_q, results_q), daemon=True)
            p.start()
            procs.append(p)
        pids = self.stage_pids()
        pids["loader"] = [p.pid for p in procs]
        profiler = None
        if a.profile and rate == a.profile_rate and not quiet:
            profiler = self.start_profiler(a.profile, pids[a.profile], duration, start_at)

        conn = await asyncpg.connect(self.dsn, server_settings={"search_path": self.schema})
        pending: dict[str, tuple[str, datetime, float]] = {}
        visible: list[float] = []
        accepted_samples = 0
        results: list[dict] = []
        cpu0: dict[str, int] = {}
        cpu_t0 = None
        lag: dict[str, int] = {}
        load_end = start_at + duration
        drain_deadline = None
        try:
            while True:
                now = time.time()
                if cpu_t0 is None and now >= start_at:
                    cpu0 = {k: cpu_ticks(v) for k, v in pids.items()}
                    machine0 = machine_ticks()
                    cpu_t0 = now
                with contextlib.suppress(queue.Empty):
                    while True:
                        for hit_id, table, created_ms, t202 in samples_q.get_nowait():
                            pending[hit_id] = (table, datetime.fromtimestamp(created_ms / 1000, UTC), t202)
                            accepted_samples += 1
                with contextlib.suppress(queue.Empty):
                    while True:
                        results.append(results_q.get_nowait())
                if pending:
                    seen_at = time.time()
                    for table in ("pageviews", "events"):
                        keys = [(h, v[1]) for h, v in pending.items() if v[0] == table]
                        if not keys:
                            continue
                        rows = await conn.fetch(
                            f"SELECT t.h::text AS h FROM unnest($1::timestamptz[], $2::uuid[]) AS t(o, h) "
                            f"WHERE EXISTS (SELECT 1 FROM {table} x WHERE x.occurred_at = t.o AND x.hit_id = t.h)",
                            [k[1] for k in keys], [k[0] for k in keys])
                        for r in rows:
                            visible.append(seen_at - pending.pop(r["h"])[2])
                if len(results) == len(procs):
                    if drain_deadline is None:
                        drain_deadline = time.monotonic() + a.drain
                        cpu1 = {k: cpu_ticks(v) for k, v in pids.items()}
                        machine1 = machine_ticks()
                        cpu_t1 = time.time()
                        lag = await self.lags()
                    if not pending:
                        break
                    if time.monotonic() > drain_deadline:
                        break
                elif time.time() > load_end + 60:
                    raise RuntimeError("the load generator did not finish")
                await asyncio.sleep(0.1)
            drained = time.monotonic() - (drain_deadline - a.drain) if drain_deadline else float("nan")
            # Let the pipeline empty before the next rate (bounded).
            lag_deadline = time.monotonic() + a.drain
            while time.monotonic() < lag_deadline:
                current = await self.lags()
                if not any(current.values()):
                    break
                await asyncio.sleep(0.5)
        finally:
            await conn.close()
            for p in procs:
                p.join(5)
                if p.is_alive():
                    p.kill()
        if profiler is not None:
            self.finish_profiler(profiler)
        self.pipeline.check_alive()

        step = Step(rate)
        latencies = [x for r in results for x in r["latencies"]]
        accepted = sum(r["accepted"] for r in results)
        step.accepted_rate = accepted / duration
        step.statuses = dict(sum((Counter(r["statuses"]) for r in results), Counter()))
        step.http_p50, step.http_p99 = pct(latencies, 50), pct(latencies, 99)
        step.samples = accepted_samples
        step.unseen = len(pending)
        if visible:
            unseen_as = [float("inf")] * len(pending)
            step.vis_p50, step.vis_p99 = pct(visible + unseen_as, 50), pct(visible + unseen_as, 99)
        step.lag = lag
        wall = max(1e-9, cpu_t1 - cpu_t0) if cpu_t0 else 1.0
        step.cpu = {k: 100.0 * (cpu1[k] - cpu0[k]) / CLK_TCK / wall for k in cpu0}
        busy = 100.0 * (machine1[0] - machine0[0]) / CLK_TCK / wall
        # CPU used by everything else on the machine (other test runs, benchmarks): the table is
        # only comparable between runs where this stays near zero.
        step.cpu["others"] = max(0.0, busy - sum(step.cpu.values()))
        step.cpu["machine"] = busy
        step.drained_s = drained
        return step

    # -- profiling --

    def start_profiler(self, stage: str, pids: list[int], duration: float, start_at: float) -> Any:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            print("py-spy is not installed (pip install py-spy): no profile", file=sys.stderr)
            return None
        out = OUT / f"e2e-profile-{stage}.txt"
        cmd = [spy, "record", "--pid", str(pids[0]), "--duration", str(int(max(3, duration - 2))), "--rate", "200",
               "--format", "raw", "--output", str(out), "--nonblocking"]
        if stage == "edge":
            cmd.append("--subprocesses")
        delay = max(0.0, start_at + 1.0 - time.time())
        proc = subprocess.Popen(["sh", "-c", f"sleep {delay:.2f}; exec " + " ".join(cmd)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return proc, out

    def finish_profiler(self, profiler: tuple[subprocess.Popen, Path]) -> None:
        proc, out = profiler
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            return
        if not out.exists():
            print(f"py-spy wrote nothing: {err.decode()[-500:]}", file=sys.stderr)
            return
        self.profile_report = summarize_profile(out)
        print(self.profile_report)


def summarize_profile(path: Path, top: int = 18) -> str:
    """Self and inclusive samples per function from py-spy's raw (collapsed) stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [re.sub(r" \(/.*?/(site-packages|lib/python3\.\d+|main)/", " (", f) for f in stack.split(";")]
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    lines = [f"profile {path.name}: {total} samples", "  self%  function"]
    lines += [f"  {100 * n / total:5.1f}  {f}" for f, n in own.most_common(top)]
    lines += ["  incl%  function"]
    lines += [f"  {100 * n / total:5.1f}  {f}" for f, n in inclusive.most_common(top * 2) if not f.startswith("process ")
              and not f.startswith("thread ")][:top]
    return "\n".join(lines)


def row(step: Step) -> str:
    lag = " ".join(f"{k}={v}" for k, v in step.lag.items())
    cpu = " ".join(f"{k}={v:.0f}" for k, v in step.cpu.items())
    bad = {k: v for k, v in step.statuses.items() if k != "202"}
    return (f"{step.target:>6} {step.accepted_rate:>9.0f} {step.http_p50 * 1000:>7.1f} {step.http_p99 * 1000:>7.1f} "
            f"{step.vis_p50:>7.2f} {step.vis_p99:>7.2f} {step.samples:>6} {step.unseen:>5}  "
            f"{'SATURATED' if step.saturated else 'ok':9}  lag[{lag}] cpu%[{cpu}]" + (f" refused{bad}" if bad else ""))


HEADER = (f"{'target':>6} {'accepted':>9} {'http50':>7} {'http99':>7} {'vis50':>7} {'vis99':>7} {'sampl':>6} "
          f"{'unseen':>5}  status     (hits/s; HTTP ms; visibility s; lag in records when the load stopped)")


async def amain(args: argparse.Namespace) -> int:
    bench = Bench(args)
    config = f"edges={args.edges} sessionizers={args.sessionizers} sinks={args.sinks} partitions={args.partitions} " \
             f"batch={args.batch} loaders={args.loaders} duration={args.duration}s"
    print(f"e2e load: {config}; {os.cpu_count()} cores; topic prefix {bench.prefix}, schema {bench.schema}", flush=True)
    try:
        await bench.setup()
        await bench.warm_up()
        print(HEADER, flush=True)
        saturated_in_a_row = 0
        for rate in args.rates:
            step = await bench.step(rate)
            bench.steps.append(step)
            print(row(step), flush=True)
            saturated_in_a_row = saturated_in_a_row + 1 if step.saturated else 0
            if saturated_in_a_row >= 2 and not args.all:
                break
    finally:
        await bench.teardown()
    best = max((s for s in bench.steps if not s.saturated), key=lambda s: s.accepted_rate, default=None)
    print(f"highest unsaturated rate: {best.target if best else 'none'} hits/s ({config})")
    OUT.mkdir(parents=True, exist_ok=True)
    record = {"config": vars(args) | {"rates": args.rates}, "at": datetime.now(UTC).isoformat(),
              "steps": [s.__dict__ | {"saturated": s.saturated} for s in bench.steps],
              "profile": getattr(bench, "profile_report", None)}
    with (OUT / "e2e_load.jsonl").open("a") as f:
        f.write(json.dumps(record, default=str) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], default=[500, 1000, 2000, 3500, 5000, 7000])
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load per rate")
    p.add_argument("--drain", type=float, default=30.0, help="longest wait for rows/lag after a step")
    p.add_argument("--batch", type=int, default=10, help="hits per request")
    p.add_argument("--edges", type=int, default=1, help="edge (uvicorn) worker processes")
    p.add_argument("--sessionizers", type=int, default=1)
    p.add_argument("--sinks", type=int, default=1)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--loaders", type=int, default=1, help="load generator processes")
    p.add_argument("--connections", type=int, default=64, help="keep-alive connections, over all loaders")
    p.add_argument("--sample", type=int, default=10, help="track the visibility of one hit in N")
    p.add_argument("--all", action="store_true", help="run every rate even after saturation")
    p.add_argument("--profile", choices=["edge", "sessionizer", "sink"], help="py-spy this stage during --profile-rate")
    p.add_argument("--profile-rate", type=int, default=3500)
    p.add_argument("--keep-logs", action="store_true", help="keep the components' logs under bench/out/e2e_load/")
    args = p.parse_args(argv)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
