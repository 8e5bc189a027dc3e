"""The freshness contract (SPEC section 5, docs/dashboard.md): the dashboard counts every row
committed before the `as_of` it states, and a row written after it shows once the sink's drain
has folded it; the pages state it too."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dashboard import api
from schemas.timefmt import UTC
from sink.testing import T0, session
from tests.dashboard_data import drained, write

SUMMARY = "/api/v1/overview/summary"
PERIOD = {"period": "custom", "from": T0.date().isoformat(), "to": T0.date().isoformat()}


async def _summary(client: Any) -> tuple[int, datetime]:
    response = await client.get(SUMMARY, params=PERIOD)
    assert response.status_code == 200
    body = response.json()
    return body["rows"][0]["sessions"], datetime.fromisoformat(body["as_of"])


async def test_a_new_session_counts_once_drained_and_as_of_says_so(client, filled):
    sessions, as_of = await _summary(client)
    await write(filled, [session(started_at=T0, status="closed")])
    written = datetime.now(UTC)
    assert await _summary(client) == (sessions, as_of) and as_of < written  # not folded yet, and it says so
    await drained(filled)
    now_sessions, now_as_of = await _summary(client)
    assert now_sessions == sessions + 1 and now_as_of > written


async def test_every_page_states_how_fresh_it_is(client, db):
    as_of = await db.fetchval("SELECT as_of FROM rollup_state")
    for page in ("/overview", "/attribution", "/conversions", "/journey", "/sessions"):
        response = await client.get(page)
        assert response.status_code == 200, page
        assert f'<time id="as-of" datetime="{as_of.isoformat()}">' in response.text, page
        assert api.AS_OF_HEADER in response.headers
