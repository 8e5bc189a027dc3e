"""The dashboard's rollups (migration 0005), kept exact off the sink's write path.

Two halves:

    queue   in each batch's transaction the writer appends keys, nothing more: the devices whose
            sessions it inserted, updated or deleted (`rollup_pending_devices`, one prepared
            INSERT of an array) and the keys of the conversions among its events
            (`rollup_pending_conversions`, by COPY). Statement triggers of 0005 queue deletes and
            moves.
    drain   `RollupDrainer`, a task of every sink worker: every `sink_rollup_interval_s` one worker
            (a PostgreSQL advisory lock; the others skip that round) calls `rollup_drain()` in
            REPEATABLE READ transactions of its own, each folding at most `sink_rollup_batch`
            devices and conversion keys, until nothing queued is left. Then `rollup_state.as_of` is
            that last transaction's start.

So the dashboard's numbers are exact for every row committed before `as_of`, and `as_of` is at
most one interval (plus one drain) behind. The fold used to run in the batch's own transaction at
COMMIT and made the write path 2-16x slower (docs/dashboard.md has the figures of both designs).

It runs in the sink rather than the dashboard because the sink makes the queue: it drains it
whether or not a dashboard runs (so the queue stays small), with the writer role it already has,
while the dashboard stays read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from schemas.backoff import Backoff
from schemas.timefmt import UTC
from sink import metrics
from sink.batch import EVENT_COLUMNS, PAGEVIEW_COLUMNS, Row
from sink.connections import close_quietly, open_connection
from sink.migrations import quote_ident
from sink.settings import SinkSettings

log = logging.getLogger("touchstream.sink.rollups")

_AT, _HIT, _NAME = (EVENT_COLUMNS.index(c) for c in ("occurred_at", "hit_id", "name"))
_PV_AT, _PV_HIT, _PV_URL = (PAGEVIEW_COLUMNS.index(c) for c in ("occurred_at", "hit_id", "url"))


async def has_queue(conn: asyncpg.Connection, schema: str) -> bool:
    """Whether `schema` has the rollups' queue (migration 0005 applied)."""
    return await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{quote_ident(schema)}.rollup_pending_devices")


async def has_rules(conn: asyncpg.Connection, schema: str) -> bool:
    """Whether `schema` has conversion rules (migration 0010 applied)."""
    return await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{quote_ident(schema)}.conversion_rules")


async def queue_devices(conn: asyncpg.Connection, schema: str, guids: Sequence[str]) -> None:
    """Queue the devices whose sessions the batch changed: one prepared INSERT of an array (a COPY
    costs two round trips in asyncpg, the first to look the table's columns up)."""
    await conn.execute(f"INSERT INTO {quote_ident(schema)}.rollup_pending_devices (guid) SELECT unnest($1::uuid[])",
                       guids)


async def queue_conversions(conn: asyncpg.Connection, schema: str, rows: Sequence[Row]) -> int:
    """Queue the keys of the batch's events that are conversions; returns how many.

    The names are read in the batch's transaction after its rows are in, so a name being added
    meanwhile is either read here or waits for this transaction and finds the rows (0005's trigger
    on conversion_events takes a SHARE lock on events). Filtered here and sent by COPY: sending
    every row's key, name included, for PostgreSQL to filter cost 2-4x as much
    (docs/dashboard.md)."""
    q = quote_ident(schema)
    names = set(await conn.fetchval(f"SELECT coalesce(array_agg(name), '{{}}') FROM {q}.conversion_events"))
    keys = [(r[_AT], r[_HIT]) for r in rows if r[_NAME] in names]
    if keys:
        await conn.copy_records_to_table("rollup_pending_conversions", records=keys,
                                         columns=("converted_at", "conversion_hit_id"), schema_name=schema)
    return len(keys)


async def queue_url_conversions(conn: asyncpg.Connection, schema: str, rows: Sequence[Row]) -> int:
    """Queue the keys of the batch's pageviews that a conversion rule matches (migration 0010);
    returns how many.

    Without rules (the usual case) one small query and nothing sent. With rules, PostgreSQL matches
    the URLs (the LIKE the views and the drain use, so no second implementation can disagree). Read
    in the batch's transaction after its rows are in, like the names above: a rule being added
    meanwhile waits for this transaction (its trigger takes a SHARE lock on pageviews) and then finds
    these rows."""
    q = quote_ident(schema)
    if not rows or not await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {q}.conversion_rules)"):
        return 0
    status = await conn.execute(
        f"""INSERT INTO {q}.rollup_pending_conversions (converted_at, conversion_hit_id)
            SELECT k.at, k.id FROM unnest($1::timestamptz[], $2::uuid[], $3::text[]) k(at, id, url)
            WHERE EXISTS (SELECT 1 FROM {q}.conversion_rules r WHERE k.url LIKE r.url_pattern)""",
        [r[_PV_AT] for r in rows], [r[_PV_HIT] for r in rows], [r[_PV_URL] for r in rows])
    return int(status.rsplit(" ", 1)[-1])


