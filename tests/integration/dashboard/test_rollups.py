"""The rollups of migration 0005 equal the tables and views they summarise, exactly, once the queue
is drained, after every kind of change the pipeline makes: new rows through the sink's real writer,
replays, late hits that move sessions, a merge written through the sink (a session retracted, its
hits moved), late conversions, a new and a removed conversion name, `touchstream forget`, a bot
flag, retention dropping day partitions, and writes racing the drain; and (migration 0010) values
in two currencies, URL conversion rules added, changed and removed, a merge moving a URL
conversion, and the configured lookback changed."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from rollup_checks import mismatches
from schemas.timefmt import UTC
from sink.batch import decode_batch
from sink.rollups import RollupDrainer, drain
from sink.settings import SinkSettings
from sink.testing import T0, event
from sink.writer import Writer
from tests import merge_play
from tests.dashboard_data import D, H, add_rules, crowd, drained, journeys, write, write_while_draining
from touchstream.forget import delete_rows

QUEUES = ("rollup_pending_devices", "rollup_pending_conversions")


async def check(migrated: Any, db: Any) -> None:
    """Drain, then every rollup equals the tables and views, and nothing is left queued."""
    await drained(migrated)
    assert await mismatches(db) == {}
    for table in QUEUES:
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table


@pytest.fixture
async def filled(migrated: Any, db: Any) -> tuple[dict[str, Any], list]:
    s, items = journeys()
    await add_rules(migrated)
    await write(migrated, items)
    await drained(migrated)
    assert await db.fetchval("SELECT count(*) FROM rollup_credits") > 0  # the fixture is not empty
    assert await db.fetchval("SELECT count(*) FROM rollup_value_daily") > 0  # and has value
    return s, items


async def test_the_writer_queues_and_the_drain_folds(migrated, db):
    _, items = journeys()
    await add_rules(migrated)
    await write(migrated, items)
    # Only keys were written with the rows: the rollups wait for the drain.
    assert await db.fetchval("SELECT count(*) FROM rollup_pending_devices") == 3
    # a lead, an appointment, and the thank-you pageview the rule makes a conversion
    assert await db.fetchval("SELECT count(*) FROM rollup_pending_conversions") == 3
    assert await db.fetchval("SELECT count(*) FROM rollup_sessions_daily") == 0
    assert await mismatches(db) != {}
    await check(migrated, db)


async def test_new_rows_and_replays(migrated, db, filled):
    await check(migrated, db)
    before = await db.fetch("SELECT * FROM rollup_sessions_daily ORDER BY 1, 2, 3, 4, 5, 6, 7")
    _, items = filled
    await write(migrated, items)  # a replay: every row is there already, nothing changes
    await check(migrated, db)
    assert await db.fetch("SELECT * FROM rollup_sessions_daily ORDER BY 1, 2, 3, 4, 5, 6, 7") == before


async def test_late_hits_move_sessions_and_conversions_arrive_late(migrated, db, filled):
    s, _ = filled
    a1, b2 = s["a1"], s["b2"]
    await write(migrated, [
        # a hit before a1's start extends it backwards over midnight; more pageviews
        a1.model_copy(update={"version": 2, "started_at": a1.started_at - 10 * H, "pageviews": 4}),
        # b2 closes, and a late campaign hit changes nothing about its start
        b2.model_copy(update={"version": 2, "status": "closed", "ended_at": b2.started_at + H,
                              "end_reason": "inactivity", "pageviews": 2, "is_bounce": False}),
        # a lead that happened before a3 (so a3 is not its touch) arrives late
        event(name="lead", module="chat", guid=a1.guid, session_id=s["a2"].session_id,
              occurred_at=s["a2"].started_at + H),
    ])
    await check(migrated, db)


@pytest.mark.parametrize("drain_between", [True, False])
async def test_a_merge_written_through_the_sink(migrated, db, filled, drain_between):
    """A late hit bridges two sessions already written: the sink deletes the later one, re-points
    its pageview and its lead, and recomputes the device (tests/merge_play.py)."""
    first, second = merge_play.play()
    writer = Writer(migrated.dsn, migrated.schema, role="touchstream_writer")
    try:
        await writer.write(decode_batch(first, merge_play.ROLES, now=merge_play.NOW))
        if drain_between:
            await check(migrated, db)
            assert await db.fetchval("SELECT count(*) FROM rollup_session_facts WHERE session_id = $1",
                                     merge_play.B) == 1
        written = await writer.write(decode_batch(second, merge_play.ROLES, now=merge_play.NOW))
    finally:
        await writer.close()
    assert written["session_retractions"] == 1 and written["moves"] == 2  # the merge happened
    await check(migrated, db)
    assert await db.fetchval("SELECT count(*) FROM rollup_session_facts WHERE session_id = $1", merge_play.B) == 0
    lead = await db.fetchrow("SELECT session_id::text, touch_count FROM rollup_credits WHERE lookback_days = 90 "
                             "AND guid = $1", merge_play.GUID)
    assert tuple(lead) == (merge_play.A, 1)  # the lead's one touch is the survivor


async def test_conversion_names_bots_forget_and_retention(migrated, db, filled):
    s, _ = filled
    await db.execute("INSERT INTO conversion_events (name) VALUES ('chat_open')")
    await check(migrated, db)
    await db.execute("DELETE FROM conversion_events WHERE name = 'lead'")
    await check(migrated, db)
    b1 = s["b1"]
    await write(migrated, [b1.model_copy(update={"version": 5, "is_bot": True})])
    await check(migrated, db)
    async with db.transaction():
        await delete_rows(db, s["a1"].guid)  # `touchstream forget`'s deletion
    await check(migrated, db)
    assert await db.fetchval("SELECT count(*) FROM rollup_session_facts WHERE guid = $1", s["a1"].guid) == 0
    await db.execute("SET ROLE touchstream_writer")
    cutoff = (T0 + 2 * D).astimezone(UTC).date()  # drops the day of b's appointment
    dropped = await db.fetchval("SELECT drop_day_partitions_before('events', $1)", cutoff)
    await db.execute("RESET ROLE")
    assert dropped, "the retention call dropped no partition: the test proves nothing"
    await check(migrated, db)


async def test_url_rules_values_and_retention_of_pageviews(migrated, db, filled):
    """Rules added after the rows (their trigger queues the pageviews), a rule that takes a pageview
    from another by coming first, rules removed, a URL conversion forgotten, and retention dropping
    the pageviews' day: the rollups follow, values per currency included."""
    s, _ = filled
    tours = "SELECT count(*) FROM rollup_conversions WHERE conversion_name = $1"
    assert await db.fetchval(tours, "tour") == 1
    await db.execute("INSERT INTO conversion_rules (name, url_pattern) VALUES ('floorplan', '%/floorplans%')")
    await check(migrated, db)
    assert await db.fetchval(tours, "floorplan") > 1
    # 'a_thanks' sorts before 'tour': the thank-you pageview converts once, under it, with its value
    await db.execute("INSERT INTO conversion_rules VALUES ('a_thanks', '%thank-you?ref=%', 5, 'EUR')")
    await check(migrated, db)
    assert (await db.fetchval(tours, "tour"), await db.fetchval(tours, "a_thanks")) == (0, 1)
    await db.execute("UPDATE conversion_rules SET value = 7 WHERE name = 'a_thanks'")
    await check(migrated, db)
    assert await db.fetchval("SELECT value FROM rollup_conversions WHERE conversion_name = 'a_thanks'") == 7
    await db.execute("DELETE FROM conversion_rules WHERE name IN ('a_thanks', 'floorplan')")
    await check(migrated, db)
    assert (await db.fetchval(tours, "tour"), await db.fetchval(tours, "floorplan")) == (1, 0)
    async with db.transaction():
        await delete_rows(db, s["a1"].guid)  # `touchstream forget`: the thank-you page was a's
    await check(migrated, db)
    assert await db.fetchval(tours, "tour") == 0
    await db.execute("INSERT INTO conversion_rules (name, url_pattern) VALUES ('floorplan', '%/floorplans%')")
    await check(migrated, db)
    await db.execute("SET ROLE touchstream_writer")
    cutoff = (T0 + 2 * D).astimezone(UTC).date()
    dropped = await db.fetchval("SELECT drop_day_partitions_before('pageviews', $1)", cutoff)
    await db.execute("RESET ROLE")
    assert dropped
    await check(migrated, db)


