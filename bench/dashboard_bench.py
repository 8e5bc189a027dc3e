"""Dashboard API at volume, beside the same questions asked straight of the views (not a test).

    .venv/bin/python bench/dashboard_bench.py [--devices 470000] [--rounds 20] [--view-rounds 3]
                                              [--schema dashbench] [--reuse] [--keep]

Loads a synthetic 90-day history into a throw-away schema (bench/dashboard_history.sql, generated
inside PostgreSQL): by default about 1.05M sessions, 10.3M pageviews + events and 100k+
conversions. Rows not written by the sink's writer queue nothing for the rollups, so the load ends
with `rollup_rebuild()` (timed). Then, to time the sink's drain at this volume, `--drain-devices`
devices chosen at random are queued with their conversions, as the writer queues them after a
batch, and drained with sink.rollups.drain (timed; the answers compared below are read after it,
so they check the drain too). Then starts
`touchstream dashboard` on a free port and, for every API endpoint and a 7-, 30- and 90-day range
ending today, times `--rounds` HTTP requests (p50, p95), and times `--view-rounds` runs of the
same question asked of the tables and views (dashboard/baseline.py) in the same run, printing the
ratio views / API. Each endpoint's API answer is also compared with the views' answer (exact).

Needs the local stack (`touchstream stack up`) or TOUCHSTREAM_PG_DSN. --reuse keeps a loaded
schema from an earlier --keep run; without --keep the schema is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dashboard import api, baseline, queries  # noqa: E402
from dashboard.params import today  # noqa: E402
from sink.migrations import migrate  # noqa: E402
from sink.rollups import drain  # noqa: E402
from touchstream.pipeline import free_port  # noqa: E402

HISTORY = Path(__file__).resolve().parent / "dashboard_history.sql"
# (label, endpoint function, extra parameters)
CASES = [
    ("summary", "summary", {}),
    ("timeseries sessions", "timeseries", {"metric": "sessions"}),
    ("timeseries devices", "timeseries", {"metric": "devices"}),
    ("timeseries pageviews", "timeseries", {"metric": "pageviews"}),
    ("timeseries conversions", "timeseries", {"metric": "conversions"}),
    ("top landing pages", "top", {"dimension": "landing_page"}),
    ("top campaigns", "top", {"dimension": "campaign"}),
    ("attribution by channel", "attribution", {"group_by": "channel"}),
    ("attribution by campaign", "attribution", {"group_by": "campaign"}),
    ("attribution by module", "attribution", {"group_by": "module"}),
    # per person: the person rollups (migration 0012); "views" is the attribution_person_* views
    ("attribution per person", "attribution", {"group_by": "channel", "by": "person"}),
    ("attribution person campaign", "attribution", {"group_by": "campaign", "by": "person"}),
    ("conversions daily", "conversions_daily", {}),
    ("conversions by channel", "conversions_by_channel", {}),
    ("conversions by module", "conversions_by_module", {}),
    ("sessions page 1", "sessions", {}),
    ("sessions, campaign filter", "sessions", {"campaign": "spring_lease", "page": 3}),
]
JOURNEY = [("journey sessions", "journey_sessions"), ("journey credits", "journey_credits")]


def dsn() -> str:
    if os.environ.get("TOUCHSTREAM_PG_DSN"):
        return os.environ["TOUCHSTREAM_PG_DSN"]
    from touchstream.devstack import ensure_up

    return ensure_up().pg_dsn


async def load(conn: asyncpg.Connection, devices: int, chunks: int) -> None:
    days = [today() - timedelta(days=n) for n in range(-2, 93)]
    for parent in ("pageviews", "events"):
        await conn.execute("SELECT ensure_day_partitions($1, $2::date[])", parent, days)
    template = HISTORY.read_text()
    step = -(-devices // chunks)
    for first in range(1, devices + 1, step):
        last = min(devices, first + step - 1)
        started = time.monotonic()
        async with conn.transaction():
            await conn.execute(template.format(first=first, last=last))
        print(f"  devices {first:,}-{last:,} loaded in {time.monotonic() - started:.0f}s", flush=True)
    await conn.execute("ANALYZE")
    started = time.monotonic()
    await conn.execute("SELECT rollup_rebuild()")
    print(f"  rollup_rebuild(): {time.monotonic() - started:.0f}s", flush=True)
    await conn.execute("ANALYZE")


async def make_persons(conn: asyncpg.Connection, schema: str, share: int) -> None:
    """Persons for the per-person question: about one device in `share`, joined in pairs by a shared
    user id, merged by person_link() as the sink's writer merges new identities, then the drain of
    what the merges queued for the person rollups (migration 0012), timed."""
    # (from sessions: the history's SQL fills no `devices` rows, only the sink's writer does)
    await conn.execute(
        "INSERT INTO identities (guid, user_id, first_seen, last_seen) "
        "SELECT guid, 'person-' || (row_number() OVER (ORDER BY guid) / 2), min(started_at), max(started_at) "
        "FROM sessions GROUP BY guid HAVING abs(hashtext(guid::text)) % $1 = 0", share)
    started = time.perf_counter()
    await conn.execute("SELECT person_link(array_agg(guid ORDER BY user_id, guid), array_agg(user_id ORDER BY user_id, "
                       "guid), array_agg(NULL::uuid)) FROM identities")
    merged = time.perf_counter() - started
    persons = await conn.fetchrow("SELECT count(*) AS devices, count(DISTINCT person_id) AS persons FROM person_devices")
    done = await drain(conn, schema)
    assert done is not None
    print(f"persons: {persons['persons']:,} of {persons['devices']:,} devices, merged by person_link() in "
          f"{merged:.2f} s; the drain of what the merges queued: {done.seconds:.2f} s ({done.steps} transaction(s))",
          flush=True)


async def drain_sample(conn: asyncpg.Connection, schema: str, devices: int) -> None:
    """Queue `devices` random devices and their conversions (what the writer queues for a batch that
    touched them), then fold them with the sink's drain, timed."""
    if devices <= 0:
        return
    # (from sessions: the history's SQL fills no `devices` rows, only the sink's writer does)
    await conn.execute("INSERT INTO rollup_pending_devices SELECT guid FROM (SELECT DISTINCT guid FROM sessions) d "
                       "ORDER BY random() LIMIT $1", devices)
    await conn.execute("INSERT INTO rollup_pending_conversions SELECT c.converted_at, c.conversion_hit_id "
                       "FROM rollup_conversions c JOIN rollup_pending_devices p ON p.guid = c.guid")
    done = await drain(conn, schema)
    assert done is not None
    print(f"drain at this volume: {done.devices:,} devices + {done.conversions:,} conversion keys in "
          f"{done.seconds:.2f} s ({done.steps} transaction(s); {done.sessions:,} sessions found changed)", flush=True)


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p * len(ordered)) - 1))] * 1000


