"""Retention of identities, device_links and person_devices (migration 0013, sink.retention): an
identity goes when its user id was not seen on the device since the cutoff, a link when it is older
and neither of its devices has had a session since, and the persons they held are rebuilt so that
person_devices is exactly what person_link() makes of the remaining edges from scratch. Real
PostgreSQL, through the sink's retention job as the writer role."""

from __future__ import annotations

from datetime import datetime, timedelta

from schemas.timefmt import UTC
from sink.consumer import SinkConsumer
from sink.retention import RowRetention
from sink.settings import SinkSettings
from sink.testing import session
from tests.dashboard_data import write

NOW = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)
OLD, YOUNG = NOW - timedelta(days=40), NOW - timedelta(days=2)
G = {k: f"{n:08x}-0000-4000-8000-{n:012x}" for n, k in enumerate("ACPQXYZ", 1)}


async def _persons(db) -> list[tuple]:
    return [tuple(r) for r in await db.fetch("SELECT guid::text, person_id, named FROM person_devices ORDER BY 1")]


async def _from_scratch(db) -> list[tuple]:
    """person_devices as person_link() makes it of the edges now in the tables (rolled back)."""
    tr = db.transaction()
    await tr.start()
    try:
        await db.execute("DELETE FROM person_devices")
        await db.execute(
            "SELECT person_link(coalesce(array_agg(g), '{}'), coalesce(array_agg(u), '{}'), "
            "coalesce(array_agg(o), '{}')) FROM (SELECT guid AS g, user_id AS u, NULL::uuid AS o FROM identities "
            "UNION ALL SELECT guid, NULL, previous_guid FROM device_links ORDER BY 1, 2, 3) e")
        return await _persons(db)
    finally:
        await tr.rollback()


async def _edges(db, identities: list[tuple], links: list[tuple]) -> None:
    """Identities and links as the sink's writer upserts them, merged by person_link as it merges them."""
    await db.executemany("INSERT INTO identities (guid, user_id, first_seen, last_seen) VALUES ($1, $2, $3, $3)",
                         identities)
    await db.executemany("INSERT INTO device_links (guid, previous_guid, linked_at) VALUES ($1, $2, $3)", links)
    await db.execute("SELECT person_link($1::uuid[], $2::text[], $3::uuid[])",
                     [i[0] for i in identities] + [k[0] for k in links],
                     [i[1] for i in identities] + [None] * len(links),
                     [None] * len(identities) + [k[1] for k in links])


async def test_old_identities_and_idle_links_expire_and_persons_are_rebuilt(migrated, db):
    """amy: A's identity is old, C's young: A leaves her (C's old `cleo` goes too). X and Y are one person only by an old link
    between two idle devices: it expires and they split into xena and yves (their own young ids). P and
    Q's old link stays because Q had a session since the cutoff. Z's young link stays too."""
    await write(migrated, [session(guid=G["Q"], started_at=YOUNG, status="closed")])
    await _edges(db, [(G["A"], "amy", OLD), (G["C"], "amy", YOUNG), (G["C"], "cleo", OLD), (G["X"], "xena", YOUNG),
                      (G["Y"], "yves", YOUNG)],
                 [(G["Y"], G["X"], OLD), (G["Q"], G["P"], OLD), (G["Z"], G["A"], YOUNG)])
    before = dict((g, p) for g, p, _ in await _persons(db))
    assert before[G["A"]] == before[G["C"]] == before[G["Z"]] == "amy" and before[G["Y"]] == "xena"

    sink = SinkConsumer(SinkSettings(pg_dsn=migrated.dsn, pg_schema=migrated.schema, sink_metrics_port=0,
                                     sink_sessions_retention_days=None, sink_identities_retention_days=30,
                                     sink_retractions_retention_days=None, sink_retention_batch_rows=1),
                        clock=lambda: NOW)
    try:
        deleted = 0
        while step := (await sink.expire_rows()).get("identities", 0):
            deleted += step
    finally:
        await sink.writer.close()
    assert deleted == 3  # A's amy, C's cleo and the X-Y link
    assert sorted(tuple(r) for r in await db.fetch("SELECT guid::text, user_id FROM identities")) == sorted(
        [(G["C"], "amy"), (G["X"], "xena"), (G["Y"], "yves")])
    assert sorted(tuple(r) for r in await db.fetch("SELECT guid::text, previous_guid::text FROM device_links")) == \
        sorted([(G["Q"], G["P"]), (G["Z"], G["A"])])
    after = await _persons(db)
    assert after == await _from_scratch(db)  # the union-find of what remains, exactly
    persons = {g: p for g, p, _ in after}
    assert (persons[G["X"]], persons[G["Y"]]) == ("xena", "yves")  # split by the expired link
    assert persons[G["C"]] == "amy" and persons[G["A"]] == persons[G["Z"]] != "amy"  # A keeps its young link to Z
    assert persons[G["P"]] == persons[G["Q"]] == min(G["P"], G["Q"])


async def test_a_device_without_edges_leaves_person_devices(migrated, db):
    await _edges(db, [(G["A"], "amy", OLD), (G["C"], "amy", OLD)], [])
    await db.execute("SET ROLE touchstream_writer")  # the sink's role may expire, not delete
    try:
        # at most max_rows of each table per call (each call a short transaction of the retention job)
        calls = [await db.fetchval("SELECT expire_identities($1, 1)", NOW - timedelta(days=30)) for _ in range(3)]
        assert calls == [1, 1, 0]
    finally:
        await db.execute("RESET ROLE")
    assert await _persons(db) == [] == await _from_scratch(db)


def test_identities_follow_the_sessions_retention_unless_set() -> None:
    def days(**kw: int | None) -> int | None:
        settings = SinkSettings(sink_metrics_port=0, sink_retractions_retention_days=None, **kw)
        return RowRetention.from_settings(settings).days.get("identities")

    assert days() is None and days(sink_sessions_retention_days=90) == 90
    assert days(sink_sessions_retention_days=90, sink_identities_retention_days=30) == 30
    assert days(sink_sessions_retention_days=90, sink_identities_retention_days=0) is None  # 0: kept
    assert days(sink_identities_retention_days=400) == 400
