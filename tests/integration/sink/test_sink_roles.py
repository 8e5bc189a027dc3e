"""Roles: the analyst only reads (and never the raw dead-letter bytes); the writer writes, nothing more."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import pytest

from schemas.timefmt import UTC
from sink.batch import TopicRoles, decode_batch
from sink.testing import RecordStream, pageview, session

ROLES = TopicRoles.from_prefix("r.")


@pytest.fixture
async def filled(writer, db):
    rs = RecordStream()
    batch = decode_batch([rs.record(ROLES.sessions, session()), rs.record(ROLES.events, pageview()),
                          rs.record(ROLES.events, b"\x00garbage")], ROLES, now=datetime.now(UTC))
    await writer.write_isolating(batch)
    return db


async def as_role(db, role: str):
    await db.execute(f"SET ROLE {role}")


WRITES = [
    "INSERT INTO sessions SELECT * FROM sessions",
    "UPDATE sessions SET pageviews = 0",
    "DELETE FROM pageviews",
    "UPDATE devices SET sessions = 0",
    "INSERT INTO conversion_events (name) VALUES ('signup')",
    "DELETE FROM deadletter",
    "TRUNCATE late_hits",
    "CREATE TABLE mine (x int)",
    "SELECT ensure_day_partitions('events', ARRAY[current_date + 100])",
]


@pytest.mark.parametrize("statement", WRITES)
async def test_the_analyst_cannot_write(filled, statement):
    await as_role(filled, "touchstream_analyst")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await filled.execute(statement)


async def test_the_analyst_reads_everything_but_dead_letter_payloads(filled):
    await as_role(filled, "touchstream_analyst")
    for table in ("sessions", "pageviews", "events", "devices", "late_hits", "conversion_events",
                  "conversions", "attribution_credits", "attribution_report", "conversion_rules",
                  "attribution_settings", "attribution_person_credits", "attribution_person_report",
                  "rollup_value_daily"):
        await filled.fetch(f"SELECT * FROM {table} LIMIT 1")
    assert await filled.fetchval("SELECT count(*) FROM sessions") == 1
    assert await filled.fetchval("SELECT reason FROM deadletter") == "not valid JSON"
    assert await filled.fetchval("SELECT payload_bytes FROM deadletter_info") == len(b"\x00garbage")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await filled.fetch("SELECT payload FROM deadletter")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await filled.fetch("SELECT * FROM deadletter")


@pytest.mark.parametrize("statement", [
    "DELETE FROM pageviews",
    "DELETE FROM devices",
    "DROP TABLE events",
    "CREATE TABLE mine (x int)",
    "UPDATE pageviews SET title = 'x'",
    "UPDATE events SET occurred_at = now()",
])
async def test_the_writer_cannot_delete_or_change_the_schema(filled, statement):
    """Beyond what it writes: it deletes only sessions (merged away by a late hit, SPEC rule 6)
    and changes only the session_id of pageviews and events (their hits moved)."""
    await as_role(filled, "touchstream_writer")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await filled.execute(statement)


async def test_the_analyst_sees_no_retracted_session_ids(filled):
    await as_role(filled, "touchstream_analyst")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await filled.fetch("SELECT * FROM session_retractions")


async def test_the_writer_creates_day_partitions_only_through_the_function(filled):
    await as_role(filled, "touchstream_writer")
    assert await filled.fetchval("SELECT ensure_day_partitions('events', ARRAY['2031-01-01'::date])") == 1
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await filled.execute("CREATE TABLE events_p20310102 PARTITION OF events "
                             "FOR VALUES FROM ('2031-01-02') TO ('2031-01-03')")
    with pytest.raises(asyncpg.InvalidParameterValueError):
        await filled.fetchval("SELECT ensure_day_partitions('sessions', ARRAY['2031-01-01'::date])")
