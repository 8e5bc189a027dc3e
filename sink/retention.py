"""Retention of the tables that grow with refused input: `deadletter` and `late_hits`.

Whoever can post can add rows to these (a malformed body is a dead letter, a hit older than the
allowed lateness a late hit), so without retention a flood grows them for ever. Rows older than
`TOUCHSTREAM_SINK_DEADLETTER_RETENTION_DAYS` (by `refused_at`) and
`TOUCHSTREAM_SINK_LATE_HITS_RETENTION_DAYS` (by `received_at`) are deleted by the migrations'
SECURITY DEFINER function `expire_rows`, at most `TOUCHSTREAM_SINK_RETENTION_BATCH_ROWS` per
call, each call its own short transaction: a backlog of millions goes in small steps between
the sink's batch writes, never as one long delete holding locks and WAL while hits wait.

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
        days = {"deadletter": settings.sink_deadletter_retention_days,
                "late_hits": settings.sink_late_hits_retention_days}
        return cls(settings.pg_schema, {t: d for t, d in days.items() if d is not None},
                   settings.sink_retention_batch_rows)

    async def expire(self, conn: asyncpg.Connection, now: datetime) -> tuple[dict[str, int], bool]:
        """Delete expired rows, a batch per table at a time, for at most `STEP_BUDGET_S`.
        Returns the rows deleted per table, and whether more are waiting."""
        deleted = {table: 0 for table in self.days}
        waiting = set(self.days)
        started = time.monotonic()
        sql = f"SELECT {quote_ident(self.schema)}.expire_rows($1, $2, $3)"
        while waiting:
            for table in sorted(waiting):
                count = await conn.fetchval(sql, table, now - timedelta(days=self.days[table]), self.batch_rows)
                deleted[table] += count
                if count < self.batch_rows:
                    waiting.discard(table)
            if time.monotonic() - started > STEP_BUDGET_S:
                break
        return deleted, bool(waiting)
