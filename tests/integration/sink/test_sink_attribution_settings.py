"""Migration 0010's attribution on small journeys, against credits and values worked out by hand:
the configured lookback (30 vs 90 days), value per currency, conversions by URL pattern, and credit
per person across devices (a laptop's ad click, a phone's lead).

Conversion time T = 2026-03-20 12:00 UTC. Rows go in through the sink's writer.

    A  A1 -60d Paid Search, A2 -1d Direct; lead at T worth 100 EUR
         90 days: touches A1, A2 (linear 0.5 each: 50 EUR to Paid Search, 50 EUR to Direct)
         30 days: touch A2 only (Direct gets 1 and 100 EUR)
    B  B1 -2d Paid Search; lead at T worth 40 USD           (linear: 40 USD to Paid Search)
    C  C1 -1d Email; lead at T without value                (1 conversion, no value)
    F  F1 -1h Referral; a pageview of /order/thank-you?id=7 at T: a conversion only by rule
    L  laptop: L1 -3d Paid Search (google/cpc); P phone: P1 -1h Direct; lead on P at T.
       L and P are one person (identities: user u-1). Per device: the lead's one touch is P1
       (Direct). Per person: touches L1, P1: first touch and last non-direct -> Paid Search.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from schemas.timefmt import UTC
from sink.batch import TopicRoles, decode_batch
from sink.testing import RecordStream, event, new_id, pageview, session

ROLES = TopicRoles.from_prefix("s.")
T = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
D, H = timedelta(days=1), timedelta(hours=1)
THANKS = "https://www.oakridge-apts.com/order/thank-you?id=7"

SESSIONS = [  # (device, name, start, channel, utm_source, utm_medium)
    ("A", "A1", T - 60 * D, "Paid Search", "google", "cpc"),
    ("A", "A2", T - D, "Direct", None, None),
    ("B", "B1", T - 2 * D, "Paid Search", "google", "cpc"),
    ("C", "C1", T - D, "Email", "newsletter", "email"),
    ("F", "F1", T - H, "Referral", None, None),
    ("L", "L1", T - 3 * D, "Paid Search", "google", "cpc"),
    ("P", "P1", T - H, "Direct", None, None),
]
LEADS = [("A", "A2", 100, "EUR"), ("B", "B1", 40, "USD"), ("C", "C1", None, None), ("P", "P1", None, None)]


@pytest.fixture
async def journeys(writer, db):
    guids = {d: new_id() for d in "ABCFLP"}
    ids: dict[str, str] = {}
    rs = RecordStream()
    records = []
    for index, (device, name, start, channel, source, medium) in enumerate(SESSIONS, 1):
        snap = session(guid=guids[device], session_index=index, started_at=start, channel=channel, utm_source=source,
                       utm_medium=medium, status="closed", last_seen_at=start + 10 * timedelta(minutes=1))
        ids[name] = snap.session_id
        records.append(rs.record(ROLES.sessions, snap))
    for device, name, value, currency in LEADS:
        money = {} if value is None else {"value": value, "currency": currency}
        records.append(rs.record(ROLES.events, event(name="lead", module="contact_form", guid=guids[device],
                                                     session_id=ids[name], occurred_at=T, **money)))
    records.append(rs.record(ROLES.events, pageview(guid=guids["F"], session_id=ids["F1"], occurred_at=T,
                                                    url=THANKS, path="/order/thank-you")))
    await writer.write_isolating(decode_batch(records, ROLES, now=T))
    return db, guids, {v: k for k, v in ids.items()}


async def credits(db, view: str, guid: str, model: str) -> dict[str, float]:
    rows = await db.fetch(f"SELECT session_id::text, credit FROM {view} WHERE guid = $1 AND model = $2",
                          uuid.UUID(guid), model)
    return {r["session_id"]: r["credit"] for r in rows}


async def test_the_lookback_is_the_configured_one(journeys):
    db, g, names = journeys
    assert await db.fetchval("SELECT lookback_days FROM attribution_settings") == 90  # the migration's default

    async def linear() -> dict[str, float]:
        return {names[k]: v for k, v in (await credits(db, "attribution_credits", g["A"], "linear")).items()}

    assert await linear() == {"A1": 0.5, "A2": 0.5}
    await db.execute("UPDATE attribution_settings SET lookback_days = 30")
    assert await linear() == {"A2": 1.0}  # A1 started 60 days before the lead
    values = await db.fetch("SELECT channel, currency, value FROM attribution_report WHERE model = 'linear' "
                            "AND dimension = 'channel' AND currency = 'EUR'")
    assert {(r["channel"], r["value"]) for r in values} == {("Direct", Decimal(100))}
    await db.execute("UPDATE attribution_settings SET lookback_days = 61")
    assert await linear() == {"A1": 0.5, "A2": 0.5}
    with pytest.raises(Exception, match="attribution_settings_lookback_days_check"):
        await db.execute("UPDATE attribution_settings SET lookback_days = 0")


async def test_value_is_reported_per_currency(journeys):
    db, _, _ = journeys
    rows = await db.fetch("SELECT channel, currency, conversions, value FROM attribution_report "
                          "WHERE model = 'linear' AND dimension = 'channel' AND conversion_name = 'lead'")
    got = {(r["channel"], r["currency"]): (round(r["conversions"], 9), r["value"]) for r in rows}
    assert got == {
        ("Paid Search", "EUR"): (0.5, Decimal(50)), ("Direct", "EUR"): (0.5, Decimal(50)),
        ("Paid Search", "USD"): (1.0, Decimal(40)),
        ("Email", None): (1.0, None),  # no value: counted, never valued
        ("Direct", None): (1.0, None),  # P's lead (per device: P1 only)
    }
    # Paid Search earned 50 EUR and 40 USD: two rows, never a sum of 90
    first = await db.fetch("SELECT currency, sum(attributed_value) AS v FROM attribution_credits "
                           "WHERE model = 'first_touch' AND channel = 'Paid Search' GROUP BY 1 ORDER BY 1")
    assert [(r["currency"], r["v"]) for r in first] == [("EUR", Decimal(100)), ("USD", Decimal(40))]
    stored = await db.fetch("SELECT value, currency FROM events WHERE value IS NOT NULL ORDER BY currency")
    assert [(r["value"], r["currency"]) for r in stored] == [(Decimal(100), "EUR"), (Decimal(40), "USD")]


async def test_a_url_pattern_makes_a_pageview_a_conversion(journeys):
    db, g, names = journeys
    count = "SELECT count(*) FROM conversions WHERE guid = $1"
    assert await db.fetchval(count, uuid.UUID(g["F"])) == 0  # no rule yet
    await db.execute("INSERT INTO conversion_rules (name, url_pattern, value, currency) "
                     "VALUES ('purchase', '%/order/thank-you%', 19.99, 'EUR')")
    row = await db.fetchrow("SELECT conversion_name, module, defined_by, value, currency, converted_at FROM conversions "
                            "WHERE guid = $1", uuid.UUID(g["F"]))
    assert dict(row) == {"conversion_name": "purchase", "module": None, "defined_by": "url", "value": Decimal("19.99"),
                         "currency": "EUR", "converted_at": T}
    got = await credits(db, "attribution_credits", g["F"], "last_touch")
    assert {names[k]: v for k, v in got.items()} == {"F1": 1.0}
    value = await db.fetchval("SELECT value FROM attribution_report WHERE model = 'last_touch' AND dimension = 'channel' "
                              "AND conversion_name = 'purchase' AND channel = 'Referral'")
    assert value == Decimal("19.99")
    # LIKE is case-sensitive and anchored: neither of these matches
    await db.execute("INSERT INTO conversion_rules (name, url_pattern) VALUES ('x', '%/ORDER/%'), ('y', '/order/%')")
    assert await db.fetchval(count, uuid.UUID(g["F"])) == 1
    # two rules match: the pageview converts once, under the first by name
    await db.execute("INSERT INTO conversion_rules (name, url_pattern) VALUES ('checkout', '%?id=_')")
    assert [r[0] for r in await db.fetch("SELECT conversion_name FROM conversions WHERE guid = $1",
                                         uuid.UUID(g["F"]))] == ["checkout"]
    with pytest.raises(Exception, match="check"):  # a value needs its currency
        await db.execute("INSERT INTO conversion_rules (name, url_pattern, value) VALUES ('z', '%z%', 1)")
    with pytest.raises(Exception, match="escape"):  # a pattern LIKE would refuse at query time
        await db.execute("INSERT INTO conversion_rules (name, url_pattern) VALUES ('w', '%w\\')")
    assert await db.fetchval(count, uuid.UUID(g["F"])) == 1  # the views still answer


async def test_a_persons_touches_on_every_device_earn_credit(journeys):
    db, g, names = journeys
    for device in "LP":
        await db.execute("INSERT INTO identities (guid, user_id, first_seen, last_seen) VALUES ($1, 'u-1', $2, $2)",
                         uuid.UUID(g[device]), T)
    # (as the sink does with new identities: persons are merged by person_link, migration 0009)
    await db.execute("SELECT person_link($1::uuid[], $2::text[], $3::uuid[])",
                     [uuid.UUID(g[d]) for d in "LP"], ["u-1", "u-1"], [None, None])
    # per device: the phone's lead has one touch, the phone's Direct session
    assert {names[k]: v for k, v in (await credits(db, "attribution_credits", g["P"], "first_touch")).items()} == {
        "P1": 1.0}
    # per person: the laptop's ad click first
    person = await db.fetch("SELECT person, model, session_id::text, touch_guid::text, credit, touch_index, touch_count "
                            "FROM attribution_person_credits WHERE guid = $1", uuid.UUID(g["P"]))
    assert {r["person"] for r in person} == {"u-1"}
    got = {(r["model"], names[r["session_id"]]): r["credit"] for r in person}
    assert got[("first_touch", "L1")] == 1.0 and got[("first_touch", "P1")] == 0.0
    assert got[("last_non_direct", "L1")] == 1.0  # the ad, not the phone's Direct visit
    assert got[("last_touch", "P1")] == 1.0
    assert got[("linear", "L1")] == got[("linear", "P1")] == 0.5
    assert {r["touch_guid"] for r in person} == {g["L"], g["P"]}
    report = await db.fetch("SELECT channel, conversions FROM attribution_person_report WHERE model = 'last_non_direct' "
                            "AND dimension = 'channel' AND conversions > 0")
    assert ("Paid Search", 1.0) in {(r["channel"], r["conversions"]) for r in report}
    # a device no person holds is its own person: the same credits as per device
    a_device = await credits(db, "attribution_credits", g["A"], "time_decay")
    a_person = await credits(db, "attribution_person_credits", g["A"], "time_decay")
    assert a_device == a_person and len(a_device) == 2
    # device and person views agree wherever a person has one device
    mismatched = await db.fetchval(
        """SELECT count(*) FROM (
               SELECT conversion_hit_id, model, session_id, credit FROM attribution_credits WHERE guid <> ALL($1)
               EXCEPT
               SELECT conversion_hit_id, model, session_id, credit FROM attribution_person_credits) x""",
        [uuid.UUID(g["L"]), uuid.UUID(g["P"])])
    assert mismatched == 0


async def test_the_analyst_reads_and_cannot_change_the_settings(journeys):
    db, _, _ = journeys
    await db.execute("SET ROLE touchstream_analyst")
    try:
        assert await db.fetchval("SELECT count(*) FROM attribution_person_report") > 0
        assert await db.fetchval("SELECT lookback_days FROM attribution_settings") == 90
        with pytest.raises(Exception, match="permission denied"):
            await db.execute("UPDATE attribution_settings SET lookback_days = 30")
        with pytest.raises(Exception, match="permission denied"):
            await db.execute("INSERT INTO conversion_rules (name, url_pattern) VALUES ('x', '%x%')")
    finally:
        await db.execute("RESET ROLE")
