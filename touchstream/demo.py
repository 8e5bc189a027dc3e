"""`touchstream demo`: the whole pipeline on this machine, with synthetic traffic, in minutes.

Brings up the local stack (or uses `TOUCHSTREAM_KAFKA_BOOTSTRAP`/`TOUCHSTREAM_PG_DSN` when
set), creates the topics, migrates, starts the edge, a sessionizer worker and a sink worker as
separate processes, posts realistic traffic over HTTP, waits until every accepted hit is in
PostgreSQL, and prints what an analyst would look at first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import httpx
from tqdm import tqdm

from schemas.settings import KafkaSettings, PostgresSettings
from schemas.timefmt import iso
from schemas.topics import create_topics
from touchstream.pipeline import Pipeline
from touchstream.traffic import TrafficShape, generate, requests


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="touchstream demo", description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=300, help="synthetic devices (default 300, about 3,000 hits)")
    p.add_argument("--days", type=float, default=3.0, help="the traffic spans this many days up to now")
    p.add_argument("--seed", type=int, default=None, help="traffic seed (default: new devices each run)")
    p.add_argument("--keep-running", action="store_true",
                   help="leave the edge, sessionizer and sink running beside the dashboard (until Ctrl-C)")
    p.add_argument("--timeout", type=float, default=300.0, help="longest wait for the rows to land, in seconds")
    p.add_argument("--dashboard-port", type=int, default=None,
                   help="port of the dashboard the demo starts (default 8050, or a free one when it is taken)")
    return p


def _dashboard_port(wanted: int | None) -> int:
    if wanted is not None:
        return wanted
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", 8050))
            return 8050
        except OSError:
            pass
    from touchstream.pipeline import free_port

    return free_port()


async def _serve_dashboard(pipeline: Pipeline, port: int | None, keep_pipeline: bool) -> None:
    """Starts the dashboard and keeps it (and, with --keep-running, the pipeline) up until Ctrl-C when a
    terminal is attached; with none (scripts, CI) it returns at once and everything stops."""
    if not keep_pipeline:
        for name in ("ingest", "sessionizer-0", "sink-0"):
            if name in pipeline.components:
                pipeline.components[name].stop()
    chosen = _dashboard_port(port)
    pipeline.add_dashboard(chosen)
    url = f"http://127.0.0.1:{chosen}/overview?period=7d"
    print(f"\ndashboard: {url}", flush=True)
    if not sys.stdin.isatty():
        print("no terminal attached: the demo stops here (run it in a terminal to keep the dashboard up)")
        return
    what = "the pipeline and the dashboard keep" if keep_pipeline else "the dashboard keeps"
    print(f"{what} running; stop with Ctrl-C", flush=True)
    while True:
        await asyncio.sleep(3600)


def _settings() -> tuple[KafkaSettings, PostgresSettings]:
    """The user's settings when given; otherwise the local stack, started if needed."""
    if "TOUCHSTREAM_KAFKA_BOOTSTRAP" in os.environ and "TOUCHSTREAM_PG_DSN" in os.environ:
        return KafkaSettings(), PostgresSettings()
    from touchstream.devstack import ensure_up

    print("starting the local stack (Kafka + PostgreSQL) ...", flush=True)
    info = ensure_up()
    return KafkaSettings(kafka_bootstrap=info.kafka_bootstrap), PostgresSettings(pg_dsn=info.pg_dsn)


def _psql_target(dsn: str) -> str:
    """What to hand psql: the user's own DSN by its variable (it may hold a password, never
    printed); the local stack's as it is (its password is the documented dev one)."""
    if os.environ.get("TOUCHSTREAM_PG_DSN") == dsn:
        return '"$TOUCHSTREAM_PG_DSN"'
    return f"'{dsn}'"


async def _send(edge: str, hits: list[dict]) -> set[str]:
    """Post the traffic as browsers would (one user agent per request); return accepted hit ids."""
    accepted: set[str] = set()
    batches = list(requests(hits, window=200))
    bar = tqdm(total=len(hits), unit="hit", desc="sending", file=sys.stdout)
    async with httpx.AsyncClient(base_url=edge, timeout=30.0) as client:
        for ua, batch in batches:
            for attempt in range(20):
                response = await client.post("/v1/hits", json=batch, headers={"User-Agent": ua})
                if response.status_code != 503:
                    break
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
            body = response.json()
            if response.status_code not in (202, 400):
                raise RuntimeError(f"the edge answered {response.status_code}: {body}")
            refused = {r["index"] for r in body.get("rejected", [])}
            accepted.update(h["hit_id"] for i, h in enumerate(batch) if i not in refused)
            bar.update(len(batch))
    bar.close()
    return accepted


async def _wait_landed(conn: asyncpg.Connection, hit_ids: set[str], timeout: float) -> int:
    """Until every accepted hit is a pageview, event or late hit row (SPEC section 6)."""
    ids = list(hit_ids)
    bar = tqdm(total=len(ids), unit="hit", desc="landing", file=sys.stdout)
    deadline = time.monotonic() + timeout
    landed = 0
    while time.monotonic() < deadline:
        landed = await conn.fetchval(
            """SELECT (SELECT count(*) FROM pageviews WHERE hit_id = ANY($1::uuid[]))
                    + (SELECT count(*) FROM events WHERE hit_id = ANY($1::uuid[]))
                    + (SELECT count(*) FROM late_hits WHERE hit_id = ANY($1::uuid[]))""",
            ids,
        )
        bar.update(landed - bar.n)
        if landed >= len(ids):
            break
        await asyncio.sleep(1.0)
    bar.close()
    return landed


