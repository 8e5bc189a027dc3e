"""The per-person rollups of migration 0012 equal the attribution_person_* views exactly (rollup_checks:
credit for credit, daily sums and value per currency), once drained, when identities change who a
conversion's person is: a login that joins two devices after both converted, a storage clear that
links a new device, `touchstream forget` of one device of a person, late hits and a merge inside a
person, identities written while drains run, and the lookback changed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from rollup_checks import mismatches
from sink.batch import decode_batch
from sink.testing import T0, event, pageview, session
from sink.writer import Writer
from tests import merge_play
from tests.dashboard_data import D, H, add_rules, crowd, drained, journeys, write, write_while_draining
from touchstream.forget import delete_rows

QUEUES = ("rollup_pending_devices", "rollup_pending_conversions", "rollup_pending_persons")
FIRST_TOUCH = ("SELECT session_id::text, touch_count FROM rollup_person_credits WHERE lookback_days = 90 "
               "AND conversion_name = $1 AND touch_index = 1")


async def check(migrated: Any, db: Any) -> None:
    """Drain, then every rollup (device and person) equals the tables and views; nothing left queued."""
    await drained(migrated)
    assert await mismatches(db) == {}
    for table in QUEUES:
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table


def login(guid: str, session_id: str, user_id: str, at: Any) -> Any:
    """A pageview that carries a user id (identify()), as the sessionizer forwards it."""
    return pageview(guid=guid, session_id=session_id, occurred_at=at, user_id=user_id)


@pytest.fixture
async def filled(migrated: Any, db: Any) -> dict[str, Any]:
    s, items = journeys()
    await add_rules(migrated)
    await write(migrated, items)
    await check(migrated, db)
    return s


async def test_a_login_joins_two_devices_after_both_converted(migrated, db, filled):
    """a (Paid Search, then a lead) and b (Organic Social, then an appointment) both converted as
    devices of their own; a login on each makes them one person: b's appointment is first touched by
    a's Paid Search visit, per person, and the rollups follow without a rebuild."""
    s = filled
    assert tuple(await db.fetchrow(FIRST_TOUCH, "appointment")) == (s["b1"].session_id, 2)
    await write(migrated, [login(s["a1"].guid, s["a1"].session_id, "u-7", s["a1"].started_at + H),
                           login(s["b1"].guid, s["b1"].session_id, "u-9", s["b1"].started_at + H)])
    await check(migrated, db)  # two persons of one device each: nothing moves yet
    assert tuple(await db.fetchrow(FIRST_TOUCH, "appointment")) == (s["b1"].session_id, 2)
    # b logs in as u-7 too: the two persons merge (b's row of person_devices is updated)
    await write(migrated, [login(s["b1"].guid, s["b1"].session_id, "u-7", s["b1"].started_at + 2 * H)])
    assert await db.fetchval("SELECT count(*) FROM rollup_pending_persons") > 0  # queued by the merge
    await check(migrated, db)
    assert tuple(await db.fetchrow(FIRST_TOUCH, "appointment")) == (s["a1"].session_id, 3)
    assert {r[0] for r in await db.fetch("SELECT DISTINCT person FROM rollup_person_credits")} >= {"u-7"}
    # a storage clear on b: a new device linked to b converts, touched by a's and b's sessions too
    c = session(guid="dddddddd-0000-4000-8000-000000000004", session_index=1, started_at=s["b2"].started_at + H,
                channel="Email", utm_source="newsletter", utm_medium="email", utm_campaign="may", status="closed")
    await write(migrated, [c, pageview(guid=c.guid, session_id=c.session_id, occurred_at=c.started_at,
                                       previous_guid=s["b1"].guid),
                           event(name="lead", module="chat", guid=c.guid, session_id=c.session_id,
                                 occurred_at=c.started_at + H)])
    await check(migrated, db)
    linked = await db.fetchrow("SELECT touch_count, person FROM rollup_person_credits WHERE lookback_days = 90 "
                               "AND guid = $1 AND touch_index = 1", c.guid)
    assert tuple(linked) == (4, "u-7")  # a1, b1, b2 (a2 comes later) and its own session


async def test_forget_of_one_device_of_a_person(migrated, db, filled):
    """Forgetting a takes its touches away from b's appointment: b's credit is its own again."""
    s = filled
    await write(migrated, [login(s["a1"].guid, s["a1"].session_id, "u-7", s["a1"].started_at + H),
                           login(s["b1"].guid, s["b1"].session_id, "u-7", s["b1"].started_at + H)])
    await check(migrated, db)
    assert tuple(await db.fetchrow(FIRST_TOUCH, "appointment")) == (s["a1"].session_id, 3)
    async with db.transaction():
        await delete_rows(db, s["a1"].guid)  # `touchstream forget`'s deletion; b's person is rebuilt
    await check(migrated, db)
    assert tuple(await db.fetchrow(FIRST_TOUCH, "appointment")) == (s["b1"].session_id, 2)
    assert await db.fetchval("SELECT count(*) FROM rollup_person_credits WHERE touch_guid = $1", s["a1"].guid) == 0


