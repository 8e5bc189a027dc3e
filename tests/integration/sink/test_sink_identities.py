"""Identity stitching on a real PostgreSQL (migration 0009): the writer's upserts of `identities` and
`device_links` under replays, and `person_devices` (SPEC section 5: the person rule) by the
incremental union, whatever the order the edges come in; `forget` rebuilds what it leaves."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta

from schemas.timefmt import UTC
from sink.batch import TopicRoles, decode_batch
from sink.testing import T0, RecordStream, event, late_hit, new_id, pageview
from sink.writer import Writer
from touchstream.forget import delete_rows

from sink_helpers import dump

ROLES = TopicRoles.from_prefix("id.")
NOW = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


def decode(records):
    return decode_batch(records, ROLES, now=NOW)


async def persons(db) -> dict[str, tuple[str, bool]]:
    return {str(r["guid"]): (r["person_id"], r["named"]) for r in await db.fetch("SELECT * FROM person_devices")}


async def identity_tables(db) -> dict[str, list[tuple]]:
    return {"identities": await dump(db, "identities", "guid, user_id"),
            "device_links": await dump(db, "device_links", "guid, previous_guid"),
            "person_devices": await dump(db, "person_devices", "guid")}


async def test_identities_keep_first_and_last_seen_under_replays_in_any_order(writer: Writer, db):
    rs = RecordStream()
    guid = new_id()
    hits = [pageview(guid=guid, occurred_at=T0 + n * H, user_id="crm-1") for n in (3, 0, 5, 1)]
    hits.append(event(name="lead", guid=guid, occurred_at=T0 + 2 * H, user_id="crm-1"))
    hits.append(pageview(guid=guid, occurred_at=T0 + 9 * H))  # logged out: names nobody
    records = [rs.record(ROLES.events, h) for h in hits]
    first = await writer.write_isolating(decode(records[:2]))
    assert first["identities"] == 1 and first["person_devices"] == 1
    await writer.write_isolating(decode(records[2:]))
    after = await identity_tables(db)
    assert after["identities"] == [(uuid.UUID(guid), "crm-1", T0, T0 + 5 * H)]
    assert after["person_devices"] == [(uuid.UUID(guid), "crm-1", True)]
    # a replay, whole and in overlapping pieces, changes nothing
    again = await writer.write_isolating(decode(records))
    assert again["identities"] == 0 and "person_devices" not in again
    for start in range(0, len(records), 2):
        await writer.write_isolating(decode(records[start:start + 3]))
    assert await identity_tables(db) == after


async def test_a_late_hit_and_an_earlier_replayed_hit_move_first_seen_back(writer: Writer, db):
    rs = RecordStream()
    guid = new_id()
    await writer.write_isolating(decode([rs.record(ROLES.events, pageview(guid=guid, occurred_at=T0,
                                                                         user_id="crm-2"))]))
    late = late_hit(guid=guid, occurred_at=T0 - 30 * H)
    late.hit["user_id"] = "crm-2"
    await writer.write_isolating(decode([rs.record(ROLES.events, late)]))
    assert await db.fetchrow("SELECT first_seen, last_seen FROM identities") == (T0 - 30 * H, T0)


def chain_records(rs: RecordStream, g: dict[str, str]) -> list:
    """Device a cleared its storage and became b, b became c; c logged in as u2. Device d is u2's phone,
    e is u1's laptop; f -> g is a chain nobody logged in on; h stands alone (no identity, no link)."""
    def hit(device: str, at: int, **extra):
        return rs.record(ROLES.events, pageview(guid=g[device], occurred_at=T0 + at * H, **extra))

    return [
        hit("a", 0), hit("b", 1, previous_guid=g["a"]), hit("c", 2, previous_guid=g["b"]),
        hit("c", 3, user_id="u2"), hit("d", 4, user_id="u2"), hit("e", 5, user_id="u1"),
        hit("g", 6, previous_guid=g["f"]), hit("h", 7),
    ]