async def _wait_folded(conn: asyncpg.Connection, timeout: float) -> datetime | None:
    """Until the sink has folded every row committed so far into the dashboard's rollups (its drain
    runs every TOUCHSTREAM_SINK_ROLLUP_INTERVAL_S): their `as_of`, or None after `timeout`."""
    since = await conn.fetchval("SELECT clock_timestamp()")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        as_of = await conn.fetchval("SELECT as_of FROM rollup_state")
        if as_of >= since:
            return as_of
        await asyncio.sleep(0.5)
    return None


async def _summary(conn: asyncpg.Connection, guids: list[str]) -> str:
    from touchstream.report import attribution_table, channel_summary

    row = await conn.fetchrow(
        """SELECT count(*) AS sessions,
                  count(*) FILTER (WHERE status = 'open') AS open,
                  count(*) FILTER (WHERE status = 'closed') AS closed,
                  count(*) FILTER (WHERE is_bot) AS bots,
                  count(DISTINCT guid) AS devices,
                  coalesce(sum(pageviews), 0) AS pageviews,
                  coalesce(sum(events), 0) AS events
           FROM sessions WHERE guid = ANY($1::uuid[])""",
        guids,
    )
    conversions = await conn.fetch(
        "SELECT conversion_name, count(*) AS n FROM conversions WHERE guid = ANY($1::uuid[]) GROUP BY 1 ORDER BY 1", guids
    )
    lines = [
        "",
        f"this run: {row['devices']} devices, {row['sessions']} sessions "
        f"({row['closed']} closed, {row['open']} still open, {row['bots']} from crawlers), "
        f"{row['pageviews']} pageviews, {row['events']} events; conversions: "
        + (", ".join(f"{r['conversion_name']} {r['n']}" for r in conversions) or "none"),
        "",
        "sessions by channel (all data in the database):",
        await channel_summary(conn),
        "",
        "attribution of conversions by channel (all data in the database):",
        await attribution_table(conn, by="channel"),
    ]
    return "\n".join(lines)


async def _run(args: argparse.Namespace) -> int:
    kafka, pg = _settings()
    await create_topics(kafka.kafka_bootstrap, kafka.topic_prefix, kafka.partitions)
    workdir = Path(os.environ.get("TOUCHSTREAM_DEMO_DIR", ".stack/demo")) / datetime.now().strftime("%Y%m%d-%H%M%S")
    pipeline = Pipeline(
        workdir=workdir,
        kafka_bootstrap=kafka.kafka_bootstrap,
        pg_dsn=pg.pg_dsn,
        topic_prefix=kafka.topic_prefix,
        pg_schema=pg.pg_schema,
        partitions=kafka.partitions,
        # Traffic older than the edge's max hit age (31 days) would be refused: a longer demo is a backfill.
        extra_env={} if args.days <= 30 else {"TOUCHSTREAM_INGEST_MAX_HIT_AGE_DAYS": str(args.days + 1),
                                             "TOUCHSTREAM_SINK_MAX_ROW_AGE_DAYS": str(int(args.days) + 14)},
    )
    print(f"starting edge, sessionizer and sink (logs in {workdir}) ...", flush=True)
    started = time.monotonic()
    try:
        pipeline.start()
        print(f"edge ready at {pipeline.edge_url} after {time.monotonic() - started:.1f}s", flush=True)
        now = datetime.now(timezone.utc)
        seed = args.seed if args.seed is not None else int(time.time())
        hits = generate(now - timedelta(days=args.days), TrafficShape(devices=args.devices, span=timedelta(days=args.days)), seed)
        hits = [h for h in hits if h["created_at"] <= iso(now)]  # the tracker never sends the future
        accepted = await _send(pipeline.edge_url, hits)
        pipeline.check_alive()
        conn = await asyncpg.connect(pg.pg_dsn, server_settings={"search_path": pg.pg_schema})
        try:
            landed = await _wait_landed(conn, accepted, args.timeout)
            pipeline.check_alive()
            guids = sorted({h["guid"] for h in hits})
            print(await _summary(conn, guids))
            folded = await _wait_folded(conn, min(args.timeout, 60.0))
            print(f"\ndashboard figures as of {folded.astimezone(timezone.utc):%H:%M:%S} UTC (the sink folds new rows in every few seconds)"
                  if folded else "\nthe sink has not folded the rows into the dashboard's figures yet", flush=True)
        finally:
            await conn.close()
        elapsed = time.monotonic() - started
        print(
            f"\n{len(accepted)} hits accepted, {landed} landed in PostgreSQL, {elapsed:.0f}s in all.\n"
            "Sessions still open close after 30 minutes without hits; their rows update in place.\n\n"
            "Look around:\n"
            f"  psql {_psql_target(pg.pg_dsn)}\n"
            "    SELECT channel, count(*) FROM sessions GROUP BY 1 ORDER BY 2 DESC;\n"
            "    SELECT * FROM attribution_report WHERE dimension = 'channel' AND model = 'linear';\n"
            "  touchstream report --by campaign      touchstream report --chart attribution.png\n"
            f"  touchstream journey {guids[0]}"
        )
        if landed < len(accepted):
            print(f"\nonly {landed} of {len(accepted)} hits landed within {args.timeout:.0f}s", file=sys.stderr)
            return 1
        if args.keep_running:
            print(f"\nthe pipeline keeps running: edge {pipeline.edge_url}", flush=True)
        await _serve_dashboard(pipeline, args.dashboard_port, args.keep_running)
        return 0
    finally:
        pipeline.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so `finally` stops every process the demo started


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    import signal

    # A closed terminal (SIGHUP) or `kill` (SIGTERM) must not leave the dashboard or the pipeline behind.
    for sig in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 130
