"""The write step: one `Batch` -> PostgreSQL in one transaction.

    COPY every table's rows into a temporary staging table (binary COPY, `copy_records_to_table`),
    then one `INSERT ... SELECT ... ON CONFLICT` per table:

    pageviews, events   DO NOTHING on (occurred_at, hit_id): a replayed hit lands once
    sessions            DO UPDATE ... WHERE excluded.version > sessions.version: only forward
    devices             recomputed from `sessions` for the devices whose sessions changed
    late_hits           DO NOTHING on hit_id
    deadletter          DO NOTHING on the consumed (topic, partition, offset)
    session_retractions a session merged away by a late hit (SPEC rule 6): its row is deleted
                        where its version is lower, and the retraction kept (upserted to a higher
                        version) so no older snapshot brings it back; a snapshot is upserted only
                        over a lower retraction, which it then replaces
    moves, move_ranges  UPDATE pageviews/events SET session_id by primary key (or, for a range,
                        by device, old session and time), after the batch's own rows are in
    identities,         (migration 0009) DO UPDATE only to move first_seen earlier or last_seen
    device_links        later (linked_at earlier); the edges new to the table are then merged
                        into `person_devices` by person_link(), last in the transaction (it
                        takes the schema's person lock: held from there to the commit only)
    rollup queue        the keys the dashboard's rollups must fold (sink.rollups): the devices
                        recomputed above, and the batch's events that are conversions

pageviews and events first try a plain COPY straight into the table inside a savepoint: new
hits (the normal case) then cost what a raw COPY costs. When a row is there already (a replay
or a rebalance) the COPY fails on the primary key, the savepoint is rolled back and the batch
takes the staging path; later batches keep taking it for `merge_cooldown_s`, since replays come
in runs. Either way the result is the same rows.

Errors are sorted into the two kinds the caller acts on:

- `Unavailable` (connection lost, server shutting down, deadlock, out of resources, ...): the
  batch is retried as a whole, with backoff, on a new connection. Nothing was committed, or the
  part that was is idempotent.
- `RejectedByDatabase` (SQLSTATE classes 22 data exception and 23 integrity violation, or a
  value asyncpg cannot encode): some row can never be written. `write_isolating` bisects the
  batch to find it and dead-letters it with PostgreSQL's reason; the rest is written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable
from datetime import datetime

import asyncpg

from schemas.backoff import Backoff
from schemas.errors import DatabaseUnavailable, FieldError, PartitionMissing, RejectedByDatabase, Unavailable
from schemas.internals import is_driver_data_error
from schemas.timefmt import UTC
from sink import metrics, rollups
from sink.batch import (
    COLUMNS,
    DAY_PARTITIONED,
    IDENTITY_TABLES,
    SESSION_COLUMNS,
    STAGED_ONLY,
    TABLES,
    Batch,
    refusal_row,
)
from sink.migrations import quote_ident
from sink.partitions import DayPartitions
from sink.connections import close_quietly, open_connection

log = logging.getLogger("touchstream.sink.writer")

# SQLSTATE classes of errors about the data itself: retrying cannot help, isolating the row can.
DATA_CLASSES = frozenset({"22", "23"})


def classify(exc: BaseException) -> RejectedByDatabase | DatabaseUnavailable:
    """What a failed write means, as the typed error the caller acts on (`schemas.errors`):
    `RejectedByDatabase` (isolate the row), `PartitionMissing` (reload partitions, retry) or
    `DatabaseUnavailable` (retry the batch)."""
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        if state == "23514" and "no partition" in str(exc):
            return PartitionMissing(f"no day partition for a row: {exc}")  # not the row's fault
        if state[:2] in DATA_CLASSES:
            detail = getattr(exc, "detail", None)
            message = f"{exc}" + (f" ({detail})" if detail else "")
            return RejectedByDatabase(f"refused by PostgreSQL: {message}", [FieldError(f"sqlstate {state}", message)])
    elif _refused_by_the_driver(exc):
        return RejectedByDatabase(f"refused by the database driver: {exc}",
                                  [FieldError("row", f"{type(exc).__name__}: {exc}")])
    return DatabaseUnavailable(f"PostgreSQL write failed: {type(exc).__name__}: {exc}")


def _refused_by_the_driver(exc: BaseException) -> bool:
    """asyncpg's encoder refused a value (wrong type or shape) before sending it."""
    if is_driver_data_error(exc):
        return True
    return isinstance(exc, (ValueError, TypeError, OverflowError)) and not isinstance(exc, asyncpg.InterfaceError)