async def test_a_merge_moves_a_url_conversion(migrated, db, filled):
    """The merge of tests/merge_play.py re-points a pageview a rule converts: its conversion follows
    the surviving session, and its credits the device's touches."""
    await db.execute("INSERT INTO conversion_rules VALUES ('home', 'https://www.oakridge-apts.com/', 1.5, 'CHF')")
    first, second = merge_play.play()
    writer = Writer(migrated.dsn, migrated.schema, role="touchstream_writer")
    try:
        await writer.write(decode_batch(first, merge_play.ROLES, now=merge_play.NOW))
        await check(migrated, db)
        moved = await db.fetchval("SELECT count(*) FROM rollup_conversions WHERE conversion_name = 'home' "
                                  "AND session_id = $1", merge_play.B)
        assert moved == 1  # the bridged session's pageview, before the merge
        await writer.write(decode_batch(second, merge_play.ROLES, now=merge_play.NOW))
    finally:
        await writer.close()
    await check(migrated, db)
    assert await db.fetchval("SELECT count(*) FROM rollup_conversions WHERE session_id = $1", merge_play.B) == 0


@pytest.mark.parametrize("days", [30, 45])
async def test_the_lookback_changes_and_the_rollups_follow(migrated, db, filled, days):
    """30 days is among the rollups' lookbacks already; 45 is not, so it is added and the rollups rebuilt
    in the setting's own transaction. Either way the views (now at that lookback) equal the rollups at
    once, and after later writes and drains; back at 90, 45 leaves rollup_lookbacks."""
    s, items = filled
    await db.execute("UPDATE attribution_settings SET lookback_days = $1", days)
    assert days in [r[0] for r in await db.fetch("SELECT days FROM rollup_lookbacks")]
    assert await mismatches(db) == {}
    await write(migrated, crowd(devices=20, seed=11))
    await check(migrated, db)
    await db.execute("UPDATE attribution_settings SET lookback_days = 90")
    assert sorted(r[0] for r in await db.fetch("SELECT days FROM rollup_lookbacks")) == [7, 30, 90]
    await check(migrated, db)


