"""Migrations against a real PostgreSQL: twice is a no-op, an older schema upgrades, history is checked."""

from __future__ import annotations

import asyncio

import pytest

from sink.migrations import MigrationError, discover, main, migrate
from sink.migrations.runner import Migration

LATEST = discover()[-1].version
VERSIONS = [m.version for m in discover()]  # in order; a number may be free for another branch's migration


async def objects(conn, schema: str) -> set[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT c.relkind::text, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1", schema)
    return {(r[0], r[1]) for r in rows}


async def test_running_twice_is_a_no_op(pg_schema):
    first = await migrate(pg_schema.dsn, pg_schema.schema)
    assert [v for v, _, _ in first.applied] == VERSIONS
    conn = await pg_schema.connect()
    try:
        history = await conn.fetch("SELECT * FROM schema_migrations ORDER BY version")
        before = await objects(conn, pg_schema.schema)
        second = await migrate(pg_schema.dsn, pg_schema.schema)
        assert second.applied == [] and second.current == LATEST
        assert await conn.fetch("SELECT * FROM schema_migrations ORDER BY version") == history
        assert await objects(conn, pg_schema.schema) == before
        assert {("r", "sessions"), ("p", "pageviews"), ("p", "events"), ("r", "devices"), ("r", "late_hits"),
                ("r", "deadletter"), ("r", "conversion_events"), ("v", "attribution_credits"),
                ("v", "attribution_report")} <= before
    finally:
        await conn.close()


async def test_an_older_schema_is_upgraded_and_keeps_its_data(pg_schema):
    old = await migrate(pg_schema.dsn, pg_schema.schema, target=1)
    assert old.current == 1 and old.pending == VERSIONS[1:]
    conn = await pg_schema.connect()
    try:
        assert await conn.fetchval("SELECT to_regclass('conversion_events')") is None
        await conn.execute(
            "INSERT INTO sessions (session_id, guid, session_index, site, status, started_at, last_seen_at, "
            "duration_s, landing_url, landing_path, channel, pageviews, events, hits, is_bounce, version) "
            "VALUES (gen_random_uuid(), gen_random_uuid(), 1, 's', 'open', now(), now(), 0, 'u', '/', 'Direct', "
            "1, 0, 1, true, 1)")
        upgraded = await migrate(pg_schema.dsn, pg_schema.schema)
        assert [v for v, _, _ in upgraded.applied] == VERSIONS[1:]
        assert await conn.fetchval("SELECT count(*) FROM sessions") == 1
        assert {r[0] for r in await conn.fetch("SELECT name FROM conversion_events")} == {"lead", "appointment"}
        assert await conn.fetchval("SELECT count(*) FROM attribution_credits") == 0
    finally:
        await conn.close()


async def test_concurrent_runs_apply_each_migration_once(pg_schema):
    reports = await asyncio.gather(*(migrate(pg_schema.dsn, pg_schema.schema) for _ in range(4)))
    applied = sorted(v for r in reports for v, _, _ in r.applied)
    assert applied == VERSIONS
    assert all(r.current == LATEST for r in reports)


async def test_an_edited_migration_is_refused(pg_schema):
    await migrate(pg_schema.dsn, pg_schema.schema)
    edited = [*discover()]
    edited[0] = Migration(edited[0].version, edited[0].name, edited[0].template + "\n-- edited\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(pg_schema.dsn, pg_schema.schema, migrations=edited)


async def test_a_failing_migration_leaves_nothing_behind(pg_schema):
    broken = [*discover(), Migration(LATEST + 1, "broken", "CREATE TABLE half_done (x int);\nSELECT 1/0;")]
    with pytest.raises(MigrationError, match="broken"):
        await migrate(pg_schema.dsn, pg_schema.schema, migrations=broken)
    conn = await pg_schema.connect()
    try:
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == LATEST
    finally:
        await conn.close()


def test_the_command_migrates_and_reports(pg_schema, monkeypatch, capsys):
    monkeypatch.setenv("TOUCHSTREAM_PG_DSN", pg_schema.dsn)
    monkeypatch.setenv("TOUCHSTREAM_PG_SCHEMA", pg_schema.schema)
    assert main(["--target", "1"]) == 0
    assert "applied 0001_core_tables" in capsys.readouterr().out
    assert main([]) == 0
    assert f"now at version {LATEST:04d}" in capsys.readouterr().out
    assert main([]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["--status"]) == 0
    assert "pending" not in capsys.readouterr().out