async def test_persons_are_the_components_of_identities_and_links_whatever_the_order(writer: Writer, db):
    g = {name: str(uuid.UUID(int=n + 1)) for n, name in enumerate("abcdefgh")}
    expected = {g[x]: ("u2", True) for x in "abcd"} | {g["e"]: ("u1", True)} | \
        {g[x]: (g["f"], False) for x in "fg"}
    rs = RecordStream()
    records = chain_records(rs, g)
    for attempt in range(4):  # every order gives the same persons (the ids are the least of each)
        if attempt:
            await db.execute("TRUNCATE identities, device_links, person_devices")
        order = records[:] if attempt == 0 else random.Random(attempt).sample(records, len(records))
        for record in order:  # one batch each: each edge merges separately
            await writer.write_isolating(decode([record]))
        assert await persons(db) == expected, order
        assert await db.fetchval("SELECT count(*) FROM device_links") == 3
    # One batch with everything, again: the same.
    await db.execute("TRUNCATE identities, device_links, person_devices")
    await writer.write_isolating(decode(records))
    assert await persons(db) == expected


async def test_a_link_merges_two_named_persons_into_the_least_user_id(writer: Writer, db):
    rs = RecordStream()
    laptop, phone, tablet = new_id(), new_id(), new_id()
    await writer.write_isolating(decode([
        rs.record(ROLES.events, pageview(guid=laptop, user_id="zed")),
        rs.record(ROLES.events, pageview(guid=phone, user_id="amy")),
        rs.record(ROLES.events, pageview(guid=tablet, user_id="zed", occurred_at=T0 + H)),
    ]))
    assert set((await persons(db)).values()) == {("zed", True), ("amy", True)}
    # the phone's storage is cleared and its new GUID then logs in as zed: one person, "amy"
    newer = new_id()
    await writer.write_isolating(decode([
        rs.record(ROLES.events, pageview(guid=newer, previous_guid=phone, occurred_at=T0 + 2 * H)),
        rs.record(ROLES.events, pageview(guid=newer, user_id="zed", occurred_at=T0 + 3 * H)),
    ]))
    assert await persons(db) == {d: ("amy", True) for d in (laptop, phone, tablet, newer)}


async def test_forget_removes_the_device_and_rebuilds_the_rest_of_its_person(writer: Writer, db):
    g = {name: str(uuid.UUID(int=n + 1)) for n, name in enumerate("abcdefgh")}
    await writer.write_isolating(decode(chain_records(RecordStream(), g)))
    async with db.transaction():
        counts, _ = await delete_rows(db, g["b"])  # the middle of a -> b -> c
    # person_devices: b's row, and a's (linked to nothing now: no person)
    assert (counts["identities"], counts["device_links"], counts["person_devices"]) == (0, 2, 2)
    after = await persons(db)
    assert g["a"] not in after and g["b"] not in after  # a is linked to nothing now: no person
    assert {after[g[x]] for x in "cd"} == {("u2", True)} and after[g["e"]] == ("u1", True)
    assert await db.fetchval("SELECT count(*) FROM device_links WHERE $1 IN (guid, previous_guid)",
                             uuid.UUID(g["b"])) == 0
    async with db.transaction():
        counts, _ = await delete_rows(db, g["c"])
    assert (counts["identities"], counts["person_devices"]) == (1, 1)
    after = await persons(db)
    assert after[g["d"]] == ("u2", True) and g["c"] not in after


async def test_the_writer_role_cannot_change_persons_but_through_person_link(migrated, db):
    conn = await migrated.connect()
    try:
        await conn.execute("SET ROLE touchstream_writer")
        for statement in ("DELETE FROM person_devices", "UPDATE person_devices SET named = false",
                          "DELETE FROM identities", "SELECT person_rebuild('{}'::uuid[])"):
            try:
                await conn.execute(statement)
            except Exception as exc:  # asyncpg.InsufficientPrivilegeError
                assert "permission denied" in str(exc), statement
            else:
                raise AssertionError(f"the writer role may run {statement}")
        await conn.execute("RESET ROLE")
        await conn.execute("SET ROLE touchstream_analyst")
        assert await conn.fetchval("SELECT count(*) FROM person_devices") == 0
        assert await conn.fetchval("SELECT count(*) FROM identities") == 0
    finally:
        await conn.close()
