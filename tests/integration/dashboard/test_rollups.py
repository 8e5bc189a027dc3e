"""The rollups of migration 0005 equal the tables and views they summarise, exactly, after every
kind of change the pipeline makes: new rows through the sink's real writer, replays, late hits
that move sessions, merges (a session deleted, its events re-pointed), late conversions, a new
conversion name, `touchstream forget`, a bot flag, and retention dropping day partitions."""

from __future__ import annotations

from typing import Any

import pytest

from tests.dashboard_data import D, H, crowd, journeys, write
from rollup_checks import mismatches
from schemas.timefmt import UTC
from sink.testing import T0, event
from touchstream.forget import delete_rows

async def check(db: Any) -> None:
    assert await mismatches(db) == {}
    for table in ("rollup_pending_sessions", "rollup_pending_conversions", "rollup_pending_folds"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table


@pytest.fixture
async def filled(migrated: Any, db: Any) -> tuple[dict[str, Any], list]:
    s, items = journeys()
    await write(migrated, items)
    assert await db.fetchval("SELECT count(*) FROM rollup_credits") > 0  # the fixture is not empty
    return s, items


async def test_new_rows_and_replays(migrated, db, filled):
    await check(db)
    before = await db.fetch("SELECT * FROM rollup_sessions_daily ORDER BY 1, 2, 3, 4, 5, 6, 7")
    _, items = filled
    await write(migrated, items)  # a replay: every row is there already, nothing changes
    await check(db)
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
    await check(db)


async def test_merged_sessions_are_retracted(migrated, db, filled):
    """What the sink does when a late hit bridges two sessions: the later one is deleted, its
    pageviews and events re-pointed to the survivor, which grows (as a superuser here)."""
    s, _ = filled
    a2, a3 = s["a2"], s["a3"]
    async with db.transaction():
        await db.execute("DELETE FROM sessions WHERE session_id = $1", a3.session_id)
        await db.execute("UPDATE sessions SET pageviews = pageviews + 2, events = 1, last_seen_at = $2, "
                         "version = version + 1 WHERE session_id = $1", a2.session_id, a3.last_seen_at)
        for table in ("pageviews", "events"):
            await db.execute(f"UPDATE {table} SET session_id = $1 WHERE session_id = $2", a2.session_id,
                             a3.session_id)
    await check(db)


async def test_conversion_names_bots_forget_and_retention(migrated, db, filled):
    s, _ = filled
    await db.execute("INSERT INTO conversion_events (name) VALUES ('chat_open')")
    await check(db)
    await db.execute("DELETE FROM conversion_events WHERE name = 'lead'")
    await check(db)
    b1 = s["b1"]
    await write(migrated, [b1.model_copy(update={"version": 5, "is_bot": True})])
    await check(db)
    async with db.transaction():
        await delete_rows(db, s["a1"].guid)  # `touchstream forget`'s deletion
    await check(db)
    await db.execute("SET ROLE touchstream_writer")
    cutoff = (T0 + 2 * D).astimezone(UTC).date()  # drops the day of b's appointment
    dropped = await db.fetchval("SELECT drop_day_partitions_before('events', $1)", cutoff)
    await db.execute("RESET ROLE")
    assert dropped, "the retention call dropped no partition: the test proves nothing"
    await check(db)


async def test_a_crowd_written_in_batches(migrated, db):
    items = crowd(devices=40, seed=3)
    for start in range(0, len(items), 97):  # many transactions, each with its own fold
        await write(migrated, items[start:start + 97])
    assert await db.fetchval("SELECT count(*) FROM rollup_credits") > 20
    await check(db)


async def test_rebuild_gives_the_same_rollups(migrated, db, filled):
    before = await mismatches(db)
    await db.execute("SELECT rollup_rebuild()")
    assert before == {} == await mismatches(db)