async def test_late_hits_move_a_touch_of_another_device_of_the_person(migrated, db, filled):
    """A late hit moves a1 (a's) start: b's appointment, which a1 touches per person only, changes."""
    s = filled
    await write(migrated, [login(s["a1"].guid, s["a1"].session_id, "u-7", s["a1"].started_at + H),
                           login(s["b1"].guid, s["b1"].session_id, "u-7", s["b1"].started_at + H)])
    await check(migrated, db)
    a1 = s["a1"]
    await write(migrated, [a1.model_copy(update={"version": 2, "started_at": a1.started_at - 10 * H,
                                                 "channel": "Display", "pageviews": 4})])
    await check(migrated, db)
    assert await db.fetchval("SELECT channel FROM rollup_person_credits WHERE lookback_days = 90 AND "
                             "conversion_name = 'appointment' AND touch_index = 1") == "Display"


async def test_a_merge_inside_a_person(migrated, db):
    """merge_play's device and a second device X are one person; X's appointment is touched by the
    device's two sessions and its own. The merge retracts one of them: the appointment's touches
    fall from 3 to 2, per person, though nothing of X changed."""
    first, second = merge_play.play()
    x = session(guid="eeeeeeee-0000-4000-8000-000000000005", session_index=1,
                started_at=merge_play.T0_DT + 90 * timedelta(minutes=1), channel="Email", status="closed")
    writer = Writer(migrated.dsn, migrated.schema, role="touchstream_writer")
    try:
        await writer.write(decode_batch(first, merge_play.ROLES, now=merge_play.NOW))
        await write(migrated, [
            x, login(x.guid, x.session_id, "m-1", x.started_at),
            login(merge_play.GUID, merge_play.A, "m-1", merge_play.T0_DT),
            event(name="appointment", module="scheduler", guid=x.guid, session_id=x.session_id,
                  occurred_at=x.started_at + 30 * timedelta(minutes=1), value=249.5, currency="USD")])
        await check(migrated, db)
        assert (await db.fetchrow(FIRST_TOUCH, "appointment"))["touch_count"] == 3
        written = await writer.write(decode_batch(second, merge_play.ROLES, now=merge_play.NOW))
    finally:
        await writer.close()
    assert written["session_retractions"] == 1
    await check(migrated, db)
    assert tuple(await db.fetchrow(FIRST_TOUCH, "appointment")) == (merge_play.A, 2)


async def test_identities_written_while_drains_run(migrated, db):
    """A crowd whose devices log in in pairs and threes (user ids shared across batches), written in
    many transactions while drains of a few devices run: the last drain leaves everything exact."""
    items = crowd(devices=40, seed=13)
    sessions_ = [i for i in items if i.__class__.__name__ == "SessionSnapshot"]
    guids = sorted({x.guid for x in sessions_})
    firsts = {x.guid: x for x in reversed(sessions_)}
    logins = [login(g, firsts[g].session_id, f"user-{n % 15}", firsts[g].started_at) for n, g in enumerate(guids)]
    items = items + logins[::2]
    # (the other half log in after their conversions are folded)
    drains = await write_while_draining(
        migrated, [items[start:start + 83] for start in range(0, len(items), 83)] + [logins[1::2]])
    assert drains > 1
    assert await db.fetchval("SELECT count(DISTINCT person_id) FROM person_devices WHERE named") == 15
    assert await db.fetchval("SELECT count(*) FROM rollup_person_credits WHERE touch_guid <> guid") > 0
    await check(migrated, db)


@pytest.mark.parametrize("days", [30, 45])
async def test_the_lookback_changes_with_persons(migrated, db, filled, days):
    s = filled
    await write(migrated, [login(s["a1"].guid, s["a1"].session_id, "u-7", s["a1"].started_at + H),
                           login(s["b1"].guid, s["b1"].session_id, "u-7", s["b1"].started_at + H)])
    await db.execute("UPDATE attribution_settings SET lookback_days = $1", days)
    await check(migrated, db)
    await db.execute("UPDATE attribution_settings SET lookback_days = 90")
    await check(migrated, db)


async def test_rebuild_gives_the_same_person_rollups(migrated, db, filled):
    s = filled
    await write(migrated, [login(s["a1"].guid, s["a1"].session_id, "u-7", s["a1"].started_at + H),
                           login(s["b1"].guid, s["b1"].session_id, "u-7", s["b1"].started_at + H)])
    await check(migrated, db)
    before = await db.fetch("SELECT * FROM rollup_person_credits ORDER BY lookback_days, converted_at, session_id")
    await db.execute("SELECT rollup_rebuild()")
    assert await mismatches(db) == {}
    assert await db.fetch("SELECT * FROM rollup_person_credits ORDER BY lookback_days, converted_at, "
                          "session_id") == before


async def test_identity_retention_splits_a_person_and_the_rollups_follow(migrated, db, filled):
    """a and b are one person only by their logins (u-7); identity retention (migration 0013) expires
    both identities: they are devices of their own again, and the per-person credit of b's
    appointment is b's own touches' at the next drain."""
    s = filled
    await write(migrated, [login(s["a1"].guid, s["a1"].session_id, "u-7", s["a1"].started_at + H),
                           login(s["b1"].guid, s["b1"].session_id, "u-7", s["b1"].started_at + H)])
    await check(migrated, db)
    assert tuple(await db.fetchrow(FIRST_TOUCH, "appointment")) == (s["a1"].session_id, 3)
    await db.execute("SET ROLE touchstream_writer")  # as the sink's retention job runs it
    try:
        assert await db.fetchval("SELECT expire_identities($1, 100)", s["b2"].started_at + 10 * D) == 2
    finally:
        await db.execute("RESET ROLE")
    assert await db.fetchval("SELECT count(*) FROM person_devices") == 0
    await check(migrated, db)
    assert tuple(await db.fetchrow(FIRST_TOUCH, "appointment")) == (s["b1"].session_id, 2)
