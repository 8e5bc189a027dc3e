"""Benchmark of the ingest edge against a bare ASGI app, both under uvicorn (uvloop,
httptools, 1 worker), with `wrk` on loopback as the load generator.

    .venv/bin/python bench/ingest_bench.py [--rounds 3] [--duration 15] [--single-connections 64]
                                           [--batch-connections 16] [--wait-quiet 120]
                                           [--ablation] [--profile]

What it does, bounded in time and count (every wrk run has a fixed duration; servers are
stopped at the end, pass or fail):

1. brings the dev stack up (the real broker) and creates its own topics (deleted afterwards);
2. starts both apps (bare `bench/asgi_hello.py` and the edge `touchstream ingest`), then for
   each round, each scenario (single-hit requests, 100-hit batches) and each app in turn: a
   short warm-up, then a measured wrk run over pre-built, realistic request bodies (10,000
   devices, tracker-like hits with hit_id). Alternating keeps a shared machine's drift out of
   the ratios; with `--rounds N` the summary gives medians and every round's ratio;
3. for the edge, checks that Kafka really has the hits: the growth of the `hits` topic's end
   offsets must equal the accepted hits the edge reported;
4. prints a table: requests/s, accepted hits/s, p50/p99 latency, CPU of the server process,
   machine load, and the edge/bare ratio per scenario (the median of the rounds' ratios).

`--ablation` also measures the edge app with a publisher that acknowledges at once
(`bench/asgi_edge_nokafka.py`): bare -> no-kafka -> edge separates what the edge's own request
handling costs from what publishing to Kafka adds.

`--pin` runs every server on CPU 0 and wrk on CPU 1 (`taskset`; the broker is left where the
kernel puts it), so each app has one core to itself, as "per core" means, and never shares it
with the load generator. (On the 2-core development machine the edge's batches gained 10-25 %
in 3 alternating pairs; the spread between runs stayed about as wide.)

`--profile` runs the edge under pyinstrument (pip install pyinstrument) and writes the
report to bench/out/ingest-profile.txt.

wrk is installed with apt-get when missing (Debian package `wrk`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from schemas.internals import partitions_of  # noqa: E402
from schemas.timefmt import from_ms, iso  # noqa: E402
from schemas.topics import Topics, create_topics, delete_topics  # noqa: E402
from touchstream.devstack import ensure_up  # noqa: E402
from touchstream.devstack.process import apt_install, free_port  # noqa: E402

OUT = REPO / "bench" / "out"
PAGES = ("/", "/floorplans", "/amenities", "/gallery", "/contact", "/apply", "/pricing")
SITES = ("www.oakridge-apts.com", "www.maple-court.com", "www.riverside-lofts.com")
REFERRERS = ("", "https://www.google.com/", "https://www.facebook.com/", "https://www.apartments.com/listing/123")
QUERIES = (
    "",
    "",
    "",
    "?utm_source=google&utm_medium=cpc&utm_campaign=spring&gclid={click}",  # a new click id per hit, as ads give
    "?utm_source=newsletter&utm_medium=email",
)
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"

LUA = """
local file = "%(file)s"
local reqs = {}
local i = 0
init = function(args)
  local headers = {["Content-Type"] = "application/json", ["User-Agent"] = "%(ua)s"}
  for line in io.lines(file) do
    reqs[#reqs + 1] = wrk.format("POST", "/v1/hits", headers, line)
  end
  i = math.random(#reqs)
end
request = function()
  i = i + 1
  if i > #reqs then i = 1 end
  return reqs[i]
end
"""


# --- bodies -----------------------------------------------------------------------------------


def make_bodies(count: int, hits_per_body: int, devices: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    guids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(devices)]
    base_ms = 1_772_442_000_000
    bodies = []
    for _ in range(count):
        hits = []
        for _ in range(hits_per_body):
            created = base_ms + rng.randrange(0, 3_600_000)  # as the tracker sends them: ISO 8601 with Z
            hit = {
                "guid": rng.choice(guids),
                "hit_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "type": "pageview",
                "url": f"https://{rng.choice(SITES)}{rng.choice(PAGES)}"
                       + rng.choice(QUERIES).format(click="EAIaIQobChMI%016x" % rng.getrandbits(64)),
                "referrer": rng.choice(REFERRERS),
                "title": "Luxury apartments - floor plans and pricing",
                "created_at": iso(from_ms(created)),
                "sent_at": iso(from_ms(created + rng.randrange(0, 2000))),
            }
            if rng.random() < 0.1:
                hit["type"] = "event"
                hit["event"] = {
                    "name": rng.choice(["lead", "appointment", "click"]),
                    "module": "contact_form",
                    "properties": {"unit": "2B", "beds": 2},
                }
            hits.append(hit)
        bodies.append(orjson.dumps(hits[0] if hits_per_body == 1 else hits))
    return bodies


# --- processes --------------------------------------------------------------------------------


def wrk_bin() -> str:
    found = shutil.which("wrk")
    if not found:
        apt_install(["wrk"], "wrk is missing (the benchmark's load generator)")
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is not installed and could not be installed")
    return found


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    base: str
    log: Path


def start_server(name: str, cmd: list[str], env: dict[str, str], port: int, ready_path: str) -> Server:
    OUT.mkdir(parents=True, exist_ok=True)
    log = OUT / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited during start-up; see {log}:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(base + ready_path, timeout=2).status_code in (200, 202):
                return Server(name, proc, base, log)
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"{name} not ready within 60 s; see {log}")
        time.sleep(0.2)


def stop_server(server: Server, sig: int = signal.SIGTERM) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(sig)
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


# --- measuring --------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not match:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass
class Result:
    app: str
    scenario: str
    requests: int
    seconds: float
    non2xx: int
    errors: str
    p50_ms: float
    p99_ms: float
    hits_per_request: int
    server_cpu: float  # share of one core
    machine_busy: float  # share of all cores
    load: float
    kafka_records: int | None = None
    edge_accepted: int | None = None
    round: int = 1

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def hits_per_s(self) -> float:
        return (self.requests - self.non2xx) * self.hits_per_request / self.seconds

    @property
    def cpu_us_per_hit(self) -> float:
        """Server CPU time per accepted hit: what the edge costs, less sensitive to machine load."""
        return self.server_cpu * 1e6 / max(self.hits_per_s, 1e-9)


def run_wrk(wrk: list[str], base: str, lua: Path, connections: int, seconds: int) -> dict[str, object]:
    cmd = [
        *wrk,
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(lua),
        base + "/v1/hits",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    out = run.stdout
    requests = re.search(r"(\d+) requests in ([\d.]+)(s|m)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)$", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)$", out, re.M)
    if not (requests and p50 and p99):
        raise SystemExit(f"unreadable wrk output (exit {run.returncode}):\n{out}\n{run.stderr}")
    seconds_run = float(requests.group(2)) * (60 if requests.group(3) == "m" else 1)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests": int(requests.group(1)),
        "seconds": seconds_run,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "errors": errors.group(1).strip() if errors else "",
        "p50": _ms(p50.group(1)),
        "p99": _ms(p99.group(1)),
    }


async def end_offsets(bootstrap: str, topic: str) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = await partitions_of(consumer, topic)
        offsets = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return sum(offsets.values())
    finally:
        await consumer.stop()


def edge_accepted(base: str) -> int:
    text = httpx.get(base + "/metrics", timeout=10).text
    match = re.search(r"^ingest_hits_accepted_total ([\d.e+]+)$", text, re.M)
    return int(float(match.group(1))) if match else 0


def measure(
    wrk: list[str],
    server: Server,
    app: str,
    scenario: str,
    lua: Path,
    hits_per_request: int,
    connections: int,
    seconds: int,
    bootstrap: str,
    topic: str,
) -> Result:
    run_wrk(wrk, server.base, lua, connections, 3)  # warm-up (caches, JIT-free but allocator, Kafka batches)
    is_edge = app == "edge"
    if is_edge:
        time.sleep(0.5)
        offsets0, accepted0 = asyncio.run(end_offsets(bootstrap, topic)), edge_accepted(server.base)
    load = os.getloadavg()[0]
    cpu0, busy0 = cpu_seconds(server.proc.pid), machine_busy()
    wall0 = time.monotonic()
    raw = run_wrk(wrk, server.base, lua, connections, seconds)
    wall = time.monotonic() - wall0
    cpu1, busy1 = cpu_seconds(server.proc.pid), machine_busy()
    result = Result(
        app=app,
        scenario=scenario,
        requests=raw["requests"],
        seconds=raw["seconds"],
        non2xx=raw["non2xx"],  # type: ignore[arg-type]
        errors=raw["errors"],
        p50_ms=raw["p50"],
        p99_ms=raw["p99"],
        hits_per_request=hits_per_request,  # type: ignore[arg-type]
        server_cpu=(cpu1 - cpu0) / wall,
        machine_busy=(busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
        load=load,
    )
    if is_edge:
        time.sleep(1.0)  # in-flight requests of the run finish
        result.kafka_records = asyncio.run(end_offsets(bootstrap, topic)) - offsets0
        result.edge_accepted = edge_accepted(server.base) - accepted0
    return result


def wait_quiet(limit: float, within: float) -> None:
    deadline = time.monotonic() + within
    while os.getloadavg()[0] > limit and time.monotonic() < deadline:
        time.sleep(5)


APPS = ("bare", "no-kafka", "edge")  # what the harness can run, cheapest first


# --- report -----------------------------------------------------------------------------------


def table(results: list[Result]) -> str:
    head = (
        f"{'scenario':<10} {'app':<8} {'round':>5} {'req/s':>9} {'hits/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}"
        f" {'srv CPU':>8} {'CPU us/hit':>10} {'machine':>8} {'load1':>6}  kafka check"
    )
    lines = [head, "-" * len(head)]
    for r in sorted(results, key=lambda r: (r.scenario, r.app, r.round)):
        check = ""
        if r.kafka_records is not None:
            ok = r.kafka_records == r.edge_accepted
            check = f"{r.kafka_records} records for {r.edge_accepted} accepted {'OK' if ok else 'MISMATCH'}"
        lines.append(
            f"{r.scenario:<10} {r.app:<8} {r.round:>5} {r.rps:>9,.0f} {r.hits_per_s:>10,.0f} {r.p50_ms:>8.2f}"
            f" {r.p99_ms:>8.2f} {r.non2xx:>8} {r.server_cpu:>7.0%} {r.cpu_us_per_hit:>10.1f}"
            f" {r.machine_busy:>8.0%} {r.load:>6.2f}  {check}"
        )
    lines.append("")
    for scenario in dict.fromkeys(r.scenario for r in results):
        runs = {app: [r for r in results if r.scenario == scenario and r.app == app] for app in APPS}
        bare, no_kafka, edge = runs["bare"], runs["no-kafka"], runs["edge"]
        if edge:
            lines.append(
                f"{scenario}: edge median {statistics.median(r.hits_per_s for r in edge):,.0f} hits/s"
                f" ({statistics.median(r.cpu_us_per_hit for r in edge):.1f} us CPU/hit) over {len(edge)} run(s)"
            )
        for name, top, base in (("edge/bare", edge, bare), ("no-kafka/bare", no_kafka, bare), ("edge/no-kafka", edge, no_kafka)):
            if top and base:
                per_round = [t.hits_per_s / b.hits_per_s for b, t in zip(base, top, strict=False)]
                lines.append(
                    f"{scenario}: {name} = {statistics.median(per_round):.2f} (median of per-round ratios:"
                    f" {', '.join(f'{x:.2f}' for x in per_round)}), p50 {statistics.median(r.p50_ms for r in top):.2f}"
                    f" vs {statistics.median(r.p50_ms for r in base):.2f} ms"
                )
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------------


def serve_profiled(port: int, out: Path) -> int:
    """Run the edge in this process under pyinstrument; write the report on SIGINT."""
    import uvicorn
    from pyinstrument import Profiler

    from ingest.__main__ import app_from_env

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    try:
        uvicorn.run(
            app_from_env(),
            host="127.0.0.1",
            port=port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            log_level="warning",
        )
    except KeyboardInterrupt:
        pass
    finally:
        profiler.stop()
        out.write_text(profiler.output_text(unicode=True, color=False, show_all=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds of each measured run")
    parser.add_argument("--single-connections", type=int, default=64)
    parser.add_argument("--batch-connections", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure every app and scenario N times, alternating; medians are reported"
    )
    parser.add_argument("--wait-quiet", type=float, default=0, help="wait up to N s for load1 < 1.0 first")
    parser.add_argument("--only", choices=["bare", "edge"], help="run one app only")
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="also measure the edge app without Kafka (bench/asgi_edge_nokafka.py): how much is the edge's own"
        " request handling and how much is publishing",
    )
    parser.add_argument(
        "--compression",
        choices=["none", "snappy", "lz4", "zstd", "gzip"],
        help="the edge's Kafka compression (default: its settings default)",
    )
    parser.add_argument(
        "--pin", action="store_true", help="servers on CPU 0, wrk on CPU 1 (taskset): one core to each server"
    )
    parser.add_argument("--scenario", choices=["single", "batch"], help="run one scenario only")
    parser.add_argument("--profile", action="store_true", help="profile the edge with pyinstrument (the scenarios run: see --scenario)")
    parser.add_argument("--serve-profiled", nargs=2, metavar=("PORT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_profiled:
        return serve_profiled(int(args.serve_profiled[0]), Path(args.serve_profiled[1]))

    wrk = [wrk_bin()]
    server_prefix: list[str] = []
    if args.pin:
        if (os.cpu_count() or 1) < 2 or not shutil.which("taskset"):
            raise SystemExit("--pin needs 2 cores and taskset (util-linux)")
        server_prefix, wrk = ["taskset", "-c", "0"], ["taskset", "-c", "1", *wrk]
    info = ensure_up()
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    topics = Topics(prefix)
    asyncio.run(create_topics(info.kafka_bootstrap, prefix, 8))
    work = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    scenarios = []
    for scenario, hits, count, conns in (
        ("single", 1, 20_000, args.single_connections),
        (f"batch{args.batch_size}", args.batch_size, 300, args.batch_connections),
    ):
        if args.scenario == "batch" and hits == 1 or args.scenario == "single" and hits > 1:
            continue
        data = work / f"{scenario}.txt"
        data.write_bytes(b"\n".join(make_bodies(count, hits, 10_000, seed=hits)) + b"\n")
        lua = work / f"{scenario}.lua"
        lua.write_text(LUA % {"file": data, "ua": UA})
        scenarios.append((scenario, hits, lua, conns))

    python = sys.executable
    env = {**os.environ, "TOUCHSTREAM_KAFKA_BOOTSTRAP": info.kafka_bootstrap, "TOUCHSTREAM_TOPIC_PREFIX": prefix}
    if args.compression:
        env["TOUCHSTREAM_INGEST_COMPRESSION"] = args.compression
    # uvicorn's command line with the settings `touchstream ingest` runs with (ingest.__main__).
    uvicorn_cmd = [python, "-m", "uvicorn", "--app-dir", "bench"]
    uvicorn_settings = ["--loop", "uvloop", "--http", "httptools", "--workers", "1", "--no-access-log"]
    uvicorn_settings += ["--no-server-header", "--no-proxy-headers", "--log-level", "warning"]
    uvicorn_settings += ["--timeout-keep-alive", "30", "--backlog", "4096"]
    apps = []
    if args.only != "edge" and not args.profile:
        apps.append(("bare", [*uvicorn_cmd, "asgi_hello:app", *uvicorn_settings], "/"))
    if args.ablation and not args.only and not args.profile:
        apps.append(("no-kafka", [*uvicorn_cmd, "--factory", "asgi_edge_nokafka:app", *uvicorn_settings], "/readyz"))
    if args.only != "bare":
        edge_cmd = [python, "-m", "ingest", "--log-level", "warning"]
        if args.profile:
            edge_cmd = [
                python,
                str(Path(__file__).resolve()),
                "--serve-profiled",
                "{port}",
                str(OUT / "ingest-profile.txt"),
            ]
        apps.append(("edge", edge_cmd, "/readyz"))

    if args.wait_quiet:
        wait_quiet(1.0, args.wait_quiet)
    load_before = os.getloadavg()
    results: list[Result] = []
    servers: dict[str, Server] = {}
    try:
        # Every server is up for the whole run and the measurements alternate between them,
        # round after round: drift of a shared machine then hits both sides of a ratio alike.
        for app, cmd, ready in apps:
            port = free_port()
            full = [c.replace("{port}", str(port)) for c in cmd]
            if "--serve-profiled" not in full:
                full += ["--port", str(port)]
            servers[app] = start_server(app, [*server_prefix, *full], env, port, ready)
        for round_no in range(1, args.rounds + 1):
            for scenario, hits, lua, conns in scenarios:
                for app, server in servers.items():
                    result = measure(
                        wrk, server, app, scenario, lua, hits, conns, args.duration, info.kafka_bootstrap, topics.hits
                    )
                    result.round = round_no
                    results.append(result)
                    print(
                        f"  round {round_no} {app:8} {scenario:9} {result.hits_per_s:>10,.0f} hits/s"
                        f"  p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms  (server CPU {result.server_cpu:.0%})",
                        flush=True,
                    )
    finally:
        for server in servers.values():
            stop_server(server, signal.SIGINT if args.profile else signal.SIGTERM)
        asyncio.run(delete_topics(info.kafka_bootstrap, topics.all()))
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    print()
    print(
        f"machine: {os.cpu_count()} cores; load average before {load_before[0]:.2f}/{load_before[1]:.2f}/"
        f"{load_before[2]:.2f}, after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} (1/5/15 min)"
    )
    print(
        f"wrk -t1, {args.duration} s per run after a 3 s warm-up; single: {args.single_connections} connections,"
        f" batches of {args.batch_size}: {args.batch_connections} connections; broker on the same machine"
        + ("; pinned: servers on CPU 0, wrk on CPU 1" if args.pin else "; not pinned")
    )
    print()
    print(table(results))
    if args.profile:
        print(f"\nprofile: {OUT / 'ingest-profile.txt'}")
    bad = [r for r in results if r.kafka_records is not None and r.kafka_records != r.edge_accepted]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
