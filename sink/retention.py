"""Retention of the tables that grow row by row: `deadletter`, `late_hits`, `session_retractions`,
`sessions`, and the identity tables.

Whoever can post can add rows to these (a malformed body is a dead letter, a hit older than the
allowed lateness a late hit), so without retention a flood grows them for ever. Rows older than
`TOUCHSTREAM_SINK_DEADLETTER_RETENTION_DAYS` (by `refused_at`) and
`TOUCHSTREAM_SINK_LATE_HITS_RETENTION_DAYS` (by `received_at`) are deleted by the migrations'
SECURITY DEFINER function `expire_rows`, at most `TOUCHSTREAM_SINK_RETENTION_BATCH_ROWS` per
call, each call its own short transaction: a backlog of millions goes in small steps between
the sink's batch writes, never as one long delete holding locks and WAL while hits wait.

`TOUCHSTREAM_SINK_SESSIONS_RETENTION_DAYS` (off by default: sessions are the analysts' data)
expires closed sessions by `started_at` the same way, and a device's `devices` row with its
last session (migration 0008).

`TOUCHSTREAM_SINK_RETRACTIONS_RETENTION_DAYS` (60 by default) expires the tombstones of merged-away
sessions by `retracted_at` through the same `expire_rows` (migration 0011). A tombstone is what
keeps a lower-version snapshot from writing its session back, so it must outlive every way such a
snapshot can still arrive: the `sessions` topic's retention (a replay or a reset consumer group)
and a replay of `hits` (the settings refuse a shorter value; `sink.settings`).

`TOUCHSTREAM_SINK_IDENTITIES_RETENTION_DAYS` (the sessions retention unless set; 0 keeps them)
expires `identities` by `last_seen`, and `device_links` made before the cutoff whose two devices
have had no session since; the persons that held them are rebuilt from the edges that remain, so
`person_devices` is always what `person_link()` makes of the remaining edges (migration 0013).

(Day-partitioned `pageviews`/`events` are dropped a whole day at a time: `sink.partitions`.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from sink.migrations import quote_ident
from sink.settings import SinkSettings

# A backlog is worked off in batches until this much time went by; then the sink writes again.
STEP_BUDGET_S = 0.25


@dataclass(frozen=True)
class RowRetention:
    """Days kept per table (tables without retention are absent) and rows per delete."""

    schema: str
    days: dict[str, int]
    batch_rows: int

    @classmethod
    def from_settings(cls, settings: SinkSettings) -> RowRetention:
        identities = settings.sink_identities_retention_days
        days = {"deadletter": settings.sink_deadletter_retention_days,
                "late_hits": settings.sink_late_hits_retention_days,
                "sessions": settings.sink_sessions_retention_days,
                "session_retractions": settings.sink_retractions_retention_days,
                # (unset: with the sessions; 0: kept)
                "identities": settings.sink_sessions_retention_days if identities is None else identities or None}
        return cls(settings.pg_schema, {t: d for t, d in days.items() if d is not None},
                   settings.sink_retention_batch_rows)

    async def expire(self, conn: asyncpg.Connection, now: datetime) -> tuple[dict[str, int], bool]:
        """Delete expired rows, a batch per table at a time, for at most `STEP_BUDGET_S`.
        Returns the rows deleted per table, and whether more are waiting."""
        deleted = {table: 0 for table in self.days}
        waiting = set(self.days)
        started = time.monotonic()
        schema = quote_ident(self.schema)
        rows = f"SELECT {schema}.expire_rows($1, $2, $3)"
        # (sessions: and devices, migration 0008; identities: and links and persons, migration 0013)
        own = {t: f"SELECT {schema}.expire_{t}($1, $2)" for t in ("sessions", "identities")}
        while waiting:
            for table in sorted(waiting):
                cutoff = now - timedelta(days=self.days[table])
                count = await (conn.fetchval(own[table], cutoff, self.batch_rows) if table in own
                               else conn.fetchval(rows, table, cutoff, self.batch_rows))
                deleted[table] += count
                if count < self.batch_rows:
                    waiting.discard(table)
            if time.monotonic() - started > STEP_BUDGET_S:
                break
        return deleted, bool(waiting)
