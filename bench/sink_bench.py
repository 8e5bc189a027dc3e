"""Sink throughput, side by side with raw asyncpg COPY of the same rows (not a test).

    .venv/bin/python bench/sink_bench.py [--events 200000] [--sessions 50000] [--batch 5000]
                                         [--consumer-events 100000] [--rounds 3] [--drain-interval 5]
                                         [--conversion-pct 40] [--profile]

Needs the local stack (`touchstream stack up`) or TOUCHSTREAM_PG_DSN / TOUCHSTREAM_KAFKA_BOOTSTRAP.
Everything happens in a throw-away schema and topic prefix, removed afterwards.

What is measured (rows/s, each row of the table with the same rows):

    raw COPY, plain table         copy_records_to_table of the rows into an unpartitioned table of the
                                  same columns, no keys, no indexes; one transaction per batch (the floor)
                                  (events: the contenders alternate batch by batch; best of --rounds)
    raw COPY, same keys           the same into a table with the sink's primary key and indexes
    raw COPY, partitioned table   the same into a copy of the sink's table: day partitions, key, index
    sink write path               Writer.write(batch): COPY to staging + INSERT ... ON CONFLICT into
                                  the day-partitioned table, one transaction per batch
    ... without 0005              the same batches into a second schema migrated to 0004 only (main's
                                  tables, no dashboard rollups: nothing queued). The two schemas are
                                  written batch by batch in turn (which goes first alternates), so
                                  the with/without ratio is paired within this run
    sink write path, replay       the same batches again (everything conflicts; nothing is written)
    sessions: insert / upsert     Writer.write of session snapshots, new ones, then each one at a
                                  higher version (devices recomputed each time); with and without
                                  0005, paired the same way
    decode                        decode_batch (orjson + pydantic) of the same records, no database
    full consumer                 a SinkConsumer draining a pre-filled `events` topic into the database
                                  (from start: includes joining the group; from the first batch
                                  committed to the last): with 0005 its rollup drainer runs beside it
                                  as in production (every --drain-interval s); without, the 0004
                                  schema and no drainer. --rounds rounds, the order alternating; best
    rollups: drain                sink.rollups.drain of what a phase queued for the dashboard's rollups
                                  (migration 0005), timed apart from the write path that queued it:
                                  devices and conversion keys folded per second

`--profile` adds where the write path's time goes (client encode, staging COPY, INSERT, commit)
and a cProfile of decode.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from schemas.runtime import tune_gc  # noqa: E402
from schemas.settings import RuntimeSettings  # noqa: E402
from schemas.timefmt import UTC  # noqa: E402
from schemas.topics import Topics, create_topics, delete_topics  # noqa: E402
from schemas.wire import encode  # noqa: E402
from sink.batch import COLUMNS, Batch, TopicRoles, decode_batch  # noqa: E402
from sink.migrations import migrate, quote_ident  # noqa: E402
from sink.rollups import drain, queue_conversions, queue_devices  # noqa: E402
from sink.settings import SinkSettings  # noqa: E402
from sink.testing import FakeRecord, event, new_id, session  # noqa: E402
from sink.writer import Writer  # noqa: E402

ROLLUPS_VERSION = 5  # migration 0005, the dashboard's rollups: the baseline schema stops before it
T0 = datetime.now(UTC).replace(hour=8, minute=0, second=0, microsecond=0)


def services() -> tuple[str, str]:
    dsn = os.environ.get("TOUCHSTREAM_PG_DSN")
    bootstrap = os.environ.get("TOUCHSTREAM_KAFKA_BOOTSTRAP")
    if not (dsn and bootstrap):
        from touchstream.devstack import ensure_up

        info = ensure_up()
        dsn, bootstrap = dsn or info.pg_dsn, bootstrap or info.kafka_bootstrap
    return dsn, bootstrap


def event_records(n: int, topic: str, conversion_pct: int = 40) -> list[FakeRecord]:
    """Event-shaped records over ~3 days (so three day partitions), 2,000 devices; `conversion_pct`
    of them are conversions (`lead`, `appointment`), evenly spread."""
    guids = [new_id() for _ in range(2000)]
    sids = [new_id() for _ in range(2000)]
    names = ["chat_open", "floorplan_view", "gallery_swipe"]
    conversions = ["lead", "appointment"]
    out = []
    for i in range(n):
        d = i % 2000
        converts = (i * conversion_pct) // 100 != ((i + 1) * conversion_pct) // 100
        name = conversions[((i + 1) * conversion_pct // 100) % 2] if converts else names[i % 3]
        ev = event(name=name, guid=guids[d], session_id=sids[d],
                   occurred_at=T0 - timedelta(seconds=(n - i) * 200_000 // n),
                   properties={"unit": "2b", "beds": 2, "n": i})
        out.append(FakeRecord(topic, i % 8, i, guids[d].encode(), encode(ev)))
    return out


def session_records(n: int, topic: str, version: int, ids: list[tuple[str, str]]) -> list[FakeRecord]:
    out = []
    for i in range(n):
        sid, guid = ids[i]
        snap = session(session_id=sid, guid=guid, session_index=1 + i % 3, version=version, pageviews=version,
                       started_at=T0 - timedelta(hours=i % 300), channel=["Direct", "Email", "Paid Search"][i % 3],
                       last_seen_at=T0 - timedelta(hours=i % 300) + timedelta(minutes=version))
        out.append(FakeRecord(topic, i % 8, i, sid.encode(), encode(snap)))
    return out


def chunks(seq: list, size: int) -> list[list]:
    return [seq[i:i + size] for i in range(0, len(seq), size)]


async def raw_copy(conn: asyncpg.Connection, table: str, batches: list[Batch], source: str) -> float:
    started = time.perf_counter()
    for b in batches:
        async with conn.transaction():
            await conn.copy_records_to_table(table, records=b.rows[source], columns=COLUMNS[source])
    return time.perf_counter() - started


async def sink_write(writer: Writer, batches: list[Batch]) -> float:
    started = time.perf_counter()
    for b in batches:
        await writer.write(b)
    return time.perf_counter() - started


async def paired_write(with_: Writer, without: Writer, batches: list[Batch]) -> tuple[float, float]:
    """The same batches through both writers in turn, which goes first alternating batch by
    batch: (seconds with 0005, seconds without)."""
    spent = [0.0, 0.0]
    for i, b in enumerate(batches):
        for w in ((0, 1) if i % 2 == 0 else (1, 0)):
            spent[w] += await sink_write((with_, without)[w], [b])
    return spent[0], spent[1]


class Stopwatch:
    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, what: str) -> None:
        now = time.perf_counter()
        self.spent[what] = self.spent.get(what, 0.0) + now - self._last
        self._last = now

    def reset(self) -> None:
        self._last = time.perf_counter()


async def breakdown_events(writer: Writer, batches: list[Batch], fast: bool) -> dict[str, float]:
    """The events write path's statements one by one (run on an emptied table)."""
    conn = await writer.connection()
    watch = Stopwatch()
    for b in batches:
        await writer.partitions.ensure(conn, "events", b.days("events"))
        tx = conn.transaction()
        await tx.start()
        watch.reset()
        if fast:
            await conn.execute("SAVEPOINT s")
            await conn.copy_records_to_table("events", records=b.rows["events"], columns=COLUMNS["events"],
                                             schema_name=writer.schema)
            await conn.execute("RELEASE SAVEPOINT s")
            watch.lap("COPY into the partitioned table")
        else:
            await conn.copy_records_to_table(writer.stage("events"), records=b.rows["events"],
                                             columns=COLUMNS["events"], schema_name="pg_temp")
            watch.lap("staging COPY")
            await conn.execute(writer._sql["events"])
            watch.lap("INSERT ... ON CONFLICT")
        await queue_conversions(conn, writer.schema, b.rows["events"])
        watch.lap("rollup queue (conversion keys)")
        await tx.commit()
        watch.lap("commit")
    return watch.spent


