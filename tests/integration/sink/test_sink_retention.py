"""Retention of deadletter, late_hits, session_retractions and sessions (sink.retention): old rows go in small batches, as the
writer role, and nothing younger than the cutoff is touched. Real PostgreSQL, no Kafka."""

from __future__ import annotations

from datetime import datetime, timedelta

import orjson

from schemas.timefmt import UTC
from sink.consumer import SinkConsumer
from sink.settings import SinkSettings
from sink.batch import decode_batch
from sink.testing import RecordStream, new_id
from tests.merge_play import NOW as PLAY_NOW
from tests.merge_play import ROLES, B, play

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
    extra = {"sink_deadletter_retention_days": 30, "sink_late_hits_retention_days": 30,
             "sink_retractions_retention_days": None, **extra}
    settings = SinkSettings(pg_dsn=migrated.dsn, pg_schema=migrated.schema, sink_metrics_port=0, **extra)
    return SinkConsumer(settings, clock=lambda: NOW)


async def _expire_all(sink: SinkConsumer, table: str) -> int:
    """Retention steps until one deletes nothing from `table`; the rows deleted from it."""
    try:
        deleted = 0
        while step := (await sink.expire_rows()).get(table, 0):
            deleted += step
        return deleted
    finally:
        await sink.writer.close()


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
        deleted = {"deadletter": one, "late_hits": 0}  # (retractions: off in `_sink` unless a test sets them)
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


async def _session(db, guid: str, days_ago: int, status: str = "closed") -> str:
    sid = new_id()
    started = NOW - timedelta(days=days_ago)
    await db.execute(
        "INSERT INTO sessions (session_id, guid, session_index, site, status, started_at, last_seen_at, ended_at, "
        "duration_s, landing_url, landing_path, channel, pageviews, events, hits, is_bounce, version) VALUES "
        "($1, $2, 1, 'example.com', $3, $4, $4, $5, 0, 'https://example.com/', '/', 'Direct', 1, 0, 1, true, 1)",
        sid, guid, status, started, started if status == "closed" else None)
    return sid


async def test_closed_sessions_expire_and_a_device_goes_with_its_last_session(migrated, db):
    gone, stays, still_open = new_id(), new_id(), new_id()
    old = [await _session(db, gone, 40) for _ in range(5)] + [await _session(db, stays, 40)]
    kept = [await _session(db, stays, 2), await _session(db, still_open, 40, status="open")]
    for guid in (gone, stays, still_open):
        await db.execute("INSERT INTO devices (guid, first_seen_at, last_seen_at, sessions, first_session_id) "
                         "VALUES ($1, $2, $2, 1, $3)", guid, NOW - timedelta(days=40), new_id())
    sink = _sink(migrated, sink_sessions_retention_days=30, sink_retention_batch_rows=2)
    deleted = await _expire_all(sink, "sessions")
    assert deleted == len(old)
    left = {str(r[0]) for r in await db.fetch("SELECT session_id FROM sessions")}
    assert left == set(kept)  # young and open sessions stay, whatever their age
    devices = {str(r[0]) for r in await db.fetch("SELECT guid FROM devices")}
    assert devices == {stays, still_open}  # the device whose every session expired is gone
    assert SinkSettings().sink_sessions_retention_days is None  # off unless set



async def test_retractions_expire_past_their_retention_and_younger_ones_still_guard(migrated, db, writer):
    """Migration 0011: the tombstones of merged-away sessions go after 60 days by default, in batches;
    until then one keeps a stale snapshot of its session out (the reason it is kept at all)."""
    first, second = play()
    await writer.write(decode_batch(first + second, ROLES, now=PLAY_NOW))  # B merged into A: B's tombstone
    ages = [70] * 5 + [2] * 3
    others = [(new_id(), new_id(), new_id(), 5, NOW - timedelta(days=days)) for days in ages]
    await db.executemany("INSERT INTO session_retractions (session_id, guid, merged_into, version, retracted_at) "
                         "VALUES ($1, $2, $3, $4, $5)", others)
    await db.execute("UPDATE session_retractions SET retracted_at = $1 WHERE session_id = $2",
                     NOW - timedelta(days=59), B)
    sink = _sink(migrated, sink_retractions_retention_days=SinkSettings().sink_retractions_retention_days,
                 sink_retention_batch_rows=2)
    assert sink.retention.days["session_retractions"] == 60  # (on by default)
    deleted = await _expire_all(sink, "session_retractions")
    assert deleted == 5
    left = {str(r[0]) for r in await db.fetch("SELECT session_id FROM session_retractions")}
    assert left == {B} | {str(row[0]) for row in others[5:]}
    # B's snapshot from before the merge, replayed: its 59-day-old tombstone still keeps it out.
    stale = next(r for r in first if r.topic == ROLES.sessions and r.key == B.encode())
    await writer.write(decode_batch([RecordStream().record(ROLES.sessions, stale.value, key=B.encode())], ROLES,
                                    now=PLAY_NOW))
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE session_id = $1", B) == 0
