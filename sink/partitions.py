"""Day partitions of `pageviews` and `events`: created ahead and on demand, within a bounded
window of days around today, dropped by retention.

Choice: no DEFAULT partition. A row whose day has no partition would fail, so the sink makes
sure the day exists before it writes: at start and every maintenance interval it creates
today-`behind` .. today+`ahead` (UTC), and before each batch it creates any day the batch
holds that it has not seen yet (e.g. a replay of old hits, or a device with a wrong clock). A
DEFAULT partition would take such rows silently, but then creating that day's partition later
fails until its rows are moved out by hand (PostgreSQL checks the default partition for rows
of the new range), which is worse than creating days on demand.

On demand only within a window (`sink.day_window.DayWindow`): from `TOUCHSTREAM_SINK_MAX_ROW_AGE_DAYS` before
today (and not before the retention cutoff) to the days created ahead. A hit from any other
day is dead-lettered with the reason instead: a flood of hits dated across decades would
otherwise create a partition per day per table (about 73,000 days are reachable), each a table
PostgreSQL plans and vacuums for ever. The edge refuses such hits first (SPEC section 2); the
window holds whatever else reaches the topics.

The DDL itself runs in the migrations' SECURITY DEFINER functions `ensure_day_partitions` and
`drop_day_partitions_before` (the writer role does not own the tables), each in its own short
transaction, outside the batch's write transaction, and serialised per table by an advisory
lock, so several workers can race for the same day.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta

import asyncpg

from schemas.timefmt import UTC
from sink.batch import DAY_PARTITIONED
from sink.day_window import retention_cutoff

__all__ = ["DayPartitions", "partition_name", "retention_cutoff", "window"]
from sink.migrations import quote_ident

log = logging.getLogger("touchstream.sink.partitions")


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def window(today: date, behind: int, ahead: int) -> list[date]:
    return [today + timedelta(days=n) for n in range(-behind, ahead + 1)]


class DayPartitions:
    """Which day partitions exist (cached), and making the missing ones."""

    def __init__(self, schema: str, tables: tuple[str, ...] = DAY_PARTITIONED) -> None:
        self.schema = schema
        self.tables = tables
        self.known: dict[str, set[date]] = {t: set() for t in tables}
        self._q = quote_ident(schema)

    async def load(self, conn: asyncpg.Connection) -> None:
        """Read the existing partitions (after a reconnect, or when the cache may be stale)."""
        rows = await conn.fetch(
            """SELECT p.relname AS parent, c.relname AS child
               FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
               JOIN pg_class p ON p.oid = i.inhparent
               JOIN pg_namespace n ON n.oid = p.relnamespace
               WHERE n.nspname = $1 AND p.relname = ANY($2::text[])""",
            self.schema, list(self.tables),
        )
        known: dict[str, set[date]] = {t: set() for t in self.tables}
        for row in rows:
            suffix = row["child"].rpartition("_p")[2]
            try:
                known[row["parent"]].add(datetime.strptime(suffix, "%Y%m%d").date())
            except ValueError:
                continue  # someone's own partition: not ours to manage
        self.known = known

    def missing(self, table: str, days: set[date]) -> list[date]:
        return sorted(days - self.known[table])

    async def ensure(self, conn: asyncpg.Connection, table: str, days: set[date] | list[date]) -> int:
        """Create the partitions of `days` that do not exist yet; returns how many were created."""
        wanted = self.missing(table, set(days))
        if not wanted:
            return 0
        created = await conn.fetchval(f"SELECT {self._q}.ensure_day_partitions($1, $2::date[])", table, wanted)
        self.known[table].update(wanted)
        if created:
            log.info("day partitions created", extra={"table": table, "count": created,
                                                      "first": wanted[0].isoformat(), "last": wanted[-1].isoformat()})
        return int(created or 0)

    async def ensure_window(self, conn: asyncpg.Connection, behind: int, ahead: int, today: date | None = None) -> int:
        today = today or datetime.now(UTC).date()
        days = window(today, behind, ahead)
        total = 0
        for table in self.tables:
            total += await self.ensure(conn, table, days)
        return total

    async def drop_before(self, conn: asyncpg.Connection, cutoff: date) -> list[str]:
        """Retention: drop every day partition before `cutoff`; returns the dropped names."""
        dropped: list[str] = []
        for table in self.tables:
            names = await conn.fetchval(f"SELECT {self._q}.drop_day_partitions_before($1, $2::date)", table, cutoff)
            dropped.extend(names or [])
            self.known[table] = {d for d in self.known[table] if d >= cutoff}
        if dropped:
            log.info("day partitions dropped", extra={"cutoff": cutoff.isoformat(), "dropped": len(dropped)})
        return dropped

    def invalidate(self) -> None:
        self.known = {t: set() for t in self.tables}