async def test_a_crowd_written_in_batches_while_drains_run(migrated, db):
    """Writes racing drains that take a few devices per transaction: each drain folds a consistent
    state of the devices it takes, and the last one leaves everything exact."""
    items = crowd(devices=40, seed=3)
    drains = await write_while_draining(migrated, [items[start:start + 97] for start in range(0, len(items), 97)])
    assert drains > 1
    assert await db.fetchval("SELECT count(*) FROM rollup_credits") > 20
    await check(migrated, db)


async def test_as_of_says_what_the_rollups_hold(migrated, db, filled):
    s, _ = filled
    before = await db.fetchval("SELECT as_of FROM rollup_state")
    await write(migrated, [s["a1"].model_copy(update={"version": 9, "pageviews": 9})])
    written = datetime.now(UTC)
    assert await db.fetchval("SELECT as_of FROM rollup_state") == before < written  # not folded yet
    done = await drained(migrated)
    assert done.as_of == await db.fetchval("SELECT as_of FROM rollup_state") and done.as_of > written
    assert (done.devices, done.sessions, done.steps) == (1, 1, 1)


async def test_a_drain_needs_its_snapshot_and_the_lock(migrated, db, filled):
    with pytest.raises(asyncpg.InvalidTransactionStateError, match="REPEATABLE READ"):
        await db.fetchrow("SELECT * FROM rollup_drain(10)")  # READ COMMITTED: refused
    holder = await migrated.connect()
    try:
        await holder.execute("SELECT pg_advisory_lock(rollup_lock_key())")
        assert await drain(db, migrated.schema, wait=False) is None  # another drain runs: skip
        await holder.execute("SELECT pg_advisory_unlock(rollup_lock_key())")
        assert await drain(db, migrated.schema, wait=False) is not None
    finally:
        await holder.close()


async def test_the_sink_workers_drainers_converge(migrated, db):
    """Two workers' drain tasks (one folds each round, the other skips) keep the rollups current."""
    settings = SinkSettings(pg_dsn=migrated.dsn, pg_schema=migrated.schema, sink_rollup_interval_s=0.05,
                            sink_rollup_batch=50)
    drainers = [RollupDrainer(settings) for _ in range(2)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(d.run(stop)) for d in drainers]
    try:
        _, items = journeys()
        await write(migrated, items + crowd(devices=30, seed=5))
        written = datetime.now(UTC)
        for _ in range(600):
            if await db.fetchval("SELECT as_of FROM rollup_state") > written:
                break
            await asyncio.sleep(0.05)
        assert await mismatches(db) == {}
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def test_rebuild_gives_the_same_rollups(migrated, db, filled):
    await drained(migrated)
    before = await mismatches(db)
    await db.execute("SELECT rollup_rebuild()")
    assert before == {} == await mismatches(db)