async def breakdown_sessions(writer: Writer, batches: list[Batch]) -> dict[str, float]:
    """The sessions write path's statements one by one."""
    conn = await writer.connection()
    watch = Stopwatch()
    for b in batches:
        tx = conn.transaction()
        await tx.start()
        watch.reset()
        await conn.copy_records_to_table(writer.stage("sessions"), records=b.rows["sessions"],
                                         columns=COLUMNS["sessions"], schema_name="pg_temp")
        watch.lap("staging COPY")
        changed = await conn.fetch(writer._sql["sessions"])
        watch.lap("sessions upsert")
        guids = sorted({r[0] for r in changed})
        if guids:
            await queue_devices(conn, writer.schema, guids)
        watch.lap("rollup queue (devices)")
        created = {r[0] for r in await conn.fetch(writer._sql["devices_claim"], guids)} if guids else set()
        watch.lap("devices: create/lock")
        existing = [g for g in guids if g not in created]
        if existing:
            await conn.execute(writer._sql["devices_update"], existing)
        watch.lap("devices: recompute")
        await tx.commit()
        watch.lap("commit")
    return watch.spent


async def full_consumer(dsn: str, bootstrap: str, schema: str, n: int, batch: int,
                        drain_interval_s: float, conversion_pct: int) -> tuple[float, float]:
    """Pre-fill `events`, then time a SinkConsumer until every row is in the database (its rollup
    drainer on when `drain_interval_s` > 0)."""
    from aiokafka import AIOKafkaProducer

    from sink.consumer import SinkConsumer

    prefix = f"bench{uuid.uuid4().hex[:6]}."
    topics = Topics(prefix)
    await create_topics(bootstrap, prefix, 8)
    try:
        records = event_records(n, topics.events, conversion_pct)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                    linger_ms=20, max_batch_size=512 * 1024, compression_type="lz4")
        await producer.start()
        try:
            futures = []
            for r in records:
                futures.append(await producer.send(topics.events, r.value, key=r.key))
                if len(futures) >= 20_000:
                    await asyncio.gather(*futures)
                    futures.clear()
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        settings = SinkSettings(kafka_bootstrap=bootstrap, topic_prefix=prefix, pg_dsn=dsn, pg_schema=schema,
                                sink_group=f"{prefix}sink", sink_metrics_port=0, sink_max_records=batch,
                                sink_poll_timeout_ms=200, sink_migrate_on_start=False,
                                sink_rollup_interval_s=drain_interval_s)
        sink = SinkConsumer(settings)
        stop = asyncio.Event()
        conn = await asyncpg.connect(dsn)
        q = quote_ident(schema)
        await conn.execute(f"TRUNCATE {q}.events")
        started = time.perf_counter()
        task = asyncio.create_task(sink.run(stop))
        # Progress is read from the worker (records written and committed), not with count(*),
        # which would compete with the worker for PostgreSQL.
        first_row = None
        while sink.stats["records"] < n:
            if first_row is None and sink.stats["records"]:
                first_row = time.perf_counter()
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        finished = time.perf_counter()
        stop.set()
        await task
        assert await conn.fetchval(f"SELECT count(*) FROM {q}.events") == n
        await conn.close()
        # From the first row written: leaves out joining the group (a one-off of a second or two).
        return finished - started, finished - (first_row or started)
    finally:
        await delete_topics(bootstrap, topics.all())


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--sessions", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--consumer-events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the events comparison (best is shown)")
    parser.add_argument("--drain-interval", type=float, default=SinkSettings().sink_rollup_interval_s,
                        help="the full consumer's rollup drain interval (default: the sink's setting)")
    parser.add_argument("--conversion-pct", type=int, default=40, choices=range(0, 101), metavar="0-100",
                        help="share of the events that are conversions (40: the worst case for the rollup "
                             "queue; the dashboard bench's history has about 1.4 %% of its hits)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    tune_gc(RuntimeSettings())  # the collector's policy of a sink process (sink/__main__.py)

    dsn, bootstrap = services()
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    base = f"{schema}_0004"  # main's tables only: the write path without the dashboard's rollups
    roles = TopicRoles.from_prefix("bench.")
    print((await migrate(dsn, schema)).summary(), flush=True)
    print((await migrate(dsn, base, target=ROLLUPS_VERSION - 1)).summary(), flush=True)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    # The sink writes the events' value and currency (migration 0010's columns): the baseline has them too.
    await conn.execute(f"ALTER TABLE {quote_ident(base)}.events ADD COLUMN value numeric, ADD COLUMN currency text")
    writer = Writer(dsn, schema, role="touchstream_writer")
    base_writer = Writer(dsn, base, role="touchstream_writer")
    results: list[tuple[str, int, float, float | None]] = []  # (what, rows, seconds, raw seconds)
    notes: list[str] = []

    async def fold(phase: str) -> None:
        """Drain what `phase` queued for the rollups: its own row, so the write path's rows stay its own."""
        done = await drain(conn, schema)
        assert done is not None
        results.append((f"rollups: drain after {phase} (devices + conversion keys)", done.devices + done.conversions,
                        done.seconds, None))
        notes.append(f"drain after {phase}: {done.devices:,} devices, {done.conversions:,} conversion keys, "
                     f"{done.sessions:,} sessions changed, {done.steps} transaction(s), {done.seconds:.2f} s")

    def compare(what: str, with_s: float, without_s: float) -> None:
        notes.append(f"{what}: with 0005 {with_s:.2f} s, without {without_s:.2f} s: "
                     f"{with_s / without_s:.3f}x the time ({(with_s / without_s - 1) * 100:+.1f} %)")
    try:
        assert (await writer.connection()) and writer.queues_rollups
        assert (await base_writer.connection()) and not base_writer.queues_rollups
        # --- events ------------------------------------------------------------------------
        records = event_records(args.events, roles.events, args.conversion_pct)
        started = time.perf_counter()
        batches = [decode_batch(c, roles, now=T0) for c in chunks(records, args.batch)]
        decode_s = time.perf_counter() - started
        await conn.execute("CREATE TABLE raw_events (LIKE events INCLUDING DEFAULTS)")
        await conn.execute("CREATE TABLE raw_events_keyed (LIKE events INCLUDING DEFAULTS)")
        await conn.execute("ALTER TABLE raw_events_keyed ADD PRIMARY KEY (occurred_at, hit_id)")
        await conn.execute("CREATE INDEX ON raw_events_keyed (name)")
        days = set().union(*(b.days("events") for b in batches))
        for w in (writer, base_writer):
            await w.partitions.ensure(await w.connection(), "events", days)
        # warm-up (plans, codecs, caches) on a small slice, then empty everything
        await raw_copy(conn, "raw_events", batches[:1], "events")
        await paired_write(writer, base_writer, batches[:1])
        # The contenders alternate batch by batch, so a noisy neighbour (this machine is shared)
        # slows them alike; the best of --rounds rounds is reported.
        await conn.execute("CREATE TABLE raw_events_b (LIKE events INCLUDING DEFAULTS)")
        # The sink's own table shape (day partitions, keys, index), written by a bare COPY.
        await conn.execute("CREATE TABLE raw_events_part (LIKE events INCLUDING ALL) PARTITION BY RANGE (occurred_at)")
        for day in sorted(days):
            await conn.execute(f"CREATE TABLE raw_events_part_{day:%Y%m%d} PARTITION OF raw_events_part "
                               f"FOR VALUES FROM ('{day} 00:00+00') TO ('{day + timedelta(days=1)} 00:00+00')")
        keys = ("raw", "keyed", "part", "sink", "base", "raw_b", "replay", "base_replay")
        timings: dict[str, list[float]] = {k: [] for k in keys}
        q_base = quote_ident(base)
        for _ in range(args.rounds):
            await conn.execute(f"TRUNCATE raw_events, raw_events_keyed, raw_events_part, raw_events_b, events, "
                               f"rollup_pending_conversions, {q_base}.events")
            await conn.execute("CHECKPOINT")
            spent = dict.fromkeys(timings, 0.0)
            for b in batches:
                spent["raw"] += await raw_copy(conn, "raw_events", [b], "events")
                spent["keyed"] += await raw_copy(conn, "raw_events_keyed", [b], "events")
                spent["part"] += await raw_copy(conn, "raw_events_part", [b], "events")
                with_s, without_s = await paired_write(writer, base_writer, [b])
                spent["sink"] += with_s
                spent["base"] += without_s
            for b in batches:
                spent["raw_b"] += await raw_copy(conn, "raw_events_b", [b], "events")
                with_s, without_s = await paired_write(writer, base_writer, [b])
                spent["replay"] += with_s
                spent["base_replay"] += without_s
            for w in (writer, base_writer):
                w._merge_until.clear()  # the replay switched to merging for a while: start afresh
            assert await conn.fetchval("SELECT count(*) FROM events") == args.events
            assert await conn.fetchval(f"SELECT count(*) FROM {q_base}.events") == args.events
            for k, v in spent.items():
                timings[k].append(v)
        raw, raw_keyed, raw_part, sink, sink_base, raw_b, replay, replay_base = (min(timings[k]) for k in keys)
        results += [
            ("events: raw COPY, plain table", args.events, raw, raw),
            ("events: raw COPY, same keys + index", args.events, raw_keyed, raw),
            ("events: raw COPY, the sink's partitioned table", args.events, raw_part, raw),
            ("events: sink write path", args.events, sink, raw),
            ("events: sink write path, without 0005", args.events, sink_base, raw),
            ("events: sink write path, replay", args.events, replay, raw_b),
            ("events: sink write path, replay, without 0005", args.events, replay_base, raw_b),
            ("events: decode (no database)", args.events, decode_s, None),
        ]
        compare("events, sink write path", sink, sink_base)
        compare("events, replay", replay, replay_base)
        per_round = [f"{w / o:.3f}" for w, o in zip(timings["sink"], timings["base"])]
        notes.append(f"events, with/without 0005 per round: {', '.join(per_round)}")
        await fold("events")
        profiles: dict[str, tuple[int, dict[str, float]]] = {}
        if args.profile:
            await conn.execute("TRUNCATE events")
            profiles["events, fast path (new hits)"] = (args.events, await breakdown_events(writer, batches, True))
            profiles["events, merge path (after a replay)"] = (
                args.events, await breakdown_events(writer, batches, False))

        # --- sessions ----------------------------------------------------------------------
        ids = [(new_id(), new_id()) for _ in range(args.sessions)]
        v1 = [decode_batch(c, roles, now=T0) for c in chunks(session_records(args.sessions, roles.sessions, 1, ids),
                                                             args.batch)]
        v2 = [decode_batch(c, roles, now=T0) for c in chunks(session_records(args.sessions, roles.sessions, 2, ids),
                                                             args.batch)]
        await conn.execute("CREATE TABLE raw_sessions (LIKE sessions INCLUDING DEFAULTS)")
        await conn.execute("CHECKPOINT")
        raw_s = await raw_copy(conn, "raw_sessions", v1, "sessions")
        await conn.execute("CHECKPOINT")
        insert_s, insert_base = await paired_write(writer, base_writer, v1)
        upsert_s, upsert_base = await paired_write(writer, base_writer, v2)
        stale_s, stale_base = await paired_write(writer, base_writer, v1)
        for q in (quote_ident(schema), q_base):
            assert await conn.fetchval(f"SELECT count(*) FROM {q}.sessions WHERE version = 2") == args.sessions
            assert await conn.fetchval(f"SELECT count(*) FROM {q}.devices") == args.sessions
        if args.profile:
            v3 = [decode_batch(c, roles, now=T0)
                  for c in chunks(session_records(args.sessions, roles.sessions, 3, ids), args.batch)]
            profiles["sessions, higher versions"] = (args.sessions, await breakdown_sessions(writer, v3))
        await fold("sessions")
        results += [
            ("sessions: raw COPY, plain table", args.sessions, raw_s, raw_s),
            ("sessions: sink, new sessions (+devices)", args.sessions, insert_s, raw_s),
            ("sessions: sink, new sessions (+devices), without 0005", args.sessions, insert_base, raw_s),
            ("sessions: sink, higher versions (+devices)", args.sessions, upsert_s, raw_s),
            ("sessions: sink, higher versions (+devices), without 0005", args.sessions, upsert_base, raw_s),
            ("sessions: sink, stale versions (no-op)", args.sessions, stale_s, raw_s),
            ("sessions: sink, stale versions (no-op), without 0005", args.sessions, stale_base, raw_s),
        ]
        compare("sessions, new", insert_s, insert_base)
        compare("sessions, higher versions", upsert_s, upsert_base)
        compare("sessions, stale versions", stale_s, stale_base)

        # --- full consumer -----------------------------------------------------------------
        if args.consumer_events:
            runs: dict[str, list[tuple[float, float]]] = {"with": [], "without": []}
            for r in range(args.rounds):
                for which in (("with", "without") if r % 2 == 0 else ("without", "with")):
                    runs[which].append(await full_consumer(
                        dsn, bootstrap, schema if which == "with" else base, args.consumer_events, args.batch,
                        args.drain_interval if which == "with" else 0.0, args.conversion_pct))
            raw_n = raw * args.consumer_events / args.events
            (el_w, st_w), (el_o, st_o) = (min(runs[k], key=lambda t: t[1]) for k in ("with", "without"))
            results += [
                ("events: full consumer, start to last row", args.consumer_events, el_w, raw_n),
                ("events: full consumer, start to last row, without 0005", args.consumer_events, el_o, raw_n),
                ("events: full consumer, first to last row", args.consumer_events, st_w, raw_n),
                ("events: full consumer, first to last row, without 0005", args.consumer_events, st_o, raw_n),
            ]
            notes.append(f"full consumer: {el_w - st_w:.1f} s from start to the first row "
                         "(joining the group, the first fetch and batch)")
            compare("full consumer (drainer running), first to last row", st_w, st_o)
            await fold("the full consumer")
    finally:
        await writer.close()
        await base_writer.close()
        if conn.is_closed():  # e.g. PostgreSQL restarted under the benchmark
            conn = await asyncpg.connect(dsn)
        for q in (quote_ident(schema), quote_ident(base)):
            await conn.execute(f"DROP SCHEMA {q} CASCADE")
        await conn.close()

    width = max(len(r[0]) for r in results)
    print(f"\nbatches of {args.batch} rows; PostgreSQL {dsn.rsplit('@', 1)[-1]}\n")
    print(f"{'what':<{width}}  {'rows':>8}  {'seconds':>8}  {'rows/s':>9}  {'vs raw COPY':>11}")
    for what, rows, seconds, raw_seconds in results:
        ratio = f"{raw_seconds / seconds:10.2f}x" if raw_seconds else f"{'':>11}"
        print(f"{what:<{width}}  {rows:>8}  {seconds:>8.2f}  {rows / seconds:>9,.0f}  {ratio}")
    for note in notes:
        print(note)
    if args.profile:
        for name, (rows, spent) in profiles.items():
            total = sum(spent.values())
            print(f"\nwhere the time goes: {name} ({rows / total:,.0f} rows/s measured this way)")
            for what, seconds in spent.items():
                print(f"  {what:<34} {seconds:6.2f} s  {seconds / total:5.0%}")
        profiler = cProfile.Profile()
        profiler.enable()
        for c in chunks(records[: min(50_000, len(records))], args.batch):
            decode_batch(c, roles, now=T0)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(8)
        print("\ndecode profile (50,000 event records, top 8 by own time):")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:3000])
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
