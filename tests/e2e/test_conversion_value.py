"""Conversion value and URL conversions through the whole running pipeline (issue 18): hits posted
over HTTP with `event.value` and `event.currency` land in `events`, and the dashboard's API (its
rollups, folded by the sink) reports the attributed value per currency beside the credit, as JSON
and as CSV. A thank-you page is a conversion by a rule. Bad values are refused with field errors.

    ads   a Paid Search landing, then a lead worth 120 EUR           -> Paid Search: 120 EUR
    fb    a Facebook referral landing, then a lead worth 80.5 USD     -> Organic Social: 80.5 USD
    shop  a Paid Search landing, then /order/thank-you (rule: 'purchase', 30 EUR) -> Paid Search: +30 EUR
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from schemas.timefmt import UTC, iso
from tests.polling import wait_for
from touchstream.pipeline import Pipeline, free_port

pytestmark = pytest.mark.e2e

PARTITIONS = 2
SITE = "www.oakridge-apts.com"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0"


@pytest.fixture
def pipeline(services, topic_prefix, pg_schema, tmp_path):
    pipeline = Pipeline(workdir=tmp_path, kafka_bootstrap=services.kafka_bootstrap, pg_dsn=pg_schema.dsn,
                        topic_prefix=topic_prefix, pg_schema=pg_schema.schema, partitions=PARTITIONS,
                        extra_env={"TOUCHSTREAM_SINK_ROLLUP_INTERVAL_S": "0.5"})
    try:
        pipeline.start()
        yield pipeline
    finally:
        pipeline.stop()


def hit(guid: str, at: datetime, path: str, referrer: str = "", event: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"hit_id": str(uuid.uuid4()), "guid": guid, "url": f"https://{SITE}{path}",
                            "referrer": referrer, "created_at": iso(at)}
    if event is not None:
        body.update(type="event", event=event)
    return body


@pytest.mark.topic_partitions(PARTITIONS)
async def test_value_and_url_conversions_reach_the_dashboard(pipeline, pg_schema) -> None:
    t = datetime.now(UTC) - timedelta(hours=1)
    ads, fb, shop = (str(uuid.uuid4()) for _ in range(3))
    conn = await pg_schema.connect(timeout=30)
    try:
        await wait_for(lambda: conn.fetchval("SELECT to_regclass('conversion_rules') IS NOT NULL"), 60,
                       "the sink's migrations", alive=pipeline.check_alive)
        await conn.execute("INSERT INTO conversion_rules (name, url_pattern, value, currency) "
                           "VALUES ('purchase', '%/order/thank-you%', 30, 'EUR')")
    finally:
        await conn.close()
    hits = [
        hit(ads, t, "/?utm_source=google&utm_medium=cpc&utm_campaign=spring"),
        hit(ads, t + timedelta(minutes=5), "/contact",
            event={"name": "lead", "module": "contact_form", "value": 120, "currency": "EUR"}),
        hit(fb, t, "/", "https://www.facebook.com/"),
        hit(fb, t + timedelta(minutes=3), "/contact",
            event={"name": "lead", "module": "chat", "value": 80.5, "currency": "USD"}),
        hit(shop, t, "/?utm_source=google&utm_medium=cpc&utm_campaign=spring"),
        hit(shop, t + timedelta(minutes=9), "/order/thank-you?id=7"),
    ]
    bad = [
        hit(ads, t, "/", event={"name": "lead", "value": "120", "currency": "EUR"}),
        hit(ads, t, "/", event={"name": "lead", "value": 120}),
        hit(ads, t, "/", event={"name": "lead", "value": 120, "currency": "eur"}),
    ]
    async with httpx.AsyncClient(base_url=pipeline.edge_url, timeout=30) as client:
        response = await client.post("/v1/hits", json=hits + bad, headers={"user-agent": BROWSER})
    assert response.status_code == 202 and response.json()["accepted"] == len(hits), response.text
    refused = {r["index"]: [e["field"] for e in r["errors"]] for r in response.json()["rejected"]}
    assert refused == {6: ["event.value"], 7: ["event.currency"], 8: ["event.currency"]}

    port = free_port()
    pipeline.add_dashboard(port)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as dash:
        query = {"period": "7d", "model": "last_touch", "group_by": "channel"}

        async def answered() -> dict[str, Any] | None:
            doc = (await dash.get("/api/v1/attribution", params=query)).json()
            return doc if doc.get("conversions") == 3 and doc.get("currencies") == ["EUR", "USD"] else None

        doc = await wait_for(answered, 120, "3 conversions with value in the dashboard", alive=pipeline.check_alive)
        rows = {r["channel"]: r for r in doc["rows"]}
        assert doc["columns"][-2:] == ["value_EUR", "value_USD"] and doc["lookback"] == 90
        assert (rows["Paid Search"]["last_touch"], rows["Paid Search"]["value_EUR"]) == (2.0, 150.0)
        assert rows["Paid Search"]["value_USD"] is None  # never a sum across currencies
        assert (rows["Organic Social"]["last_touch"], rows["Organic Social"]["value_USD"]) == (1.0, 80.5)
        text = (await dash.get("/api/v1/attribution", params={**query, "format": "csv"})).text
        table = {r["channel"]: r for r in csv.DictReader(io.StringIO(text))}
        assert table["Paid Search"]["value_EUR"] == "150.0" and table["Organic Social"]["value_EUR"] == ""
        person = (await dash.get("/api/v1/attribution", params={**query, "by": "person"})).json()
        assert {r["channel"]: r["value_EUR"] for r in person["rows"]}["Paid Search"] == 150.0
        page = await dash.get("/attribution", params=query)
        assert page.status_code == 200 and "Value EUR (Last touch)" in page.text
