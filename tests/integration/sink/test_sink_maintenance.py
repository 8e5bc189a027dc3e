"""A worker's partition maintenance: days ahead at start, retention, without Kafka."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from schemas.timefmt import UTC
from sink.consumer import SinkConsumer
from sink.settings import SinkSettings


async def partitions(db, table: str) -> list[str]:
    rows = await db.fetch("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                          "WHERE i.inhparent = $1::regclass ORDER BY 1", table)
    return [r[0] for r in rows]


def settings_for(migrated, **extra) -> SinkSettings:
    return SinkSettings(pg_dsn=migrated.dsn, pg_schema=migrated.schema, sink_metrics_port=0, **extra)


async def test_days_around_today_are_created_ahead(migrated, db):
    today = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
    sink = SinkConsumer(settings_for(migrated, sink_partitions_behind_days=2, sink_partitions_ahead_days=7),
                        clock=lambda: today)
    try:
        await sink.maintenance(force=True)
    finally:
        await sink.writer.close()
    expected = [f"p202603{d:02d}" for d in range(8, 18)]
    for table in ("pageviews", "events"):
        assert await partitions(db, table) == [f"{table}_{p}" for p in expected]


async def test_retention_drops_old_days_and_creates_nothing_before_the_cutoff(migrated, db, caplog):
    caplog.set_level(logging.INFO)
    now = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
    clock = {"now": now - timedelta(days=10)}
    settings = settings_for(migrated, sink_partitions_behind_days=2, sink_partitions_ahead_days=1,
                            sink_retention_days=3)
    sink = SinkConsumer(settings, clock=lambda: clock["now"])
    try:
        await sink.maintenance(force=True)  # ten days ago: 2026-02-26 .. 2026-03-01 (retention keeps 3 days)
        assert await partitions(db, "events") == ["events_p20260226", "events_p20260227", "events_p20260228",
                                                  "events_p20260301"]
        clock["now"] = now
        await sink.maintenance(force=True)
    finally:
        await sink.writer.close()
    # today 2026-03-10, 3 days kept: 03-08, 03-09, 03-10 (+1 ahead); behind-days stop at the cutoff
    assert await partitions(db, "events") == ["events_p20260308", "events_p20260309", "events_p20260310",
                                              "events_p20260311"]
    assert await partitions(db, "pageviews") == ["pageviews_p20260308", "pageviews_p20260309",
                                                 "pageviews_p20260310", "pageviews_p20260311"]
