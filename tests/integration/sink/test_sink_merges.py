"""SPEC rule 6 in PostgreSQL: a late hit that bridges two sessions already closed and written
converges the rows — one session, its hits re-pointed, the device's counts, the attribution
views — and the retraction holds against replays and stale snapshots.

The records (tests/merge_play.py) are what the pure core publishes for these hits, written
through the sink's real write path (decode_batch + Writer)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest

from schemas.wire import encode
from sink.batch import decode_batch
from sink.testing import RecordStream
from sink.writer import Writer
from tests.merge_play import NOW, ROLES, T0_DT, A, B
from tests.merge_play import play as _play


async def _write(writer: Writer, records: list[Any]) -> dict[str, int]:
    return await writer.write(decode_batch(records, ROLES, now=NOW))


async def _state(db: Any) -> dict[str, Any]:
    return {
        "sessions": [tuple(r) for r in await db.fetch(
            "SELECT session_id::text, session_index, hits, pageviews, events, channel, started_at, last_seen_at, "
            "status FROM sessions ORDER BY started_at")],
        "pageviews": sorted((str(r[0]), str(r[1])) for r in await db.fetch("SELECT hit_id, session_id FROM pageviews")),
        "events": sorted((str(r[0]), str(r[1])) for r in await db.fetch("SELECT hit_id, session_id FROM events")),
        "devices": [tuple(r) for r in await db.fetch("SELECT sessions, first_session_id::text, first_channel FROM devices")],
        "credits": sorted(tuple(r) for r in await db.fetch(
            "SELECT model, session_id::text, round(credit::numeric, 9) FROM attribution_credits")),
    }


async def test_a_bridging_hit_after_both_sessions_were_written_converges_the_rows(writer: Writer, db: Any) -> None:
    first, second = _play()
    await _write(writer, first)
    before = await _state(db)
    assert [s[0] for s in before["sessions"]] == [A, B]
    assert {s for _, s in before["pageviews"]} == {A, B} and before["devices"] == [(2, A, "Paid Search")]

    written = await _write(writer, second)
    assert written["session_retractions"] == 1 and written["moves"] == 2  # B's pageview and the lead
    after = await _state(db)
    [(sid, index, hits, pageviews, events, channel, started, last, status)] = after["sessions"]
    assert (sid, index, hits, pageviews, events, channel, status) == (A, 1, 4, 3, 1, "Paid Search", "closed")
    assert (started, last) == (T0_DT, T0_DT + timedelta(minutes=56))
    assert {s for _, s in after["pageviews"]} == {A} and {s for _, s in after["events"]} == {A}
    assert after["devices"] == [(1, A, "Paid Search")]
    # The lead's touches: only the merged session, each model's credits summing to 1.
    models = {m for m, _, _ in after["credits"]}
    assert len(models) == 6 and all(s == A and c == 1 for _, s, c in after["credits"])
    assert await db.fetchval("SELECT merged_into::text FROM session_retractions WHERE session_id = $1", B) == A

    # A sink that replays from older offsets (the first batch again, then the second) and one
    # that gets the first batch's stale snapshots after the retraction leave the same rows.
    await _write(writer, first)
    await _write(writer, second)
    assert await _state(db) == after
    await _write(writer, [r for r in first if r.topic == ROLES.sessions])
    assert await _state(db) == after


async def test_replay_of_the_whole_log_into_an_empty_database_gives_the_same_rows(writer: Writer, db: Any,
                                                                                  migrated: Any) -> None:
    first, second = _play()
    await _write(writer, first + second)  # one batch: the snapshot of B and its retraction meet
    together = await _state(db)
    assert [s[0] for s in together["sessions"]] == [A]
    assert {s for _, s in together["pageviews"]} == {A}
    assert together["devices"] == [(1, A, "Paid Search")]


@pytest.mark.parametrize("later_version", [True, False])
async def test_a_snapshot_over_a_retraction_applies_only_with_a_higher_version(writer: Writer, db: Any,
                                                                               later_version: bool) -> None:
    first, second = _play()
    await _write(writer, first + second)
    retraction_version = await db.fetchval("SELECT version FROM session_retractions WHERE session_id = $1", B)
    stale = next(r for r in first if r.topic == ROLES.sessions and r.key == B.encode())
    snap = orjson.loads(stale.value)
    snap["version"] = retraction_version + (1 if later_version else 0)
    rs = RecordStream()
    await _write(writer, [rs.record(ROLES.sessions, encode(snap), key=B.encode())])
    ids = [s[0] for s in (await _state(db))["sessions"]]
    # A split that gives B's id back publishes it with a higher version; an equal one is stale.
    assert ids == ([A, B] if later_version else [A])
    left = await db.fetchval("SELECT count(*) FROM session_retractions")
    assert left == (0 if later_version else 1)

