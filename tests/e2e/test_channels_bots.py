"""Channels, referral exclusions and bots through the whole running pipeline (SPEC section 3).

One pipeline (edge, sessionizer, sink as separate processes) on the shared stack, fresh topic
prefix and schema (the shared fixtures), with: a channel rules file and referral exclusions on the sessionizer, and on
the edge a trusted proxy (loopback: the test client) and a data-centre range. Hits posted over
HTTP land as sessions in PostgreSQL with the channel GA4's rules (or the operator's rule) give,
`is_bot` for a crawler's user agent and for a data-centre address (taken from
X-Forwarded-For, before the IP is truncated), and Direct for a return from an excluded host.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from schemas.timefmt import UTC, iso
from tests.polling import wait_for
from touchstream.pipeline import Pipeline

pytestmark = pytest.mark.e2e

PARTITIONS = 2
SITE = "www.oakridge-apts.com"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0"
CRAWLER = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)"
PERSON_IP, CLOUD_IP = "203.0.113.9", "3.5.141.9"
RULES = '[[rule]]\nchannel = "Listing Sites"\nreferrer = {regex = "(www\\\\.)?apartmentguide\\\\.com"}\n'


@pytest.fixture
def pipeline(services, topic_prefix, pg_schema, tmp_path):
    rules = tmp_path / "channels.toml"
    rules.write_text(RULES)
    pipeline = Pipeline(workdir=tmp_path, kafka_bootstrap=services.kafka_bootstrap, pg_dsn=pg_schema.dsn,
                        topic_prefix=topic_prefix, pg_schema=pg_schema.schema, partitions=PARTITIONS, extra_env={
                            "TOUCHSTREAM_SESSION_CHANNEL_RULES_FILE": str(rules),
                            "TOUCHSTREAM_SESSION_REFERRAL_EXCLUSIONS": "paypal.com",
                            "TOUCHSTREAM_INGEST_TRUSTED_PROXIES": "127.0.0.0/8,::1/128",
                            "TOUCHSTREAM_INGEST_DATACENTER_RANGES": "3.5.140.0/22",
                        })
    try:
        pipeline.start()
        yield pipeline
    finally:
        pipeline.stop()


def hit(guid: str, at: datetime, url: str, referrer: str = "") -> dict[str, Any]:
    return {"hit_id": str(uuid.uuid4()), "guid": guid, "url": f"https://{SITE}{url}", "referrer": referrer,
            "created_at": iso(at)}


@pytest.mark.topic_partitions(PARTITIONS)
async def test_channels_exclusions_and_bots_land_in_sessions(pipeline, pg_schema) -> None:
    t = datetime.now(UTC) - timedelta(hours=3)
    devices = {name: str(uuid.uuid4()) for name in ("ads", "video", "listing", "paypal", "crawler", "cloud")}
    posts = [  # (hits, user agent, client address)
        ([hit(devices["ads"], t, "/?utm_source=google&utm_medium=cpc&utm_campaign=Spring-Shopping")], BROWSER, PERSON_IP),
        ([hit(devices["video"], t, "/", "https://m.youtube.com/watch?v=x")], BROWSER, PERSON_IP),
        ([hit(devices["listing"], t, "/", "https://www.apartmentguide.com/listing/1")], BROWSER, PERSON_IP),
        ([hit(devices["paypal"], t, "/apply"),
          hit(devices["paypal"], t + timedelta(hours=1), "/thanks", "https://www.paypal.com/checkoutnow")],
         BROWSER, PERSON_IP),
        ([hit(devices["crawler"], t, "/", "https://www.google.com/")], CRAWLER, PERSON_IP),
        ([hit(devices["cloud"], t, "/", "https://www.google.com/")], BROWSER, CLOUD_IP),
    ]
    async with httpx.AsyncClient(base_url=pipeline.edge_url, timeout=30) as client:
        for hits, agent, address in posts:
            response = await client.post("/v1/hits", json=hits, headers={"user-agent": agent,
                                                                         "x-forwarded-for": address})
            assert response.status_code == 202 and response.json()["accepted"] == len(hits), response.text

    conn = await pg_schema.connect(timeout=30)
    try:
        # Pipeline.start migrated before it returned: the tables are there, whatever the sink has done yet
        assert await conn.fetchval("SELECT to_regclass('sessions') IS NOT NULL")

        async def sessions() -> list[asyncpg.Record]:
            return await conn.fetch(
                "SELECT guid::text AS guid, session_index, channel, is_bot, device_type, ip FROM sessions "
                "WHERE guid = ANY($1::uuid[]) ORDER BY guid, session_index", list(devices.values()))

        await wait_for(lambda: _count(sessions, 7), 120, "7 sessions to land", alive=pipeline.check_alive)
        by_device = {name: [(r["channel"], r["is_bot"], r["device_type"], r["ip"]) for r in await sessions()
                            if r["guid"] == guid] for name, guid in devices.items()}
    finally:
        await conn.close()
    assert by_device == {
        "ads": [("Paid Shopping", False, "desktop", "203.0.113.0")],  # GA4: a shop campaign, paid
        "video": [("Organic Video", False, "desktop", "203.0.113.0")],
        "listing": [("Listing Sites", False, "desktop", "203.0.113.0")],  # the operator's rule
        "paypal": [("Direct", False, "desktop", "203.0.113.0"), ("Direct", False, "desktop", "203.0.113.0")],
        "crawler": [("Organic Search", True, "bot", "203.0.113.0")],  # the crawler list
        "cloud": [("Organic Search", True, "desktop", "3.5.141.0")],  # a data-centre address, flagged not dropped
    }


async def _count(fetch, n: int) -> bool:
    return len(await fetch()) == n
