"""What every rollup of migrations 0005, 0010 and 0012 must hold, recomputed straight from the tables and
the views, and compared exactly (credits touch by touch as doubles, sums as numeric). The views'
lookback is the configured one (attribution_settings): the rollups' rows at that lookback are the
views' rows exactly."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

DAY = "(started_at AT TIME ZONE 'UTC')::date"
CONFIGURED = "(SELECT lookback_days FROM attribution_settings)"
MODEL_NAMES = ("first_touch", "last_touch", "last_non_direct", "linear", "position_based", "time_decay")
NOT_ALL_ZERO = "(" + ", ".join(MODEL_NAMES) + ") <> (" + ", ".join("0" for _ in MODEL_NAMES) + ")"

def _value_daily(where: str, lookback: str, source: tuple[str, str],
                 table: str = "rollup_value_daily") -> tuple[str, str]:
    """rollup_value_daily's rows (`where`; `lookback`: "lookback_days, " to key by it) and the same sums
    from `source`: (credit rows, the sum of one model `{m}`'s value)."""
    groups = "site, conversion_name, module, channel, utm_source, utm_campaign, currency"
    rows, total = source
    count = 8 + bool(lookback)
    return (
        f"SELECT day, {lookback}{groups}, {', '.join(MODEL_NAMES)} FROM {table} "
        f"WHERE {where} AND {NOT_ALL_ZERO}",
        f"SELECT * FROM (SELECT (converted_at AT TIME ZONE 'UTC')::date, {lookback}{groups}, "
        + ", ".join(f"{total.format(m=m)} AS {m}" for m in MODEL_NAMES)
        + f" FROM {rows} WHERE currency IS NOT NULL GROUP BY {', '.join(map(str, range(1, count + 1)))}) v "
        f"WHERE {NOT_ALL_ZERO}",
    )


# rollup table -> (its rows as the test reads them, the same rows from the tables and views)
EXPECTED: dict[str, tuple[str, str]] = {
    "sessions_daily": (
        "SELECT day, site, channel, utm_source, utm_campaign, is_bot, status, sessions, pageviews, events, bounces "
        "FROM rollup_sessions_daily WHERE sessions <> 0 OR pageviews <> 0 OR events <> 0 OR bounces <> 0",
        f"SELECT {DAY}, site, channel, utm_source, utm_campaign, is_bot, status, count(*), sum(pageviews), "
        "sum(events), count(*) FILTER (WHERE is_bounce) FROM sessions GROUP BY 1, 2, 3, 4, 5, 6, 7",
    ),
    "landing_daily": (
        "SELECT day, site, is_bot, landing_path, sessions, bounces FROM rollup_landing_daily "
        "WHERE sessions <> 0 OR bounces <> 0",
        f"SELECT {DAY}, site, is_bot, landing_path, count(*), count(*) FILTER (WHERE is_bounce) FROM sessions "
        "GROUP BY 1, 2, 3, 4",
    ),
    "devices_daily": (
        "SELECT day, site, channel, devices FROM rollup_devices_daily WHERE devices <> 0",
        f"SELECT {DAY}, site, channel, count(DISTINCT guid) FROM sessions WHERE NOT is_bot "
        f"GROUP BY GROUPING SETS (({DAY}, site, channel), ({DAY}, channel))",
    ),
    "conversions": (
        "SELECT conversion_hit_id, converted_at, guid, conversion_name, module, site, session_id, value, currency "
        "FROM rollup_conversions",
        "SELECT conversion_hit_id, converted_at, guid, conversion_name, module, site, conversion_session_id, value, "
        "currency FROM conversions",
    ),
    "conversions_daily": (
        "SELECT day, site, conversion_name, module, conversions FROM rollup_conversions_daily WHERE conversions <> 0",
        "SELECT (converted_at AT TIME ZONE 'UTC')::date, site, conversion_name, module, count(*) FROM conversions "
        "GROUP BY 1, 2, 3, 4",
    ),
    # The configured lookback: the view's own rows, credit for credit, value for value.
    "credits_configured": (
        "SELECT conversion_hit_id, converted_at, m.model, session_id, touch_index, touch_count, touch_started_at, "
        "channel, utm_source, utm_medium, utm_campaign, m.credit, value, currency, m.credit::numeric * value "
        "FROM rollup_credits CROSS JOIN LATERAL (VALUES "
        "('first_touch', first_touch), ('last_touch', last_touch), ('last_non_direct', last_non_direct), "
        "('linear', linear), ('position_based', position_based), ('time_decay', time_decay)) m(model, credit) "
        f"WHERE lookback_days = {CONFIGURED}",
        "SELECT conversion_hit_id, converted_at, model, session_id, touch_index, touch_count, touch_started_at, "
        "channel, utm_source, utm_medium, utm_campaign, credit, value, currency, attributed_value "
        "FROM attribution_credits",
    ),
    # Every lookback: what the whole computation gives now (rollup_credits_of is checked against the view above).
    "credits_all": (
        "SELECT * FROM rollup_credits",
        "SELECT * FROM rollup_credits_of(ARRAY(SELECT DISTINCT guid FROM conversions))",
    ),
    "attribution_daily_configured": (
        "SELECT day, site, conversion_name, module, channel, utm_source, utm_campaign, first_touch, last_touch, "
        "last_non_direct, linear, position_based, time_decay FROM rollup_attribution_daily "
        f"WHERE lookback_days = {CONFIGURED} AND {NOT_ALL_ZERO}",
        "SELECT (a.converted_at AT TIME ZONE 'UTC')::date, c.site, a.conversion_name, a.module, a.channel, "
        "a.utm_source, a.utm_campaign, "
        + ", ".join(f"sum(a.credit::numeric) FILTER (WHERE a.model = '{m}')" for m in (
            "first_touch", "last_touch", "last_non_direct", "linear", "position_based", "time_decay"))
        + " FROM attribution_credits a JOIN conversions c "
        "ON c.conversion_hit_id = a.conversion_hit_id AND c.converted_at = a.converted_at "
        "GROUP BY 1, 2, 3, 4, 5, 6, 7",
    ),
    # Attributed value per currency, never mixed: each model's credit x value, summed.
    "value_daily_configured": _value_daily(f"lookback_days = {CONFIGURED}", "", (
        "attribution_credits", "sum(attributed_value) FILTER (WHERE model = '{m}')")),
    # Every lookback's value (7/30/... days have no view: from the computation checked above).
    "value_daily_all": _value_daily("true", "lookback_days, ", (
        "rollup_credits_of(ARRAY(SELECT DISTINCT guid FROM conversions))", "sum({m}::numeric * value)")),
}


CREDIT_COLUMNS = ("SELECT conversion_hit_id, converted_at, m.model, session_id, touch_index, touch_count, "
                  "touch_started_at, channel, utm_source, utm_medium, utm_campaign, m.credit, value, currency, "
                  "m.credit::numeric * value")
AS_MODELS = ("CROSS JOIN LATERAL (VALUES ('first_touch', first_touch), ('last_touch', last_touch), "
             "('last_non_direct', last_non_direct), ('linear', linear), ('position_based', position_based), "
             "('time_decay', time_decay)) m(model, credit)")
PERSON_SUMS = ", ".join(f"sum(a.credit::numeric) FILTER (WHERE a.model = '{m}')" for m in MODEL_NAMES)

# Per person (migration 0012): the same checks against attribution_person_credits, its person and
# touch device included.
EXPECTED.update({
    "person_credits_configured": (
        f"{CREDIT_COLUMNS}, person, guid, touch_guid FROM rollup_person_credits {AS_MODELS} "
        f"WHERE lookback_days = {CONFIGURED}",
        "SELECT conversion_hit_id, converted_at, model, session_id, touch_index, touch_count, touch_started_at, "
        "channel, utm_source, utm_medium, utm_campaign, credit, value, currency, attributed_value, person, guid, "
        "touch_guid FROM attribution_person_credits",
    ),
    "person_credits_all": (
        "SELECT * FROM rollup_person_credits",
        "SELECT * FROM rollup_person_credits_of(ARRAY(SELECT DISTINCT guid FROM conversions))",
    ),
    "person_attribution_daily_configured": (
        "SELECT day, site, conversion_name, module, channel, utm_source, utm_campaign, first_touch, last_touch, "
        "last_non_direct, linear, position_based, time_decay FROM rollup_person_attribution_daily "
        f"WHERE lookback_days = {CONFIGURED} AND {NOT_ALL_ZERO}",
        "SELECT (a.converted_at AT TIME ZONE 'UTC')::date, a.site, a.conversion_name, a.module, a.channel, "
        f"a.utm_source, a.utm_campaign, {PERSON_SUMS} FROM attribution_person_credits a GROUP BY 1, 2, 3, 4, 5, 6, 7",
    ),
    "person_value_daily_configured": _value_daily(f"lookback_days = {CONFIGURED}", "", (
        "attribution_person_credits", "sum(attributed_value) FILTER (WHERE model = '{m}')"), "rollup_person_value_daily"),
    "person_value_daily_all": _value_daily("true", "lookback_days, ", (
        "rollup_person_credits_of(ARRAY(SELECT DISTINCT guid FROM conversions))", "sum({m}::numeric * value)"),
        "rollup_person_value_daily"),
})


def _key(row: Any) -> tuple:
    return tuple("" if v is None else str(v) for v in row)


async def mismatches(conn: Any) -> dict[str, tuple[list, list]]:
    """{rollup: (rows only in the rollup, rows only in the tables/views)} for every rollup that differs."""
    out = {}
    for name, (rollup_sql, truth_sql) in EXPECTED.items():
        got = sorted((tuple(r) for r in await conn.fetch(rollup_sql)), key=_key)
        want = sorted((tuple(r) for r in await conn.fetch(truth_sql)), key=_key)
        if got != want:
            only_got = [r for r in got if r not in want][:5]
            only_want = [r for r in want if r not in got][:5]
            out[name] = (only_got, only_want)
    reach = await reach_mismatches(conn)
    if reach:
        out["device_reach"] = (reach, [])
    return out


async def reach_mismatches(conn: Any) -> list[tuple]:
    """Distinct devices of every range of days [a, b] (all sites and each site), from rollup_device_reach
    and from sessions: the (a, b, site, rollup, sessions) that differ."""
    bounds = await conn.fetchrow(f"SELECT min({DAY}), max({DAY}) FROM sessions WHERE NOT is_bot")
    if bounds[0] is None:
        left = await conn.fetchval("SELECT count(*) FROM rollup_device_reach WHERE devices <> 0")
        return [("no sessions, yet reach rows:", left)] if left else []
    first, last = bounds[0] - timedelta(days=1), bounds[1] + timedelta(days=1)
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    sites = [None] + [r[0] for r in await conn.fetch("SELECT DISTINCT site FROM sessions ORDER BY 1")]
    wrong = []
    for a in days:
        for b in (d for d in days if d >= a):
            for site in sites:
                got = await conn.fetchval(
                    "SELECT coalesce(sum(devices), 0) FROM rollup_device_reach WHERE site IS NOT DISTINCT FROM $3 "
                    "AND day BETWEEN $1 AND $2 AND (prev_day IS NULL OR prev_day < $1)", a, b, site)
                want = await conn.fetchval(
                    f"SELECT count(DISTINCT guid) FROM sessions WHERE NOT is_bot AND {DAY} BETWEEN $1 AND $2 "
                    "AND ($3::text IS NULL OR site = $3)", a, b, site)
                if got != want:
                    wrong.append((a, b, site, got, want))
    return wrong[:10]
