"""Data for the dashboard's tests, written through the sink's real writer: three hand-built
devices on two sites (leads, an appointment, a bot, an open session) and a seeded crowd of
devices over two weeks (every channel, campaigns, modules, returning visits). The writer only
queues what the rollups must fold; `drained` folds it, as the sink's drainer does every interval.

Conversions carry value in two currencies (leads by contact form in EUR, appointments in USD), and a
URL rule (RULE: pageviews of a thank-you page are `tour` conversions worth 30 GBP) turns some pageviews
into conversions (`add_rules`)."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import timedelta
from typing import Any

from dashboard.settings import DashboardSettings
from sink.batch import TopicRoles, decode_batch
from sink.rollups import Drained, drain
from sink.testing import T0, RecordStream, event, pageview, session
from sink.writer import Writer

ROLES = TopicRoles.from_prefix("dash.")
D = timedelta(days=1)
H = timedelta(hours=1)
OTHER_SITE = "www.maple-court.com"
RULE = ("tour", "%/thank-you%", 30, "GBP")  # name, url_pattern (LIKE), value, currency
THANKS = "https://www.oakridge-apts.com/tour/thank-you?ref=form"
SOURCES = [  # channel, utm source, medium, campaign
    ("Paid Search", "google", "cpc", "spring"), ("Paid Social", "facebook", "paid_social", "spring"),
    ("Email", "newsletter", "email", "may"), ("Organic Search", None, None, None), ("Direct", None, None, None),
    ("Referral", None, None, None), ("Display", "gdn", "display", "retarget"), ("Affiliates", "hub", "affiliate", None),
    ("Organic Social", None, None, None), ("Unassigned", "qr", "print", None),
]


async def write(migrated: Any, items: list) -> None:
    """Snapshots and records through the sink's own write path, as its writer role."""
    rs = RecordStream()
    records = [rs.record(ROLES.sessions if item.__class__.__name__ == "SessionSnapshot" else ROLES.events, item)
               for item in items]
    writer = Writer(migrated.dsn, migrated.schema, role="touchstream_writer")
    try:
        await writer.write_isolating(decode_batch(records, ROLES, now=T0 + 30 * D))
    finally:
        await writer.close()


async def add_rules(migrated: Any) -> None:
    """The URL conversion rule the data expects (as the schema's owner: `touchstream attribution rule add`)."""
    conn = await migrated.connect()
    try:
        await conn.execute("INSERT INTO conversion_rules (name, url_pattern, value, currency) VALUES ($1, $2, $3, $4)",
                           *RULE)
    finally:
        await conn.close()


def valued(name: str, module: str | None, n: int = 0) -> dict[str, Any]:
    """The value an event of the data carries: leads by contact form in EUR, appointments in USD."""
    if name == "lead" and module == "contact_form":
        return {"value": 100 + 10 * n, "currency": "EUR"}
    if name == "appointment":
        return {"value": 249.5, "currency": "USD"}
    return {}


async def drained(migrated: Any, **options: Any) -> Drained:
    """Everything queued folded into the rollups, by the sink's own drain, as its writer role."""
    conn = await migrated.connect()
    try:
        await conn.execute("SET ROLE touchstream_writer")
        done = await drain(conn, migrated.schema, **options)
    finally:
        await conn.close()
    assert done is not None
    return done


async def write_while_draining(migrated: Any, batches: list[list]) -> int:
    """Write `batches` (each its own transaction) while drains of 5 devices per transaction run
    beside them; returns how many drains ran."""
    drains = 0

    async def write_all() -> None:
        for items in batches:
            await write(migrated, items)

    writing = asyncio.create_task(write_all())
    while not writing.done():
        await drained(migrated, batch=5)
        drains += 1
    await writing
    return drains


