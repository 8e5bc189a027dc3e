"""The rollups of migration 0005 equal the tables and views they summarise, exactly, after every
kind of change the pipeline makes: new rows through the sink's real writer, replays, late hits
that move sessions, merges (a session deleted, its events re-pointed), late conversions, a new
conversion name, `touchstream forget`, a bot flag, and retention dropping day partitions."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from rollup_checks import mismatches
from schemas.timefmt import UTC
from sink.batch import TopicRoles, decode_batch
from sink.testing import T0, RecordStream, event, pageview, session
from sink.writer import Writer
from touchstream.forget import delete_rows

ROLES = TopicRoles.from_prefix("roll.")
D = timedelta(days=1)
H = timedelta(hours=1)
OTHER_SITE = "www.maple-court.com"


async def write(migrated: Any, items: list) -> None:
    """Snapshots and records through the sink's own write path, as its writer role."""
    rs = RecordStream()
    records = [rs.record(ROLES.sessions if item.__class__.__name__ == "SessionSnapshot" else ROLES.events, item)
               for item in items]
    writer = Writer(migrated.dsn, migrated.schema, role="touchstream_writer")
    try:
        await writer.write_isolating(decode_batch(records, ROLES, now=T0 + 30 * D))
    finally:
        await writer.close()


async def check(db: Any) -> None:
    assert await mismatches(db) == {}
    for table in ("rollup_pending_sessions", "rollup_pending_conversions", "rollup_pending_folds"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table


def journeys() -> tuple[dict[str, Any], list]:
    """Three devices on two sites: paid, email and direct touches, leads and appointments, a bot."""
    a, b, c = "aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002", \
        "cccccccc-0000-4000-8000-000000000003"
    s = {
        "a1": session(guid=a, session_index=1, started_at=T0, channel="Paid Search", utm_source="google",
                      utm_medium="cpc", utm_campaign="spring", status="closed", pageviews=3),
        "a2": session(guid=a, session_index=2, started_at=T0 + 2 * D, channel="Direct", status="closed"),
        "a3": session(guid=a, session_index=3, started_at=T0 + 3 * D, channel="Email", utm_source="newsletter",
                      utm_medium="email", utm_campaign="may", status="closed", pageviews=2, events=1),
        "b1": session(guid=b, session_index=1, started_at=T0 + D, channel="Organic Social", site=OTHER_SITE,
                      status="closed", pageviews=2, events=1),
        "b2": session(guid=b, session_index=2, started_at=T0 + 1 * D + 5 * H, channel="Direct", status="open",
                      events=1),
        "c1": session(guid=c, session_index=1, started_at=T0 + 2 * D, channel="Organic Search", is_bot=True,
                      user_agent="Googlebot/2.1", status="closed"),
    }
    items: list = list(s.values())
    items += [pageview(guid=x.guid, session_id=x.session_id, occurred_at=x.started_at) for x in s.values()]
    items += [
        event(name="lead", module="contact_form", guid=a, session_id=s["a3"].session_id, occurred_at=T0 + 3 * D + H),
        event(name="chat_open", module="chat", guid=b, session_id=s["b1"].session_id, occurred_at=T0 + D + H),
        event(name="appointment", module="scheduler", guid=b, session_id=s["b2"].session_id,
              occurred_at=T0 + D + 6 * H, site=OTHER_SITE),
    ]
    return s, items


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


async def test_rebuild_gives_the_same_rollups(migrated, db, filled):
    before = await mismatches(db)
    await db.execute("SELECT rollup_rebuild()")
    assert before == {} == await mismatches(db)