@dataclass(frozen=True, slots=True)
class Drained:
    """What one drain folded: devices and conversion keys taken from the queue, sessions that
    changed, the transactions it took, and the rollups' freshness afterwards."""

    devices: int
    sessions: int
    conversions: int
    steps: int
    seconds: float
    as_of: datetime | None


async def drain(conn: asyncpg.Connection, schema: str, *, batch: int = 20_000, wait: bool = True) -> Drained | None:
    """Fold everything queued into the rollups, in transactions of at most `batch` devices and
    `batch` conversion keys.

    Holds the schema's drain lock at session level while it runs, so its snapshots are taken
    after the previous drain committed. `wait=False`: None at once when another drain holds it.
    """
    q = quote_ident(schema)
    take = "pg_advisory_lock" if wait else "pg_try_advisory_lock"
    if await conn.fetchval(f"SELECT {take}({q}.rollup_lock_key())") is False:
        return None
    unlock = f"SELECT pg_advisory_unlock({q}.rollup_lock_key())"
    try:
        done = await _steps(conn, q, batch)
    except BaseException:
        if not conn.is_closed():
            with contextlib.suppress(Exception):  # the caller sees the first error; a lost connection unlocks too
                await conn.execute(unlock)
        raise
    await conn.execute(unlock)
    return done


async def _steps(conn: asyncpg.Connection, q: str, batch: int) -> Drained:
    """rollup_drain() in REPEATABLE READ transactions until one leaves nothing queued."""
    started = time.perf_counter()
    devices = sessions = conversions = steps = 0
    while True:
        async with conn.transaction(isolation="repeatable_read"):
            step = await conn.fetchrow(f"SELECT * FROM {q}.rollup_drain($1)", batch)
        steps += 1
        devices += step["drained_devices"]
        sessions += step["changed_sessions"]
        conversions += step["drained_conversions"]
        if step["complete"]:
            return Drained(devices, sessions, conversions, steps, time.perf_counter() - started, step["fresh_as_of"])


class RollupDrainer:
    """A sink worker's drain task: `await run(stop)` drains every `interval_s` until `stop` is set,
    on a connection of its own (the writer's is busy with batches)."""

    def __init__(self, settings: SinkSettings) -> None:
        self.settings = settings
        self.schema = settings.pg_schema
        self.interval_s = settings.sink_rollup_interval_s
        self.batch = settings.sink_rollup_batch
        self.backoff = Backoff(settings.sink_retry_initial_s, settings.sink_retry_max_s)
        self._conn: asyncpg.Connection | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Drain at once (a backlog left by stopped workers), then every interval; once `stop` is
        set, one last time, so a worker stopping cleanly leaves its own rows folded."""
        try:
            while not stop.is_set():
                delay = self.interval_s
                try:
                    await self.drain_once()
                    self.backoff.succeeded()
                except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    # Nothing is lost: the keys stay queued until a drain commits.
                    delay = max(self.backoff.failed(), min(delay, self.backoff.maximum))
                    metrics.ROLLUP_DRAINS.labels("failed").inc()
                    log.warning("rollup drain failed; retrying", extra={"error": f"{type(exc).__name__}: {exc}",
                                                                        "delay_s": delay})
                    await self.close()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            try:
                await self.drain_once()
            except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("last rollup drain failed; the keys stay queued for the next worker",
                            extra={"error": f"{type(exc).__name__}: {exc}"})
        finally:
            await self.close()

    async def drain_once(self) -> Drained | None:
        conn = await self.connection()
        done = await drain(conn, self.schema, batch=self.batch, wait=False)
        if done is None:
            metrics.ROLLUP_DRAINS.labels("skipped").inc()  # another worker is draining
            return None
        metrics.ROLLUP_DRAINS.labels("drained").inc()
        metrics.ROLLUP_DEVICES.inc(done.devices)
        metrics.ROLLUP_CONVERSIONS.inc(done.conversions)
        metrics.ROLLUP_DRAIN_SECONDS.observe(done.seconds)
        if done.as_of is not None:
            metrics.ROLLUP_AGE.set((datetime.now(UTC) - done.as_of).total_seconds())
        if done.devices or done.conversions:
            log.debug("rollups drained", extra={"devices": done.devices, "sessions": done.sessions,
                                                "conversions": done.conversions, "steps": done.steps,
                                                "seconds": round(done.seconds, 3)})
        return done

    async def connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            s = self.settings
            self._conn = await open_connection(
                s.pg_dsn, role=s.pg_writer_role if s.sink_set_role else None, connect_timeout=s.sink_connect_timeout_s,
                command_timeout=s.sink_command_timeout_s, application_name="touchstream-sink-rollups")
        return self._conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        await close_quietly(conn)
