"""Retention of deadletter and late_hits (sink.retention): old rows go in small batches, as the
writer role, and nothing younger than the cutoff is touched. Real PostgreSQL, no Kafka."""

from __future__ import annotations

from datetime import datetime, timedelta

import orjson

from schemas.timefmt import UTC
from sink.consumer import SinkConsumer
from sink.settings import SinkSettings
from sink.testing import new_id

NOW = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)


async def _fill(db, old: int, young: int) -> None:
    """`old` rows 40 days back and `young` rows 2 days back in each table."""
    ages = [timedelta(days=40)] * old + [timedelta(days=2)] * young
    await db.executemany(
        "INSERT INTO deadletter (consumed_topic, consumed_partition, consumed_offset, consumed_timestamp, source, "
        "reason, refused_at, payload) VALUES ('t.deadletter', 0, $1, $2, 'ingest', 'invalid hit', $2, $3)",
        [(n, NOW - age, b"x" * 100) for n, age in enumerate(ages)])
    await db.executemany(
        "INSERT INTO late_hits (hit_id, guid, occurred_at, received_at, reason, hit) VALUES ($1, $2, $3, $3, "
        "'too_late', $4)",
        [(new_id(), new_id(), NOW - age, orjson.dumps({"kind": "hit"}).decode()) for age in ages])


async def _count(db, table: str, column: str) -> tuple[int, int]:
    """(rows older than 30 days, the others)."""
    row = await db.fetchrow(f"SELECT count(*) FILTER (WHERE {column} < $1) AS old, "
                            f"count(*) FILTER (WHERE {column} >= $1) AS young FROM {table}", NOW - timedelta(days=30))
    return row["old"], row["young"]


def _sink(migrated, **extra) -> SinkConsumer:
    settings = SinkSettings(pg_dsn=migrated.dsn, pg_schema=migrated.schema, sink_metrics_port=0,
                            sink_deadletter_retention_days=30, sink_late_hits_retention_days=30, **extra)
    return SinkConsumer(settings, clock=lambda: NOW)


async def test_rows_past_retention_are_deleted_in_batches_and_younger_ones_stay(migrated, db):
    await _fill(db, old=1_050, young=30)
    sink = _sink(migrated, sink_retention_batch_rows=100)
    try:
        # The writer's own connection (SET ROLE touchstream_writer): it may expire rows, nothing else.
        conn = await sink.writer.connection()
        assert await conn.fetchval("SELECT current_user") == "touchstream_writer"
        q = f'"{migrated.schema}"'
        one = await conn.fetchval(f"SELECT {q}.expire_rows('deadletter', $1, 100)", NOW - timedelta(days=30))
        assert one == 100, "one call deletes one batch"
        deleted = {"deadletter": one, "late_hits": 0}
        steps = 0
        while True:
            step = await sink.expire_rows()
            steps += 1
            for table, count in step.items():
                deleted[table] += count
            if not any(step.values()):
                break
    finally:
        await sink.writer.close()
    assert deleted == {"deadletter": 1_050, "late_hits": 1_050}
    assert await _count(db, "deadletter", "refused_at") == (0, 30)
    assert await _count(db, "late_hits", "received_at") == (0, 30)
    assert steps >= 2  # (1,050 rows in batches of 100 take 11 calls per table: a step stops after its time budget)


async def test_retention_off_keeps_everything_and_the_writer_cannot_delete_otherwise(migrated, db):
    await _fill(db, old=20, young=5)
    sink = _sink(migrated)
    sink.retention = type(sink.retention)(migrated.schema, {}, 100)  # off, as with both settings "off"
    try:
        conn = await sink.writer.connection()
        q = f'"{migrated.schema}"'
        for statement in (f"DELETE FROM {q}.deadletter", f"DELETE FROM {q}.late_hits"):
            try:
                await conn.execute(statement)
            except Exception as exc:  # asyncpg.InsufficientPrivilegeError
                assert "permission denied" in str(exc)
            else:
                raise AssertionError(f"the writer role may run {statement!r}")
        try:
            await conn.fetchval(f"SELECT {q}.expire_rows('sessions', now(), 10)")
        except Exception as exc:
            assert "no retention for table sessions" in str(exc)
        else:
            raise AssertionError("expire_rows deleted from sessions")
    finally:
        await sink.writer.close()
    assert await _count(db, "deadletter", "refused_at") == (20, 5)
    assert SinkSettings(sink_deadletter_retention_days="off").sink_deadletter_retention_days is None