async def time_api(client: httpx.AsyncClient, url: str, params: dict, rounds: int) -> tuple[list[float], dict]:
    samples, body = [], {}
    for _ in range(rounds):
        started = time.perf_counter()
        response = await client.get(url, params=params)
        samples.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise SystemExit(f"{url} {params}: {response.status_code} {response.text[:500]}")
        body = response.json()
        body.pop("as_of")  # how fresh the rollups are; the views' answer is live
    return samples, body


async def time_views(conn: asyncpg.Connection, endpoint: api.Endpoint, params: dict, rounds: int) -> tuple[list[float], dict]:
    q = await queries.resolved(conn, endpoint.query.parse({k: str(v) for k, v in params.items()}))
    samples, doc = [], {}
    for _ in range(rounds):
        started = time.perf_counter()
        table = await endpoint.answer(conn, q, baseline)
        samples.append(time.perf_counter() - started)
        doc = json.loads(api.to_json(api.document(table, q)))
    return samples, doc


def start_dashboard(pg_dsn: str, schema: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "TOUCHSTREAM_PG_DSN": pg_dsn, "TOUCHSTREAM_PG_SCHEMA": schema}
    proc = subprocess.Popen([sys.executable, "-m", "touchstream.cli", "dashboard", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the dashboard did not start within 30 s")


async def measure(args: argparse.Namespace, conn: asyncpg.Connection, port: int) -> list[tuple]:
    guid = await conn.fetchval("SELECT guid::text FROM rollup_conversions GROUP BY guid ORDER BY count(*) DESC, guid LIMIT 1")
    cases = [(label, fn, extra, days) for label, fn, extra in CASES for days in (7, 30, 90)]
    cases += [(label, fn, {"guid": guid}, 90) for label, fn in JOURNEY]
    rows = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        for label, fn, extra, days in cases:
            endpoint = api.BY_FUNCTION[fn]
            params = {"period": "custom", "from": (today() - timedelta(days=days - 1)).isoformat(),
                      "to": today().isoformat(), **extra}
            api_s, api_doc = await time_api(client, endpoint.url, params, args.rounds)
            view_s, view_doc = await time_views(conn, endpoint, params, args.view_rounds)
            same = "yes" if api_doc == view_doc else "NO"
            rows.append((label, days, pct(api_s, .5), pct(api_s, .95), pct(view_s, .5), pct(view_s, .95), same))
            r = rows[-1]
            print(f"  {label:<27} {days:>3}d  API p50 {r[2]:8.1f} ms  p95 {r[3]:8.1f} ms   views p50 {r[4]:9.1f} ms  "
                  f"p95 {r[5]:9.1f} ms   views/API {r[4] / r[2]:8.1f}x   same answer: {same}", flush=True)
    return rows


async def run(args: argparse.Namespace) -> int:
    pg = dsn()
    conn = await asyncpg.connect(pg, server_settings={"search_path": args.schema}, command_timeout=3600)
    try:
        loaded = args.reuse and await conn.fetchval("SELECT to_regclass('sessions') IS NOT NULL")
        if not loaded:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{args.schema}" CASCADE')
            print((await migrate(pg, args.schema)).summary(), flush=True)
            started = time.monotonic()
            await load(conn, args.devices, args.chunks)
            print(f"loaded in {time.monotonic() - started:.0f}s", flush=True)
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM identities)"):
            await make_persons(conn, args.schema, args.person_share)
        await drain_sample(conn, args.schema, args.drain_devices)  # (on a --reuse too: the answers check it)
        channels = await conn.fetchval("SELECT count(DISTINCT channel) FROM sessions")
        if channels < 10:  # a generator that lost its traffic mix would make every answer look cheap
            raise SystemExit(f"the history has {channels} channels, not 10: the generator is broken")
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM sessions) s, (SELECT count(*) FROM pageviews) p, "
            "(SELECT count(*) FROM events) e, (SELECT count(*) FROM conversions) c, "
            "(SELECT min(started_at)::date FROM sessions) f, (SELECT max(started_at)::date FROM sessions) l")
        print(f"history: {counts['s']:,} sessions, {counts['p']:,} pageviews + {counts['e']:,} events "
              f"= {counts['p'] + counts['e']:,} hits, {counts['c']:,} conversions, {counts['f']} to {counts['l']}",
              flush=True)
        port = free_port()
        proc = start_dashboard(pg, args.schema, port)
        try:
            rows = await measure(args, conn, port)
        finally:
            proc.terminate()
            proc.wait(10)
        worst = max(rows, key=lambda r: r[3])
        print(f"\nworst API p95: {worst[3]:.1f} ms ({worst[0]}, {worst[1]} days); target 300 ms: "
              f"{'met' if worst[3] <= 300 else 'NOT met'}; answers equal to the views': "
              f"{sum(r[6] == 'yes' for r in rows)}/{len(rows)}")
        return 0
    finally:
        if not args.keep:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{args.schema}" CASCADE')
        await conn.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=470_000, help="synthetic devices (470,000: ~1.05M sessions)")
    p.add_argument("--chunks", type=int, default=4, help="transactions the history is loaded in")
    p.add_argument("--rounds", type=int, default=20, help="HTTP requests per endpoint and range")
    p.add_argument("--view-rounds", type=int, default=3, help="runs of the views' query per endpoint and range")
    p.add_argument("--schema", default="dashbench", help="schema to load into (dropped at the end unless --keep)")
    p.add_argument("--drain-devices", type=int, default=20_000,
                   help="devices queued and drained after the load, timed (0: none)")
    p.add_argument("--person-share", type=int, default=10,
                   help="one device in N belongs to a person (two devices each) for the per-person question")
    p.add_argument("--reuse", action="store_true", help="use the schema as loaded by an earlier --keep run")
    p.add_argument("--keep", action="store_true", help="leave the schema for --reuse")
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
