"""What 200 slowloris connections cost the edge's normal clients: an edge whose read deadlines
are all equal (`TOUCHSTREAM_INGEST_READ_TIMEOUT_SPREAD=0`, the baseline) against one that spreads
them (the default), measured in the same run, in alternating turns.

    .venv/bin/python bench/slowloris_bench.py [--rounds 2] [--seconds 25] [--connections 200]
                                              [--client raw|httpx] [--spread 0.2]

Each turn, for one edge: 4 well-behaved clients post single hits for `--seconds` alone, then
again for `--seconds` while `tests/e2e/slowloris.py` (a process of its own) holds
`--connections` slow connections (half trickling headers, half a body). Printed per turn: the
clients' p50/p99 alone and under the attack, the edge's CPU under the attack, and the 408s;
then the medians over the rounds. `--client httpx` measures with httpx instead of the plain
keep-alive client of `tests.e2e.slowloris.normal_clients` (httpx's own CPU then weighs in).

Both edges run on the dev stack's broker (`touchstream stack up`, started when needed), on
topics of a fresh prefix deleted at the end. The machine is whatever it is at the time: the
figures of one run compare its edges, not runs made at other times.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from schemas.topics import create_topics  # noqa: E402
from tests.conftest import delete_topics_with_prefix  # noqa: E402
from tests.e2e.slowloris import normal_clients  # noqa: E402
from touchstream.devstack import ensure_up  # noqa: E402
from touchstream.devstack.process import free_port  # noqa: E402

SITE = "www.oakridge-apts.com"


def hit() -> dict[str, str]:
    return {"hit_id": str(uuid.uuid4()), "guid": str(uuid.uuid4()), "url": f"https://{SITE}/floorplans",
            "title": "Floor plans"}


async def httpx_clients(port: int, seconds: float, clients: int = 4) -> list[float]:
    """The abuse test's former clients: httpx, keep-alive, a hit at a time, 10 ms apart."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10,
                                 limits=httpx.Limits(max_connections=clients)) as client:
        async def one() -> None:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                response = await client.post("/v1/hits", content=orjson.dumps(hit()),
                                             headers={"content-type": "application/json"})
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 202, response.text
                await asyncio.sleep(0.01)

        await asyncio.gather(*(one() for _ in range(clients)))
    return latencies


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000


class Edge:
    def __init__(self, name: str, spread: float, bootstrap: str, prefix: str, workdir: Path) -> None:
        self.name, self.port = name, free_port()
        env = {**os.environ, "TOUCHSTREAM_KAFKA_BOOTSTRAP": bootstrap, "TOUCHSTREAM_TOPIC_PREFIX": prefix,
               "TOUCHSTREAM_INGEST_READ_TIMEOUT_SPREAD": str(spread), "TOUCHSTREAM_LOG_LEVEL": "warning"}
        self.log = open(workdir / f"{name}.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "ingest", "--port", str(self.port)], env=env,
                                     cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    async def ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://127.0.0.1:{self.port}/readyz")).status_code == 200:
                        return
                if self.proc.poll() is not None:
                    raise SystemExit(f"edge {self.name} exited; see its log")
                await asyncio.sleep(0.3)
        raise SystemExit(f"edge {self.name} not ready in {timeout:.0f}s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


async def turn(edge: Edge, args: argparse.Namespace) -> dict[str, Any]:
    async def clients() -> list[float]:
        if args.client == "httpx":
            return await httpx_clients(edge.port, args.seconds)
        return await normal_clients("127.0.0.1", edge.port, args.seconds, hit)

    quiet = await clients()
    slow = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.e2e.slowloris", "127.0.0.1", str(edge.port), str(args.connections), cwd=REPO,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert slow.stdin is not None and slow.stdout is not None
    try:
        assert await asyncio.wait_for(slow.stdout.readline(), 30) == b"ready\n"
        cpu, wall = cpu_seconds(edge.proc.pid), time.monotonic()
        loaded = await clients()
        cpu = (cpu_seconds(edge.proc.pid) - cpu) / (time.monotonic() - wall)
        slow.stdin.close()
        report = json.loads(await asyncio.wait_for(slow.stdout.readline(), 30))
    finally:
        if slow.returncode is None:
            slow.kill()
        await slow.wait()
    return {"quiet": quiet, "loaded": loaded, "cpu": cpu, "answers": Counter(report["answers"])}


async def main(args: argparse.Namespace) -> None:
    info = ensure_up()
    prefix = f"slowbench{uuid.uuid4().hex[:6]}."
    await create_topics(info.kafka_bootstrap, prefix, 4)
    workdir = REPO / "bench" / "out"
    workdir.mkdir(parents=True, exist_ok=True)
    edges = [Edge("equal-deadlines", 0.0, info.kafka_bootstrap, prefix, workdir),
             Edge("spread-deadlines", args.spread, info.kafka_bootstrap, prefix, workdir)]
    results: dict[str, list[dict[str, Any]]] = {e.name: [] for e in edges}
    try:
        for e in edges:
            await e.ready()
            await normal_clients("127.0.0.1", e.port, 2, hit)  # warm-up
        for n in range(args.rounds):
            for e in (edges if n % 2 == 0 else edges[::-1]):
                r = await turn(e, args)
                results[e.name].append(r)
                print(f"round {n + 1} {e.name:17} alone p50 {p(r['quiet'], 50):5.1f} p99 {p(r['quiet'], 99):6.1f} ms | "
                      f"200 slow p50 {p(r['loaded'], 50):5.1f} p99 {p(r['loaded'], 99):6.1f} ms "
                      f"({len(r['loaded'])} requests) | edge CPU {r['cpu']:.3f} cores | {dict(r['answers'])} | "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        for e in edges:
            e.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(delete_topics_with_prefix(info.kafka_bootstrap, prefix), 60)
    print(f"\nmedians over {args.rounds} rounds ({args.client} client, {args.connections} slow connections, "
          f"{args.seconds:.0f} s per phase; shared machine):")
    for name, rs in results.items():
        med = lambda key, q: statistics.median(p(r[key], q) for r in rs)  # noqa: E731
        print(f"  {name:17} alone p99 {med('quiet', 99):6.1f} ms | under attack p50 {med('loaded', 50):5.1f} "
              f"p99 {med('loaded', 99):6.1f} ms | edge CPU {statistics.median(r['cpu'] for r in rs):.3f} cores")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=25.0, help="each phase (longer than the 10 s deadline)")
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw")
    parser.add_argument("--spread", type=float, default=0.2)
    asyncio.run(main(parser.parse_args()))