def _status_count(status: str) -> int:
    # "INSERT 0 42" -> 42
    try:
        return int(status.rsplit(" ", 1)[1])
    except (IndexError, ValueError):
        return 0


class Writer:
    """Owns one connection; `write` takes one batch to the database or raises a typed error."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        *,
        role: str | None = None,
        connect_timeout: float = 10.0,
        command_timeout: float = 120.0,
        application_name: str = "touchstream-sink",
        merge_cooldown_s: float = 60.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.role = role
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.application_name = application_name
        self.clock = clock
        self.partitions = DayPartitions(schema)
        self._conn: asyncpg.Connection | None = None
        self._reload_partitions = True
        self._sql = self._statements(quote_ident(schema))
        # pageviews/events: after a COPY hit an existing row, merge (staging + ON CONFLICT) until then.
        self._merge_until: dict[str, float] = {}
        self.merge_cooldown_s = merge_cooldown_s
        # Whether the schema has the dashboard's rollup queue (migration 0005), read at connect: the
        # sink migrates before it writes, so in production it always has; a schema migrated only to
        # 0004 (bench/sink_bench.py's baseline) is written without queueing.
        self.queues_rollups = False
        # Whether the schema has migration 0009's identity tables (read at connect, as above).
        self.keeps_identities = False
        self.queues_url_conversions = False  # conversion_rules (0010) exists

    # --- SQL ------------------------------------------------------------------------------

    @staticmethod
    def stage(table: str) -> str:
        return f"ts_stage_{table}"

    def _statements(self, q: str) -> dict[str, str]:
        def plain_insert(table: str, conflict: str) -> str:
            cols = ", ".join(COLUMNS[table])
            return (f"INSERT INTO {q}.{table} ({cols}) SELECT {cols} FROM pg_temp.{self.stage(table)} "
                    f"ON CONFLICT {conflict} DO NOTHING")

        session_cols = ", ".join(SESSION_COLUMNS)
        session_updates = ", ".join(f"{c} = excluded.{c}" for c in SESSION_COLUMNS if c != "session_id")
        device_cols = ("first_seen_at", "last_seen_at", "sessions", "first_session_id", "first_utm_source",
                       "first_utm_medium", "first_utm_campaign", "first_channel")
        # One row per device of $1: totals over all its sessions, first touch from the earliest.
        device_aggregate = (
            f"SELECT DISTINCT ON (s.guid) s.guid, min(s.started_at) OVER w AS first_seen_at, "
            f"max(s.last_seen_at) OVER w AS last_seen_at, (count(*) OVER w)::int AS sessions, "
            f"s.session_id AS first_session_id, s.utm_source AS first_utm_source, "
            f"s.utm_medium AS first_utm_medium, s.utm_campaign AS first_utm_campaign, s.channel AS first_channel "
            f"FROM {q}.sessions s WHERE s.guid = ANY($1::uuid[]) WINDOW w AS (PARTITION BY s.guid) "
            f"ORDER BY s.guid, s.started_at, s.session_index, s.session_id"
        )
        return {
            "pageviews": plain_insert("pageviews", "(occurred_at, hit_id)"),
            "events": plain_insert("events", "(occurred_at, hit_id)"),
            "late_hits": plain_insert("late_hits", "(hit_id)"),
            "deadletter": plain_insert(
                "deadletter", "(consumed_topic, consumed_partition, consumed_offset, consumed_timestamp)"
            ),
            # Sorted by session_id so two writers with overlapping batches (a rebalance) lock rows
            # in the same order.
            "sessions": (
                f"INSERT INTO {q}.sessions AS t ({session_cols}, updated_at) "
                f"SELECT {session_cols}, now() FROM pg_temp.{self.stage('sessions')} st "
                f"WHERE NOT EXISTS (SELECT 1 FROM {q}.session_retractions r "
                f"WHERE r.session_id = st.session_id AND r.version >= st.version) ORDER BY session_id "
                f"ON CONFLICT (session_id) DO UPDATE SET {session_updates}, updated_at = excluded.updated_at "
                f"WHERE excluded.version > t.version "
                f"RETURNING t.guid"
            ),
            # A snapshot of a higher version than a retraction of its id (a split gave it back).
            "retractions_superseded": (
                f"DELETE FROM {q}.session_retractions r USING pg_temp.{self.stage('sessions')} st "
                f"WHERE r.session_id = st.session_id AND r.version < st.version"
            ),
            "retract": (
                f"DELETE FROM {q}.sessions t USING pg_temp.{self.stage('session_retractions')} r "
                f"WHERE t.session_id = r.session_id AND t.version < r.version RETURNING t.guid"
            ),
            "session_retractions": (
                f"INSERT INTO {q}.session_retractions AS t (session_id, guid, merged_into, version) "
                f"SELECT r.session_id, r.guid, r.merged_into, r.version "
                f"FROM pg_temp.{self.stage('session_retractions')} r "
                f"WHERE NOT EXISTS (SELECT 1 FROM {q}.sessions s WHERE s.session_id = r.session_id "
                f"AND s.version > r.version) ORDER BY r.session_id "
                f"ON CONFLICT (session_id) DO UPDATE SET guid = excluded.guid, merged_into = excluded.merged_into, "
                f"version = excluded.version, retracted_at = now() WHERE excluded.version > t.version "
                f"RETURNING t.guid"
            ),
            **{
                f"moves_{table}": (
                    f"UPDATE {q}.{table} t SET session_id = m.session_id FROM pg_temp.{self.stage('moves')} m "
                    f"WHERE m.is_event = {str(table == 'events').lower()} AND t.occurred_at = m.occurred_at "
                    f"AND t.hit_id = m.hit_id AND t.session_id <> m.session_id"
                )
                for table in DAY_PARTITIONED
            },
            **{
                f"move_range_{table}": (
                    f"UPDATE {q}.{table} SET session_id = $5 WHERE guid = $1 AND session_id = $2 "
                    f"AND occurred_at BETWEEN $3 AND $4"
                )
                for table in DAY_PARTITIONED
            },
            # Devices are recomputed from sessions, so counts are exact under replays and
            # out-of-order snapshots. Sessions of one device may sit on different partitions (so on
            # different workers): the first statement creates the devices new to the table and
            # row-locks the others (DO UPDATE ... WHERE false locks without writing), in guid order;
            # a writer racing for the same device waits there, and the second statement (a new
            # snapshot under READ COMMITTED) then sees the other writer's committed sessions.
            # Row locks live in the tuples, so a batch of any size fits (advisory locks would fill
            # the shared lock table, max_locks_per_transaction x max_connections).
            "devices_claim": (
                f"INSERT INTO {q}.devices AS d (guid, {', '.join(device_cols)}, updated_at) "
                f"SELECT a.*, now() FROM ({device_aggregate}) a ORDER BY a.guid "
                f"ON CONFLICT (guid) DO UPDATE SET updated_at = d.updated_at WHERE false "
                f"RETURNING d.guid"
            ),
            # Edges new to the table come back as inserted (xmax = 0): only they can merge persons.
            "identities": (
                f"INSERT INTO {q}.identities AS t (guid, user_id, first_seen, last_seen) "
                f"SELECT guid, user_id, first_seen, last_seen FROM pg_temp.{self.stage('identities')} "
                f"ORDER BY guid, user_id ON CONFLICT (guid, user_id) DO UPDATE SET "
                f"first_seen = least(t.first_seen, excluded.first_seen), "
                f"last_seen = greatest(t.last_seen, excluded.last_seen) "
                f"WHERE excluded.first_seen < t.first_seen OR excluded.last_seen > t.last_seen "
                f"RETURNING t.guid, t.user_id, NULL::uuid, t.xmax = 0"
            ),
            "device_links": (
                f"INSERT INTO {q}.device_links AS t (guid, previous_guid, linked_at) "
                f"SELECT guid, previous_guid, linked_at FROM pg_temp.{self.stage('device_links')} "
                f"ORDER BY guid, previous_guid ON CONFLICT (guid, previous_guid) DO UPDATE SET "
                f"linked_at = excluded.linked_at WHERE excluded.linked_at < t.linked_at "
                f"RETURNING t.guid, NULL::text, t.previous_guid, t.xmax = 0"
            ),
            "person_link": f"SELECT {q}.person_link($1::uuid[], $2::text[], $3::uuid[])",
            "devices_update": (
                f"UPDATE {q}.devices AS d SET "
                + ", ".join(f"{c} = a.{c}" for c in device_cols)
                + f", updated_at = now() FROM ({device_aggregate}) a "
                f"WHERE d.guid = a.guid AND ({', '.join('d.' + c for c in device_cols)}) "
                f"IS DISTINCT FROM ({', '.join('a.' + c for c in device_cols)})"
            ),
        }

    # --- connection -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def connection(self) -> asyncpg.Connection:
        """The live connection (connecting first if needed). Raises `Unavailable`."""
        if self.connected:
            assert self._conn is not None
            return self._conn
        await self.close()
        try:
            conn = await open_connection(self.dsn, role=self.role, connect_timeout=self.connect_timeout,
                                         command_timeout=self.command_timeout, application_name=self.application_name)
        except Exception as exc:  # refused, DNS, auth, starting up, no such role ...: all "not now"
            raise Unavailable(f"cannot connect to PostgreSQL: {type(exc).__name__}: {exc}") from exc
        try:
            q = quote_ident(self.schema)
            for table in TABLES:
                shape = f"({STAGED_ONLY[table]})" if table in STAGED_ONLY else f"(LIKE {q}.{table} INCLUDING DEFAULTS)"
                await conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {self.stage(table)} {shape} ON COMMIT DELETE ROWS")
            await self.partitions.load(conn)
            self.queues_rollups = await rollups.has_queue(conn, self.schema)
            self.keeps_identities = await conn.fetchval(
                "SELECT to_regclass($1) IS NOT NULL", f"{q}.person_devices")
            self.queues_url_conversions = self.queues_rollups and await rollups.has_rules(conn, self.schema)
        except Exception as exc:
            await conn.close(timeout=2)
            raise Unavailable(f"cannot prepare the sink's connection: {type(exc).__name__}: {exc}") from exc
        self._conn = conn
        self._reload_partitions = False
        return conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        await close_quietly(conn)

    # --- writing ------------------------------------------------------------------------------

    async def write(self, batch: Batch) -> dict[str, int]:
        """Write `batch` in one transaction. Returns rows written per table (devices included).

        Raises `Unavailable` (retry the whole batch later) or `RejectedByDatabase` (some row
        can never be written: isolate it).
        """
        conn = await self.connection()
        started = time.perf_counter()
        try:
            if self._reload_partitions:
                await self.partitions.load(conn)
                self._reload_partitions = False
            for table in DAY_PARTITIONED:
                if batch.rows[table]:
                    created = await self.partitions.ensure(conn, table, batch.days(table))
                    if created:
                        metrics.PARTITIONS_CREATED.inc(created)
            written = await self._transaction(conn, batch)
        except (Unavailable, RejectedByDatabase):
            raise
        except Exception as exc:
            error = classify(exc)
            if isinstance(error, PartitionMissing):
                self._reload_partitions = True
                metrics.DB_RETRIES.labels("missing_partition").inc()
            if isinstance(error, DatabaseUnavailable):
                await self.close()  # the connection may be broken; a fresh one is cheap next to an outage
            raise error from exc
        metrics.WRITE_SECONDS.observe(time.perf_counter() - started)
        for table, count in written.items():
            metrics.ROWS_WRITTEN.labels(table).inc(count)
            offered = len(batch.rows[table]) if table in batch.rows else count
            if offered > count:
                metrics.ROWS_SKIPPED.labels(table).inc(offered - count)
        return written

    async def _transaction(self, conn: asyncpg.Connection, batch: Batch) -> dict[str, int]:
        written: dict[str, int] = {}
        devices: set[str] = set()  # guids whose sessions changed: their devices row is recomputed
        edges: list[tuple[str, str | None, str | None]] = []  # identities and links new to their tables
        async with conn.transaction():
            for table in TABLES:
                rows = batch.rows[table]
                if not rows:
                    continue
                if table in IDENTITY_TABLES:
                    if self.keeps_identities:
                        written[table] = await self._write_identities(conn, table, rows, edges)
                    continue
                written[table] = await self._write_table(conn, table, rows, devices)
                if table == "events" and self.queues_rollups:  # new or replayed: a drain finds a replay unchanged
                    await rollups.queue_conversions(conn, self.schema, rows)
                elif table == "pageviews" and self.queues_url_conversions:  # those a conversion rule matches (0010)
                    await rollups.queue_url_conversions(conn, self.schema, rows)
            if devices:
                guids = sorted(devices)
                if self.queues_rollups:
                    await rollups.queue_devices(conn, self.schema, guids)
                written["devices"] = await self._recompute_devices(conn, guids)
            if edges:  # last: the person lock is held from here to the commit
                guids_, users, others = (list(column) for column in zip(*edges, strict=True))
                written["person_devices"] = await conn.fetchval(self._sql["person_link"], guids_, users, others)
        return written

    async def _write_identities(self, conn: asyncpg.Connection, table: str, rows: list,
                                edges: list[tuple[str, str | None, str | None]]) -> int:
        """Upsert the batch's identities or device_links; adds the edges new to the table to `edges`."""
        await conn.copy_records_to_table(self.stage(table), records=rows, columns=COLUMNS[table], schema_name="pg_temp")
        changed = await conn.fetch(self._sql[table])
        edges.extend((str(r[0]), r[1], None if r[2] is None else str(r[2])) for r in changed if r[3])
        return len(changed)

    async def _write_table(self, conn: asyncpg.Connection, table: str, rows: list, devices: set[str]) -> int:
        """One table's rows of the batch; returns rows changed. Adds to `devices` the guids whose
        sessions changed."""
        if table in DAY_PARTITIONED and await self._copy_fast(conn, table, rows):
            return len(rows)
        if table == "move_ranges":  # (rare: no staging, one statement pair per range)
            return await self._move_ranges(conn, rows)
        await conn.copy_records_to_table(self.stage(table), records=rows, columns=COLUMNS[table], schema_name="pg_temp")
        return await self._apply_staged(conn, table, devices)

    async def _copy_fast(self, conn: asyncpg.Connection, table: str, rows: list) -> bool:
        """New hits (the normal case) COPY straight into the table. A hit that is there already
        (a replay, a rebalance) makes the COPY fail on the primary key; the savepoint undoes just
        that, and the caller takes the staging path (ON CONFLICT). True when the rows are in."""
        if time.monotonic() < self._merge_until.get(table, 0.0):
            return False
        try:
            async with conn.transaction():
                await conn.copy_records_to_table(table, records=rows, columns=COLUMNS[table], schema_name=self.schema)
            return True
        except asyncpg.UniqueViolationError:
            # Replays come in runs: merge for a while before trying the fast path again.
            self._merge_until[table] = time.monotonic() + self.merge_cooldown_s
            return False

    async def _apply_staged(self, conn: asyncpg.Connection, table: str, devices: set[str]) -> int:
        """The statement(s) that take a staged table into the schema; returns rows changed."""
        sql = self._sql
        if table == "sessions":
            changed = await conn.fetch(sql["sessions"])
            await conn.execute(sql["retractions_superseded"])
            devices.update(r[0] for r in changed)
            return len(changed)
        if table == "session_retractions":
            deleted = await conn.fetch(sql["retract"])
            kept = await conn.fetch(sql["session_retractions"])
            devices.update(r[0] for r in deleted)
            metrics.SESSIONS_RETRACTED.inc(len(deleted))
            return len(kept)
        if table == "moves":
            return sum([_status_count(await conn.execute(sql[f"moves_{t}"])) for t in DAY_PARTITIONED])
        return _status_count(await conn.execute(sql[table]))

    async def _move_ranges(self, conn: asyncpg.Connection, rows: list) -> int:
        moved = 0
        for row in rows:  # in log order
            for table in DAY_PARTITIONED:
                moved += _status_count(await conn.execute(self._sql[f"move_range_{table}"], *row))
        return moved

    async def _recompute_devices(self, conn: asyncpg.Connection, guids: list[str]) -> int:
        sql = self._sql
        created = {r[0] for r in await conn.fetch(sql["devices_claim"], guids)}
        existing = [g for g in guids if g not in created]
        updated = _status_count(await conn.execute(sql["devices_update"], existing)) if existing else 0
        return len(created) + updated

    async def write_isolating(self, batch: Batch) -> dict[str, int]:
        """`write`, and when PostgreSQL refuses a row: bisect until the row is alone, dead-letter
        it with the reason, write the rest. Raises only `Unavailable`."""
        try:
            return await self.write(batch)
        except RejectedByDatabase as exc:
            items = batch.items()
            if len(items) <= 1:
                if not items:
                    raise
                table, _, origin = items[0]
                log.warning("row refused by PostgreSQL; dead-lettered", extra={
                    "table": table, "topic": origin.topic, "partition": origin.partition,
                    "offset": origin.offset, "reason": exc.reason})
                metrics.ISOLATED.labels(table).inc()
                letter = Batch()
                letter.add("deadletter", refusal_row(origin, exc.reason, exc.errors, now=self.clock()), origin)
                # If even the dead letter is refused something is wrong with the sink itself: the
                # error propagates (as it must not be swallowed), and the batch is not committed.
                return await self.write(letter)
            left, right = batch.split()
            first = await self.write_isolating(left)
            second = await self.write_isolating(right)
            return dict(Tally(first) + Tally(second))


async def write_until_written(
    writer: Writer,
    batch: Batch,
    *,
    initial_delay: float = 0.2,
    max_delay: float = 10.0,
    stop: asyncio.Event | None = None,
) -> dict[str, int] | None:
    """Retry `write_isolating` with exponential backoff until it succeeds.

    Returns the counts, or None when `stop` was set before the batch could be written (the
    caller must then not commit the batch's offsets).
    """
    backoff = Backoff(initial_delay, max_delay)
    while True:
        try:
            return await writer.write_isolating(batch)
        except Unavailable as exc:
            delay = backoff.failed()
            metrics.DB_RETRIES.labels("unavailable").inc()
            level = logging.WARNING if backoff.failures < 5 else logging.ERROR
            log.log(level, "database write failed; retrying", extra={"attempt": backoff.failures, "delay_s": delay,
                                                                    "error": str(exc)})
        if stop is not None:
            try:
                await asyncio.wait_for(stop.wait(), delay)
                return None
            except asyncio.TimeoutError:
                pass
        else:
            await asyncio.sleep(delay)
