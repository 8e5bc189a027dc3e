"""Every API endpoint answers exactly what the same question asked of the tables and views gives
(dashboard/baseline.py), for every model, grouping, metric and filter, on data the sink wrote.
The rows also validate against the endpoint's row model (the OpenAPI schema)."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import TypeAdapter

from dashboard import api, baseline, queries
from dashboard.params import MODELS
from tests.dashboard_data import OTHER_SITE, drained, journeys
from schemas.timefmt import iso
from sink.testing import T0

DAY = timedelta(days=1)
RANGES = [{"from": T0.date().isoformat(), "to": (T0 + 14 * DAY).date().isoformat()},
          {"from": (T0 + 3 * DAY).date().isoformat(), "to": (T0 + 6 * DAY).date().isoformat()},
          {"from": "2020-01-01", "to": "2020-01-31"}]  # nothing in it: empty answers must match too
SITES = [{}, {"site": OTHER_SITE}]
EVENTS = [{}, {"events": "lead"}]


def combos(*axes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(itertools.chain.from_iterable(d.items() for d in c)) for c in itertools.product(*axes)]


def each(name: str, values: list[Any]) -> list[dict[str, Any]]:
    return [{name: v} for v in values]


FILTERS = combos(RANGES, SITES, EVENTS)
CASES: dict[str, list[dict[str, Any]]] = {
    "summary": FILTERS,
    "timeseries": combos(RANGES, SITES, each("metric", ["sessions", "devices", "pageviews"]))
    + combos(RANGES[:2], SITES, EVENTS, each("model", list(MODELS)), each("lookback", [7, 30, 90]),
             [{"metric": "conversions"}]),
    "top": combos(RANGES, SITES, each("dimension", ["landing_page", "source", "campaign"]), each("limit", [2, 10])),
    "attribution": combos(RANGES[:2], SITES, EVENTS, each("model", list(MODELS)), each("lookback", [7, 30, 90]),
                          each("group_by", ["channel", "source", "campaign", "module"])),
    "conversions_daily": FILTERS,
    "conversions_by_module": FILTERS,
    "conversions_by_channel": combos(RANGES, SITES, EVENTS, each("model", list(MODELS)), each("lookback", [7, 90])),
    "sessions": combos(RANGES[:2], SITES, each("bots", ["exclude", "include", "only"]),
                       each("status", ["any", "closed", "open"]))
    + combos(RANGES[:1], [{"channel": "Direct"}, {"source": "google"}, {"campaign": "(none)"},
                          {"campaign": "spring", "channel": "Paid Social"}, {"source": "(none)", "bots": "include"}],
             [{"page_size": 3, "page": 2}, {}]),
}


async def answers(client: Any, db: Any, endpoint: api.Endpoint, params: dict[str, Any]) -> tuple[Any, Any]:
    response = await client.get(endpoint.url, params=params)
    assert response.status_code == 200, (endpoint.url, params, response.text)
    # (a query without `lookback` gets the configured one, as the app resolves it)
    q = await queries.resolved(db, endpoint.query.parse({k: str(v) for k, v in params.items()}))
    expected = api.document(await endpoint.answer(db, q, baseline), q)
    got = response.json()
    # The rollups say how fresh they are (the views are live): the fill's last drain.
    as_of = await db.fetchval("SELECT as_of FROM rollup_state")
    assert datetime.fromisoformat(got.pop("as_of")) == as_of
    assert response.headers[api.AS_OF_HEADER] == iso(as_of)
    return got, json.loads(api.to_json(expected))


@pytest.mark.parametrize("function", sorted(CASES))
async def test_the_api_equals_the_views(client, db, function):
    endpoint = api.BY_FUNCTION[function]
    rows_seen = 0
    for params in CASES[function]:
        got, want = await answers(client, db, endpoint, params)
        assert got == want, f"{endpoint.url} {params}"
        TypeAdapter(list[endpoint.row]).validate_python(got["rows"])
        rows_seen += len(got["rows"])
    assert rows_seen > len(CASES[function]) // 2, "the cases hardly touch the data: the test would prove little"


async def test_journeys_equal_the_views(client, db):
    s, _ = journeys()
    guids = {x.guid for x in s.values()} | {r[0] for r in await db.fetch("SELECT guid::text FROM devices LIMIT 8")}
    seen = 0
    for guid, function, model, lookback in itertools.product(
            sorted(guids), ("journey_sessions", "journey_credits"), MODELS, (7, 90)):
        got, want = await answers(client, db, api.BY_FUNCTION[function],
                                  {"guid": guid.upper(), "model": model, "lookback": lookback})
        assert got == want, (function, guid, model, lookback)
        seen += len(got["rows"])
    assert seen > 100


async def test_csv_has_the_rows_of_the_json(client):
    for endpoint in api.ENDPOINTS:
        params = {"guid": journeys()[0]["a1"].guid} if "journey" in endpoint.function else {}
        if endpoint.function != "meta":
            params.update(RANGES[0])
        data = (await client.get(endpoint.url, params=params)).json()
        response = await client.get(endpoint.url, params={**params, "format": "csv"})
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        assert response.headers[api.AS_OF_HEADER] == iso(datetime.fromisoformat(data["as_of"]))
        lines = response.text.splitlines()
        assert lines[0].split(",") == data["columns"]
        assert len(lines) == 1 + len(data["rows"]) or endpoint.function == "meta"
        if data["rows"] and endpoint.function != "meta":
            first = next(iter(__import__("csv").reader(lines[1:2])))
            assert first == [api.csv_cell(_typed(v)) for v in data["rows"][0].values()]


def _typed(value: Any) -> Any:
    """A JSON value back as the CSV writer saw it (ISO times stay text; the Z suffix is +00:00 there)."""
    if isinstance(value, str) and value.endswith("Z") and "T" in value:
        from datetime import datetime

        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


async def test_attribution_per_person_credits_every_device_of_the_person(client, db, filled):
    """Devices a and b of the journeys become one person: b's appointment (USD 249.5), first touched
    on b by Organic Social, is first touched by a's Paid Search visit the day before, per person."""
    s, _ = journeys()
    for key in ("a1", "b1"):
        await db.execute("INSERT INTO identities (guid, user_id, first_seen, last_seen) VALUES ($1, 'u-7', now(), "
                         "now())", s[key].guid)
    # (as the sink does with new identities: persons are merged by person_link, migration 0009)
    await db.execute("SELECT person_link($1::uuid[], $2::text[], $3::uuid[])",
                     [s["a1"].guid, s["b1"].guid], ["u-7", "u-7"], [None, None])
    await drained(filled)  # (the sink's drainer folds the merge into the person rollups, migration 0012)
    params = {**RANGES[0], "model": "first_touch"}

    async def by_channel(**more: str) -> dict[str, dict[str, Any]]:
        response = await client.get("/api/v1/attribution", params={**params, **more})
        assert response.status_code == 200, response.text
        return {r["channel"]: r for r in response.json()["rows"]}

    device, person = await by_channel(), await by_channel(by="person")

    def moved(channel: str, column: str) -> float:
        return (person.get(channel, {}).get(column) or 0) - (device.get(channel, {}).get(column) or 0)

    assert moved("Paid Search", "first_touch") == 1 and moved("Organic Social", "first_touch") == -1
    assert moved("Paid Search", "value_USD") == 249.5 and moved("Organic Social", "value_USD") == -249.5
    assert all(moved(c, "first_touch") == 0 for c in set(device) | set(person)
               if c not in ("Paid Search", "Organic Social"))
    response = await client.get("/api/v1/attribution", params={**params, "by": "person", "lookback": 7})
    assert response.status_code == 400
    assert [e["parameter"] for e in response.json()["errors"]] == ["lookback"]
    page = await client.get("/attribution", params={**params, "by": "person"})
    assert page.status_code == 200 and "on any device of the converting person" in page.text
    # the person rollups answer exactly what the attribution_person_* views give, every way asked
    endpoint = api.BY_FUNCTION["attribution"]
    for more in combos(RANGES[:2], SITES, EVENTS, each("model", list(MODELS)),
                       each("group_by", ["channel", "source", "campaign", "module"])):
        got, want = await answers(client, db, endpoint, {**more, "by": "person"})
        assert got == want, more
