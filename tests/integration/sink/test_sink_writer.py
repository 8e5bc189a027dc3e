"""The write path against a real PostgreSQL: idempotence, versioned upserts, devices, isolation of bad rows."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timedelta

import pytest

from schemas.errors import Unavailable
from schemas.timefmt import UTC
from schemas.wire import dead_letter, encode
from sink.batch import TopicRoles, decode_batch
from sink.testing import T0, RecordStream, event, late_hit, new_id, pageview, session
from sink.writer import Writer, write_until_written

from sink_helpers import dump

ROLES = TopicRoles.from_prefix("w.")
NOW = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)

TABLE_KEYS = {
    "sessions": "session_id",
    "pageviews": "occurred_at, hit_id",
    "events": "occurred_at, hit_id",
    "devices": "guid",
    "late_hits": "hit_id",
    "deadletter": "consumed_topic, consumed_partition, consumed_offset, consumed_timestamp",
}


def decode(records):
    return decode_batch(records, ROLES, now=NOW)


async def snapshot_all(db) -> dict[str, list[tuple]]:
    return {t: await dump(db, t, key) for t, key in TABLE_KEYS.items()}


def mixed_records(rs: RecordStream) -> list:
    records = []
    for d in range(5):
        guid = new_id()
        sessions = [session(guid=guid, session_index=i + 1, started_at=T0 + timedelta(days=i), version=2,
                            channel=["Direct", "Email", "Paid Search"][i % 3]) for i in range(3)]
        for s in sessions:
            records.append(rs.record(ROLES.sessions, s, partition=d % 2))
            records.append(rs.record(ROLES.events, pageview(session_id=s.session_id, guid=guid,
                                                            occurred_at=s.started_at), partition=d % 2))
        records.append(rs.record(ROLES.events, event(name="lead", session_id=sessions[-1].session_id, guid=guid,
                                                     occurred_at=sessions[-1].started_at + timedelta(minutes=5))))
        records.append(rs.record(ROLES.events, late_hit(guid=guid)))
    records.append(rs.record(ROLES.events, b"garbage"))
    records.append(rs.record(ROLES.deadletter, encode(dead_letter("ingest", "invalid hit", b"{}", at=T0))))
    return records


async def test_the_same_batch_twice_leaves_the_same_rows(writer: Writer, db):
    batch = decode(mixed_records(RecordStream()))
    first = await writer.write_isolating(batch)
    assert first == {"sessions": 15, "devices": 5, "pageviews": 15, "events": 5, "late_hits": 5, "deadletter": 2}
    before = await snapshot_all(db)
    assert {t: len(rows) for t, rows in before.items()} == {
        "sessions": 15, "pageviews": 15, "events": 5, "devices": 5, "late_hits": 5, "deadletter": 2}
    again = await writer.write_isolating(batch)
    assert again == {"sessions": 0, "pageviews": 0, "events": 0, "late_hits": 0, "deadletter": 0}
    assert await snapshot_all(db) == before


async def test_the_same_records_split_differently_leave_the_same_rows(writer: Writer, db):
    records = mixed_records(RecordStream())
    await writer.write_isolating(decode(records))
    before = await snapshot_all(db)
    for start in range(0, len(records), 7):  # a replay after a crash re-reads overlapping batches
        await writer.write_isolating(decode(records[start:start + 11]))
    assert await snapshot_all(db) == before


async def test_an_older_snapshot_after_a_newer_one_changes_nothing(writer: Writer, db):
    rs = RecordStream()
    sid, guid = new_id(), new_id()
    v3 = session(session_id=sid, guid=guid, version=3, pageviews=3, status="closed",
                 last_seen_at=T0 + timedelta(minutes=20))
    v2 = session(session_id=sid, guid=guid, version=2, pageviews=2, last_seen_at=T0 + timedelta(minutes=10))
    await writer.write(decode([rs.record(ROLES.sessions, v3)]))
    row = await db.fetchrow("SELECT * FROM sessions WHERE session_id = $1", uuid.UUID(sid))
    written = await writer.write(decode([rs.record(ROLES.sessions, v2)]))
    assert written == {"sessions": 0}
    assert await db.fetchrow("SELECT * FROM sessions WHERE session_id = $1", uuid.UUID(sid)) == row
    assert (row["version"], row["pageviews"], row["status"]) == (3, 3, "closed")
    v4 = session(session_id=sid, guid=guid, version=4, pageviews=4, status="closed",
                 last_seen_at=T0 + timedelta(minutes=25))
    assert (await writer.write(decode([rs.record(ROLES.sessions, v4)])))["sessions"] == 1
    assert await db.fetchval("SELECT pageviews FROM sessions WHERE session_id = $1", uuid.UUID(sid)) == 4
    assert await db.fetchval("SELECT last_seen_at FROM devices WHERE guid = $1",
                             uuid.UUID(guid)) == T0 + timedelta(minutes=25)


async def test_devices_take_first_touch_from_the_earliest_session_and_count_each_once(writer: Writer, db):
    rs = RecordStream()
    guid = new_id()
    later = session(guid=guid, session_index=2, started_at=T0 + timedelta(days=2), channel="Paid Search",
                    utm_source="google", utm_medium="cpc", utm_campaign="spring")
    earlier = session(guid=guid, session_index=1, started_at=T0, channel="Email", utm_source="newsletter",
                      utm_medium="email", utm_campaign="march", last_seen_at=T0 + timedelta(minutes=3))
    await writer.write(decode([rs.record(ROLES.sessions, later)]))  # the later session arrives first
    await writer.write(decode([rs.record(ROLES.sessions, earlier)]))
    for _ in range(2):  # replays
        await writer.write(decode([rs.record(ROLES.sessions, earlier), rs.record(ROLES.sessions, later)]))
    newer = later.model_copy(update={"version": 7, "last_seen_at": T0 + timedelta(days=2, minutes=30)})
    await writer.write(decode([rs.record(ROLES.sessions, newer)]))
    device = await db.fetchrow("SELECT * FROM devices WHERE guid = $1", uuid.UUID(guid))
    assert device["sessions"] == 2
    assert str(device["first_session_id"]) == earlier.session_id
    assert (device["first_channel"], device["first_utm_source"], device["first_utm_medium"],
            device["first_utm_campaign"]) == ("Email", "newsletter", "email", "march")
    assert device["first_seen_at"] == T0
    assert device["last_seen_at"] == T0 + timedelta(days=2, minutes=30)


async def test_concurrent_writers_of_the_same_devices_count_every_session(migrated, db):
    """Sessions of one device can sit on different partitions, so on different workers."""
    guids = [new_id() for _ in range(20)]
    writers = [Writer(migrated.dsn, migrated.schema, role="touchstream_writer") for _ in range(4)]
    try:
        rounds = 6
        for r in range(rounds):
            batches = []
            for w in range(len(writers)):
                rs = RecordStream()
                batches.append(decode([rs.record(ROLES.sessions, session(guid=g, session_index=r * 10 + w,
                                                                         started_at=T0 + timedelta(hours=r)))
                                       for g in guids]))
            await asyncio.gather(*(w.write(b) for w, b in zip(writers, batches, strict=True)))
    finally:
        for w in writers:
            await w.close()
    counts = await db.fetch("SELECT sessions FROM devices")
    assert len(counts) == 20
    assert {c["sessions"] for c in counts} == {rounds * len(writers)}
    assert await db.fetchval("SELECT count(*) FROM sessions") == 20 * rounds * len(writers)


async def test_a_row_postgres_refuses_is_dead_lettered_and_the_rest_is_written(writer: Writer, db, caplog):
    caplog.set_level(logging.DEBUG)
    rs = RecordStream()
    good = [pageview() for _ in range(9)]
    nul = pageview(title="Floor\x00plans")  # valid JSON (\u0000); PostgreSQL text cannot hold it
    bad_uuid = event(session_id="not-a-uuid")
    records = [rs.record(ROLES.events, p) for p in good[:4]]
    records += [rs.record(ROLES.events, nul), rs.record(ROLES.events, bad_uuid)]
    records += [rs.record(ROLES.events, p) for p in good[4:]]
    written = await writer.write_isolating(decode(records))
    assert written["pageviews"] == 9 and written["deadletter"] == 2
    assert await db.fetchval("SELECT count(*) FROM pageviews") == 9
    letters = await db.fetch("SELECT * FROM deadletter ORDER BY consumed_offset")
    assert [r["consumed_offset"] for r in letters] == [4, 5]
    assert [r["hit_id"] for r in letters] == [nul.hit_id, bad_uuid.hit_id]
    assert "0x00" in letters[0]["reason"] and letters[0]["reason"].startswith("refused by PostgreSQL")
    assert "UUID" in letters[1]["reason"]
    assert letters[0]["payload"] == records[4].value and letters[1]["payload"] == records[5].value
    assert {r["source"] for r in letters} == {"sink"}
    # replaying the batch changes nothing
    again = await writer.write_isolating(decode(records))
    assert sum(again.values()) == 0
    assert await db.fetchval("SELECT count(*) FROM deadletter") == 2


async def test_day_partitions_are_created_for_any_day_a_batch_holds(writer: Writer, db):
    rs = RecordStream()
    old = datetime(2019, 7, 14, 23, 59, 59, tzinfo=UTC)
    await writer.write(decode([rs.record(ROLES.events, pageview(occurred_at=old)),
                               rs.record(ROLES.events, event(occurred_at=old + timedelta(seconds=1)))]))
    parts = {r["relname"] for r in await db.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent IN ('pageviews'::regclass, 'events'::regclass)")}
    assert {"pageviews_p20190714", "events_p20190715"} <= parts
    assert await db.fetchval("SELECT count(*) FROM pageviews_p20190714") == 1
    assert await db.fetchval("SELECT count(*) FROM events_p20190715") == 1


async def test_a_partition_dropped_behind_the_sinks_back_is_created_again(writer: Writer, db):
    rs = RecordStream()
    await writer.write(decode([rs.record(ROLES.events, pageview(occurred_at=T0))]))
    await db.execute("DROP TABLE pageviews_p20260302")
    batch = decode([rs.record(ROLES.events, pageview(occurred_at=T0 + timedelta(hours=1)))])
    with pytest.raises(Unavailable):
        await writer.write(batch)  # the cache said the day existed: not the row's fault, so retried
    written = await write_until_written(writer, batch, initial_delay=0.01)
    assert written == {"pageviews": 1}
    assert await db.fetchval("SELECT count(*) FROM deadletter") == 0


async def test_retention_drops_whole_days_before_the_cutoff(writer: Writer, db):
    conn = await writer.connection()
    parts = writer.partitions
    days = [T0.date() + timedelta(days=n) for n in range(5)]
    for table in parts.tables:
        assert await parts.ensure(conn, table, days) == 5
        assert await parts.ensure(conn, table, days) == 0  # known: nothing to do
    rs = RecordStream()
    await writer.write(decode([rs.record(ROLES.events, pageview(occurred_at=T0 + timedelta(days=n)))
                               for n in range(5)]))
    dropped = await parts.drop_before(conn, T0.date() + timedelta(days=3))
    assert sorted(dropped) == sorted(f"{t}_p2026030{d}" for t in ("events", "pageviews") for d in (2, 3, 4))
    assert await db.fetchval("SELECT count(*) FROM pageviews") == 2
    await parts.load(conn)
    assert sorted(parts.known["pageviews"]) == days[3:]


async def test_the_writer_reconnects_after_losing_its_connection(writer: Writer, db):
    rs = RecordStream()
    await writer.write(decode([rs.record(ROLES.events, pageview())]))
    pid = (await writer.connection()).get_server_pid()
    await db.execute("SELECT pg_terminate_backend($1)", pid)
    await asyncio.sleep(0.2)
    batch = decode([rs.record(ROLES.events, pageview())])
    written = await write_until_written(writer, batch, initial_delay=0.01)
    assert written == {"pageviews": 1}
    assert (await writer.connection()).get_server_pid() != pid
    assert await db.fetchval("SELECT count(*) FROM pageviews") == 2


async def test_the_sink_writes_as_the_writer_role(writer: Writer):
    conn = await writer.connection()
    assert await conn.fetchval("SELECT current_user") == "touchstream_writer"


async def test_a_hit_twice_in_one_batch_lands_once(writer: Writer, db):
    rs = RecordStream()
    pv, ev = pageview(), event()
    records = [rs.record(ROLES.events, x) for x in (pv, ev, pv, ev, pageview())]
    assert await writer.write(decode(records)) == {"pageviews": 2, "events": 1}
    assert await db.fetchval("SELECT count(*) FROM pageviews") == 2
    assert await db.fetchval("SELECT count(*) FROM events") == 1


async def test_new_hits_copy_straight_in_and_a_replay_switches_to_merging_for_a_while(writer: Writer, db):
    rs = RecordStream()
    first = decode([rs.record(ROLES.events, pageview()) for _ in range(10)])
    assert await writer.write(first) == {"pageviews": 10}
    assert "pageviews" not in writer._merge_until  # the COPY went straight in
    mixed = decode([rs.record(ROLES.events, pageview()) for _ in range(5)])
    mixed.rows["pageviews"] += first.rows["pageviews"][:3]
    mixed.origins["pageviews"] += first.origins["pageviews"][:3]
    assert await writer.write(mixed) == {"pageviews": 5}
    assert writer._merge_until["pageviews"] > 0  # merging now
    writer.merge_cooldown_s = 0.0
    assert await writer.write(decode([rs.record(ROLES.events, pageview()) for _ in range(4)])) == {"pageviews": 4}
    assert await db.fetchval("SELECT count(*) FROM pageviews") == 19


async def test_dead_letters_of_a_recreated_topic_are_not_taken_for_replays(writer: Writer, db):
    """Offsets restart at 0 when a topic is recreated; the Kafka timestamp tells the records apart."""
    old = RecordStream().record(ROLES.events, b"old garbage")
    new = RecordStream().record(ROLES.events, b"new garbage", timestamp=old.timestamp + 86_400_000)
    assert (old.topic, old.partition, old.offset) == (new.topic, new.partition, new.offset)
    await writer.write(decode([old]))
    await writer.write(decode([old]))  # a replay: nothing new
    await writer.write(decode([new]))
    assert [r["payload"] for r in await db.fetch("SELECT payload FROM deadletter ORDER BY consumed_timestamp")] == [
        b"old garbage", b"new garbage"]