def journeys() -> tuple[dict[str, Any], list]:
    """Three devices on two sites: paid, email and direct touches, leads and appointments, a bot."""
    a, b, c = "aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002", \
        "cccccccc-0000-4000-8000-000000000003"
    s = {
        "a1": session(guid=a, session_index=1, started_at=T0, channel="Paid Search", utm_source="google",
                      utm_medium="cpc", utm_campaign="spring", status="closed", pageviews=3),
        "a2": session(guid=a, session_index=2, started_at=T0 + 2 * D, channel="Direct", status="closed"),
        "a3": session(guid=a, session_index=3, started_at=T0 + 3 * D, channel="Email", utm_source="newsletter",
                      utm_medium="email", utm_campaign="may", status="closed", pageviews=2, events=1),
        "b1": session(guid=b, session_index=1, started_at=T0 + D, channel="Organic Social", site=OTHER_SITE,
                      status="closed", pageviews=2, events=1),
        "b2": session(guid=b, session_index=2, started_at=T0 + 1 * D + 5 * H, channel="Direct", status="open",
                      events=1),
        "c1": session(guid=c, session_index=1, started_at=T0 + 2 * D, channel="Organic Search", is_bot=True,
                      user_agent="Googlebot/2.1", status="closed"),
    }
    items: list = list(s.values())
    items += [pageview(guid=x.guid, session_id=x.session_id, occurred_at=x.started_at) for x in s.values()]
    # a thank-you page: a `tour` conversion by URL (RULE), once the rule exists
    items.append(pageview(guid=a, session_id=s["a2"].session_id, occurred_at=T0 + 2 * D + H, url=THANKS,
                          path="/tour/thank-you"))
    items += [
        event(name="lead", module="contact_form", guid=a, session_id=s["a3"].session_id, occurred_at=T0 + 3 * D + H,
              value=120, currency="EUR"),
        event(name="chat_open", module="chat", guid=b, session_id=s["b1"].session_id, occurred_at=T0 + D + H),
        event(name="appointment", module="scheduler", guid=b, session_id=s["b2"].session_id,
              occurred_at=T0 + D + 6 * H, site=OTHER_SITE, value=249.5, currency="USD"),
    ]
    return s, items


def crowd(devices: int = 60, seed: int = 7) -> list:
    """Seeded devices over 14 days from T0: 1-4 sessions each, some leads and appointments."""
    rng = random.Random(seed)
    items: list = []
    for _ in range(devices):
        guid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        site = rng.choice([OTHER_SITE, "www.oakridge-apts.com"])
        starts = sorted(T0 + timedelta(minutes=rng.randrange(14 * 24 * 60)) for _ in range(rng.randint(1, 4)))
        for index, start in enumerate(starts, 1):
            channel, source, medium, campaign = rng.choice(SOURCES)
            pvs, evs = rng.randint(1, 5), rng.choice([0, 0, 1, 2])
            snap = session(guid=guid, session_index=index, started_at=start, channel=channel, utm_source=source,
                           utm_medium=medium, utm_campaign=campaign, site=site, pageviews=pvs, events=evs,
                           status="closed", last_seen_at=start + timedelta(minutes=10),
                           landing_path=rng.choice(["/", "/floorplans", "/contact"]),
                           is_bot=rng.random() < 0.05)
            items.append(snap)
            # (the last pageview of every fourth session is a thank-you page: RULE's conversions)
            items += [pageview(guid=guid, session_id=snap.session_id, site=site,
                               occurred_at=start + timedelta(minutes=n),
                               **({"url": THANKS, "path": "/tour/thank-you"} if n == pvs - 1 and len(items) % 4 == 0
                                  else {})) for n in range(pvs)]
            for n in range(evs):
                name, module = rng.choice([("lead", "contact_form"), ("lead", "chat"), ("appointment", "scheduler"),
                                           ("chat_open", "chat")])
                items.append(event(name=name, module=module, guid=guid, session_id=snap.session_id, site=site,
                                   occurred_at=start + timedelta(minutes=5 + n), **valued(name, module, n)))
    return items


async def fill(migrated: Any) -> Any:
    """The schema with the hand-built journeys and the default crowd, folded into the rollups, as the
    dashboard's tests use it."""
    _, items = journeys()
    await add_rules(migrated)
    await write(migrated, items + crowd())
    await drained(migrated)
    return migrated


def dashboard_settings(schema: Any, **more: Any) -> DashboardSettings:
    """The dashboard's settings for a test schema (pg_schema fixture)."""
    return DashboardSettings(pg_dsn=schema.dsn, pg_schema=schema.schema, **more)
