"""Attribution views on a hand-built journey, against credits worked out by hand.

Conversion time T = 2026-03-20 12:00 UTC. Channels of each device's sessions (start relative to T):

    A  A0 -100d Organic Search   A1 -20d Paid Search (google/spring)   A2 -10d Direct
       A3 -3d Email (newsletter/march)   A4 0 Direct   A5 +2d Direct
       lead at T+10min (contact_form), appointment at T+2d+5min (scheduler)
    B  B1 -1d Organic Social (facebook); lead at -1d+2min (chat)
    C  C1 -5d Direct, C2 -1d Direct; lead at -1d+1min (chat)
    D  D1 0 Referral; a chat_open event, not a conversion
    E  E0 -90d-1s Paid Social, E1 -90d exactly Display, E2 -1h Direct; lead at T (contact_form)

Time decay, w = 2^(-age/7 days), normalised (ages in days, ε = 1 minute = 1/1440):
    A lead        ages 20+10ε, 10+10ε, 3+10ε, 10ε        -> 0.061270 0.164927 0.329853 0.443950
    A appointment ages 22+5ε, 12+5ε, 5+5ε, 2+5ε, 5ε       -> 0.039755 0.107013 0.214026 0.288058 0.351147
    C lead        ages 4+ε, ε                            -> 0.402254 0.597746
    E lead        ages 90, 1/24                          -> 0.000135 0.999865
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest

from schemas.timefmt import UTC
from sink.batch import TopicRoles, decode_batch
from sink.testing import RecordStream, event, new_id, session

ROLES = TopicRoles.from_prefix("a.")
T = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
D = timedelta(days=1)
M = timedelta(minutes=1)

MODELS = ("first_touch", "last_touch", "last_non_direct", "linear", "position_based", "time_decay")

# (device, session name, start, channel, utm source, utm campaign)
SESSIONS = [
    ("A", "A0", T - 100 * D, "Organic Search", "google", None),
    ("A", "A1", T - 20 * D, "Paid Search", "google", "spring"),
    ("A", "A2", T - 10 * D, "Direct", None, None),
    ("A", "A3", T - 3 * D, "Email", "newsletter", "march"),
    ("A", "A4", T, "Direct", None, None),
    ("A", "A5", T + 2 * D, "Direct", None, None),
    ("B", "B1", T - 1 * D, "Organic Social", "facebook", None),
    ("C", "C1", T - 5 * D, "Direct", None, None),
    ("C", "C2", T - 1 * D, "Direct", None, None),
    ("D", "D1", T, "Referral", None, None),
    ("E", "E0", T - 90 * D - timedelta(seconds=1), "Paid Social", "facebook", "retarget"),
    ("E", "E1", T - 90 * D, "Display", "dv360", "awareness"),
    ("E", "E2", T - timedelta(hours=1), "Direct", None, None),
]
# (name, device, session it happens in, time, event name, module)
EVENTS = [
    ("lead_A", "A", "A4", T + 10 * M, "lead", "contact_form"),
    ("appt_A", "A", "A5", T + 2 * D + 5 * M, "appointment", "scheduler"),
    ("lead_B", "B", "B1", T - D + 2 * M, "lead", "chat"),
    ("lead_C", "C", "C2", T - D + 1 * M, "lead", "chat"),
    ("chat_D", "D", "D1", T + 1 * M, "chat_open", "chat"),
    ("lead_E", "E", "E2", T, "lead", "contact_form"),
]

THIRD = 0.2 / 3
EXPECTED = {  # conversion -> model -> [credit per touch, in touch order]
    "lead_A": {
        "touches": ["A1", "A2", "A3", "A4"],
        "first_touch": [1, 0, 0, 0],
        "last_touch": [0, 0, 0, 1],
        "last_non_direct": [0, 0, 1, 0],
        "linear": [0.25, 0.25, 0.25, 0.25],
        "position_based": [0.4, 0.1, 0.1, 0.4],
        "time_decay": [0.061270, 0.164927, 0.329853, 0.443950],
    },
    "appt_A": {
        "touches": ["A1", "A2", "A3", "A4", "A5"],
        "first_touch": [1, 0, 0, 0, 0],
        "last_touch": [0, 0, 0, 0, 1],
        "last_non_direct": [0, 0, 1, 0, 0],
        "linear": [0.2] * 5,
        "position_based": [0.4, THIRD, THIRD, THIRD, 0.4],
        "time_decay": [0.039755, 0.107013, 0.214026, 0.288058, 0.351147],
    },
    "lead_B": {"touches": ["B1"], **{m: [1] for m in MODELS}},
    "lead_C": {
        "touches": ["C1", "C2"],
        "first_touch": [1, 0],
        "last_touch": [0, 1],
        "last_non_direct": [0, 1],  # every touch is Direct: the last touch
        "linear": [0.5, 0.5],
        "position_based": [0.5, 0.5],
        "time_decay": [0.402254, 0.597746],
    },
    "lead_E": {
        "touches": ["E1", "E2"],  # E0 started 1 s before the 90-day lookback
        "first_touch": [1, 0],
        "last_touch": [0, 1],
        "last_non_direct": [1, 0],
        "linear": [0.5, 0.5],
        "position_based": [0.5, 0.5],
        "time_decay": [0.000135, 0.999865],
    },
}


@pytest.fixture
async def journey(writer, db):
    guids = {d: new_id() for d in "ABCDE"}
    sessions: dict[str, str] = {}
    hits: dict[str, str] = {}
    rs = RecordStream()
    records = []
    for index, (device, name, start, channel, source, campaign) in enumerate(SESSIONS):
        snap = session(guid=guids[device], session_index=index + 1, started_at=start, channel=channel,
                       utm_source=source, utm_campaign=campaign, status="closed",
                       last_seen_at=start + 30 * M)
        sessions[name] = snap.session_id
        records.append(rs.record(ROLES.sessions, snap))
    for name, device, in_session, at, event_name, module in EVENTS:
        ev = event(name=event_name, module=module, guid=guids[device], session_id=sessions[in_session],
                   occurred_at=at)
        hits[name] = ev.hit_id
        records.append(rs.record(ROLES.events, ev))
    await writer.write_isolating(decode_batch(records, ROLES, now=T))
    names = {v: k for k, v in sessions.items()}
    return db, names, hits


async def test_credits_match_the_hand_computed_ones(journey):
    db, session_names, hits = journey
    rows = await db.fetch("SELECT * FROM attribution_credits ORDER BY conversion_hit_id, model, touch_index")
    got: dict[str, dict[str, list]] = {}
    by_hit = {v: k for k, v in hits.items()}
    for r in rows:
        conversion = by_hit[str(r["conversion_hit_id"])]
        got.setdefault(conversion, {}).setdefault(r["model"], []).append(
            (session_names[str(r["session_id"])], r["credit"]))
    assert set(got) == set(EXPECTED)  # chat_D is not a conversion
    for conversion, expected in EXPECTED.items():
        assert set(got[conversion]) == set(MODELS)
        for model in MODELS:
            touches = [name for name, _ in got[conversion][model]]
            credits = [credit for _, credit in got[conversion][model]]
            assert touches == expected["touches"], (conversion, model)
            assert credits == pytest.approx(expected[model], abs=1e-6), (conversion, model)


async def test_credits_of_every_conversion_sum_to_one_under_every_model(journey):
    db, _, _ = journey
    sums = await db.fetch("SELECT conversion_hit_id, model, sum(credit) AS total, count(*) AS touches "
                          "FROM attribution_credits GROUP BY 1, 2")
    assert len(sums) == len(EXPECTED) * len(MODELS)
    for row in sums:
        assert row["total"] == pytest.approx(1.0, abs=1e-12), dict(row)


async def test_conversion_columns_carry_name_module_and_time(journey):
    db, _, hits = journey
    row = await db.fetchrow("SELECT DISTINCT conversion_name, module, converted_at, touch_count "
                            "FROM attribution_credits WHERE conversion_hit_id = $1", uuid.UUID(hits["appt_A"]))
    assert dict(row) == {"conversion_name": "appointment", "module": "scheduler", "converted_at": T + 2 * D + 5 * M,
                         "touch_count": 5}


async def test_report_groups_credit_by_channel_utm_and_module(journey):
    db, _, _ = journey

    async def report(model: str, dimension: str, conversion: str = "lead") -> dict:
        rows = await db.fetch("SELECT * FROM attribution_report WHERE model = $1 AND dimension = $2 "
                              "AND conversion_name = $3", model, dimension, conversion)
        return {tuple(r[c] for c in key_columns[dimension]): (r["conversions"], r["touched_conversions"])
                for r in rows}

    key_columns = {"channel": ("channel",), "utm": ("utm_source", "utm_campaign"), "module": ("module",),
                   "module_channel": ("module", "channel")}
    linear = await report("linear", "channel")
    assert {k: round(v[0], 9) for k, v in linear.items()} == {
        ("Paid Search",): 0.25, ("Direct",): 2.0, ("Email",): 0.25, ("Organic Social",): 1.0, ("Display",): 0.5}
    assert linear[("Direct",)][1] == 3  # A, C and E have a Direct touch
    lnd = await report("last_non_direct", "channel")
    assert {k: v[0] for k, v in lnd.items() if v[0]} == {
        ("Email",): 1.0, ("Organic Social",): 1.0, ("Direct",): 1.0, ("Display",): 1.0}
    modules = await report("first_touch", "module")
    assert {k: v[0] for k, v in modules.items()} == {("contact_form",): 2.0, ("chat",): 2.0}
    utm = await report("first_touch", "utm")
    assert {k: v[0] for k, v in utm.items() if v[0]} == {
        ("google", "spring"): 1.0, ("facebook", None): 1.0, (None, None): 1.0, ("dv360", "awareness"): 1.0}
    appt = await report("position_based", "module_channel", "appointment")
    assert {k: round(v[0], 9) for k, v in appt.items()} == {
        ("scheduler", "Paid Search"): 0.4, ("scheduler", "Direct"): round(0.4 + 2 * THIRD, 9),
        ("scheduler", "Email"): round(THIRD, 9)}


async def test_conversions_follow_the_conversion_events_table(journey):
    db, _, hits = journey
    assert await db.fetchval("SELECT count(*) FROM conversions") == 5
    await db.execute("INSERT INTO conversion_events (name) VALUES ('chat_open')")
    assert await db.fetchval("SELECT count(*) FROM conversions") == 6
    credits = await db.fetch("SELECT model, credit FROM attribution_credits WHERE conversion_hit_id = $1",
                             uuid.UUID(hits["chat_D"]))
    assert sorted(r["model"] for r in credits) == sorted(MODELS)
    assert all(r["credit"] == 1.0 for r in credits)
