"""The dashboard's questions asked straight of the tables and the views of migration 0002, with no
rollup: the yardstick. tests/integration/dashboard checks that `dashboard.queries` gives exactly
these answers; bench/dashboard_bench.py times both in the same run.

Credits come from `attribution_credits` for the configured lookback (attribution_settings), the
view's own; the view has no other lookback, so for the others they come from
rollup_credits_of(every converting device) (a superuser's call), the view's SQL with the window as a
parameter, which the tests check equals the view at the configured lookback. Credit per person
(`by=person`) is read from attribution_person_credits (dashboard.queries reads the person rollups of
migration 0012).
"""

from __future__ import annotations

from typing import Any

from dashboard.params import MODELS, AttributionQuery, JourneyQuery, SessionsQuery, TimeseriesQuery, TopQuery
from dashboard.queries import (
    GROUP_COLUMNS,
    JOURNEY_CREDIT_COLUMNS,
    NO_TOUCH,
    PERSON_CREDIT_COLUMNS,
    SESSION_COLUMNS,
    Scope,
    Table,
    attribution_table,
    by_channel_table,
    device_order,
    journey_guids,
    journey_sessions,  # (no view holds a journey's sessions: the API's query reads the table too)
    journey_table,
    session_conditions,
    summary_table,
    table,
    top_table,
)

# Sessions of the scope's days and site ($1 start, $2 end, $3 site).
IN_SCOPE = "started_at >= $1 AND started_at < $2 AND ($3::text IS NULL OR site = $3)"
DAY = "(started_at AT TIME ZONE 'UTC')::date"


def credits_source(s: Scope) -> str:
    """conversion x touch x model rows with the conversion's site, for the scope's lookback."""
    if s.lookback == s.configured:
        return "attribution_credits"
    models = ", ".join(f"('{m}', {m})" for m in MODELS)
    return (f"(SELECT r.*, m.model, m.credit, m.credit::numeric * r.value AS attributed_value "
            f"FROM rollup_credits_of(ARRAY(SELECT DISTINCT guid FROM conversions)) r "
            f"CROSS JOIN LATERAL (VALUES {models}) m(model, credit) WHERE r.lookback_days = {s.lookback})")


def conversions_in_scope() -> str:
    return ("SELECT * FROM conversions WHERE converted_at >= $1 AND converted_at < $2 "
            "AND ($3::text IS NULL OR site = $3) AND conversion_name = ANY($4)")


def credits_in_scope(s: Scope) -> str:
    return (f"SELECT * FROM {credits_source(s)} x WHERE converted_at >= $1 AND converted_at < $2 "
            "AND ($3::text IS NULL OR site = $3) AND conversion_name = ANY($4)")


async def summary(conn: Any, s: Scope, q: Any = None) -> Table:
    row = await conn.fetchrow(
        f"""SELECT count(*) FILTER (WHERE NOT is_bot) AS sessions,
                   count(DISTINCT guid) FILTER (WHERE NOT is_bot) AS devices,
                   coalesce(sum(pageviews) FILTER (WHERE NOT is_bot), 0) AS pageviews,
                   coalesce(sum(events) FILTER (WHERE NOT is_bot), 0) AS events,
                   count(*) FILTER (WHERE NOT is_bot AND is_bounce) AS bounces,
                   count(*) FILTER (WHERE is_bot) AS bot_sessions,
                   (SELECT count(*) FROM ({conversions_in_scope()}) c) AS conversions,
                   (SELECT count(*) FROM sessions WHERE status = 'open' AND NOT is_bot
                     AND ($3::text IS NULL OR site = $3)) AS open_now
            FROM sessions WHERE {IN_SCOPE}""", s.start, s.end, s.site, s.names)
    return summary_table(dict(row))


async def timeseries(conn: Any, s: Scope, q: TimeseriesQuery) -> Table:
    args = (s.start, s.end, s.site)
    if q.metric in ("sessions", "pageviews", "devices"):
        value = {"sessions": "count(*)", "pageviews": "sum(pageviews)", "devices": "count(DISTINCT guid)"}[q.metric]
        rows = await conn.fetch(
            f"SELECT {DAY} AS day, channel, {value} AS value FROM sessions WHERE {IN_SCOPE} AND NOT is_bot "
            f"GROUP BY 1, 2 HAVING {value} <> 0 ORDER BY 1, 2", *args)
    else:
        rows = await conn.fetch(
            f"""
            WITH x AS MATERIALIZED ({credits_in_scope(s)}),
            credited AS (
                SELECT (converted_at AT TIME ZONE 'UTC')::date AS day, channel, sum(credit::numeric) AS value
                FROM x WHERE model = '{s.model}' GROUP BY 1, 2
            ), touched AS (
                SELECT (converted_at AT TIME ZONE 'UTC')::date AS day,
                       count(DISTINCT (conversion_hit_id, converted_at)) AS t FROM x GROUP BY 1
            ), counted AS (
                SELECT (converted_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n
                FROM ({conversions_in_scope()}) c GROUP BY 1
            )
            SELECT day, channel, value FROM credited WHERE value <> 0
            UNION ALL
            SELECT day, '{NO_TOUCH}', n - coalesce(t, 0) FROM counted LEFT JOIN touched USING (day)
            WHERE n - coalesce(t, 0) <> 0
            ORDER BY 1, 2""", *args, s.names)
    return table(rows, ["day", "channel", "value"], metric=q.metric)


async def top(conn: Any, s: Scope, q: TopQuery) -> Table:
    column = {"landing_page": "landing_path", "source": "utm_source", "campaign": "utm_campaign"}[q.dimension]
    rows = await conn.fetch(
        f"SELECT {column} AS {q.dimension}, count(*) AS sessions, count(*) FILTER (WHERE is_bounce) AS bounces "
        f"FROM sessions WHERE {IN_SCOPE} AND NOT is_bot GROUP BY 1 ORDER BY 2 DESC, 1 NULLS FIRST LIMIT $4",
        s.start, s.end, s.site, q.limit)
    return top_table(q.dimension, rows)


async def attribution(conn: Any, s: Scope, q: AttributionQuery) -> Table:
    if q.by == "person":
        return await person_attribution(conn, s, q)
    column = GROUP_COLUMNS[q.group_by]
    sums = ", ".join(f"sum(credit::numeric) FILTER (WHERE model = '{m}') AS {m}" for m in MODELS)
    rows = await conn.fetch(
        f"""SELECT {column} AS {q.group_by}, {sums} FROM ({credits_in_scope(s)}) x GROUP BY 1
            HAVING bool_or(credit <> 0) ORDER BY {s.model} DESC, 1 NULLS FIRST""",
        s.start, s.end, s.site, s.names)
    return await _with_values(conn, s, q, rows, credits_in_scope(s))


async def _with_values(conn: Any, s: Scope, q: AttributionQuery, rows: list[Any], credits: str) -> Table:
    """The attribution table of `rows`, with the counts and the attributed value per currency read
    from `credits` (a query over credit rows in the scope, $1-$4)."""
    column = GROUP_COLUMNS[q.group_by]
    counts = await conn.fetchrow(
        f"""SELECT (SELECT count(*) FROM ({conversions_in_scope()}) c) AS conversions,
                   (SELECT count(DISTINCT (conversion_hit_id, converted_at)) FROM ({credits}) x)
                   AS attributed""", s.start, s.end, s.site, s.names)
    values = await conn.fetch(
        f"""SELECT {column} AS grp, currency, sum(attributed_value) AS value FROM ({credits}) x
            WHERE model = '{s.model}' AND currency IS NOT NULL GROUP BY 1, 2 HAVING sum(attributed_value) <> 0""",
        s.start, s.end, s.site, s.names)
    return attribution_table(s, q, rows, values, counts["conversions"], counts["attributed"])


async def person_attribution(conn: Any, s: Scope, q: AttributionQuery) -> Table:
    """Credit per person (attribution_person_credits: a person's touches on all its devices), grouped as
    the device answer is. The views' lookback only (dashboard.queries.scope checks it).

    The view costs seconds, so it is read once: credit and value per group and currency,
    and the conversions with a touch (the empty grouping set), split into the answer's parts after.
    Numeric sums over currencies add up exactly to the group's."""
    column = GROUP_COLUMNS[q.group_by]
    sums = ", ".join(f"sum(credit::numeric) FILTER (WHERE model = '{m}') AS {m}" for m in MODELS)
    totals = ", ".join(f"sum({m}) AS {m}" for m in MODELS)
    blanks = ", ".join(f"NULL::numeric AS {m}" for m in MODELS)
    parts = await conn.fetch(
        f"""WITH parts AS MATERIALIZED (
                SELECT GROUPING({column}) AS total, {column} AS grp, currency, {sums},
                       sum(attributed_value) FILTER (WHERE model = '{s.model}') AS value,
                       bool_or(credit <> 0) AS credited, count(DISTINCT (conversion_hit_id, converted_at)) AS touched
                FROM attribution_person_credits
                WHERE converted_at >= $1 AND converted_at < $2 AND ($3::text IS NULL OR site = $3)
                  AND conversion_name = ANY($4)
                GROUP BY GROUPING SETS (({column}, currency), ())
            ), grouped AS (
                SELECT grp, {totals}, bool_or(credited) AS credited FROM parts WHERE total = 0 GROUP BY grp
            )
            SELECT 'row' AS kind, row_number() OVER (ORDER BY {s.model} DESC, grp NULLS FIRST) AS n, grp,
                   NULL::text AS currency, {', '.join(MODELS)}, NULL::numeric AS value, NULL::bigint AS touched
            FROM grouped WHERE credited
            UNION ALL
            SELECT 'value', 0, grp, currency, {blanks}, value, NULL FROM parts
            WHERE total = 0 AND currency IS NOT NULL AND value <> 0
            UNION ALL
            SELECT 'total', 0, NULL, NULL, {blanks}, NULL, touched FROM parts WHERE total = 1""",
        s.start, s.end, s.site, s.names)
    rows = [{q.group_by: p["grp"], **{m: p[m] for m in MODELS}}
            for p in sorted((p for p in parts if p["kind"] == "row"), key=lambda p: p["n"])]
    values = [p for p in parts if p["kind"] == "value"]
    attributed = sum(p["touched"] for p in parts if p["kind"] == "total")
    conversions = await conn.fetchval(f"SELECT count(*) FROM ({conversions_in_scope()}) c",
                                      s.start, s.end, s.site, s.names)
    return attribution_table(s, q, rows, values, conversions, attributed)


async def conversions_daily(conn: Any, s: Scope, q: Any = None) -> Table:
    rows = await conn.fetch(
        f"SELECT (converted_at AT TIME ZONE 'UTC')::date AS day, conversion_name, count(*) AS conversions "
        f"FROM ({conversions_in_scope()}) c GROUP BY 1, 2 ORDER BY 1, 2", s.start, s.end, s.site, s.names)
    return table(rows, ["day", "conversion_name", "conversions"])


async def conversions_by_module(conn: Any, s: Scope, q: Any = None) -> Table:
    rows = await conn.fetch(
        f"SELECT module, conversion_name, count(*) AS conversions FROM ({conversions_in_scope()}) c "
        "GROUP BY 1, 2 ORDER BY 3 DESC, 1 NULLS FIRST, 2", s.start, s.end, s.site, s.names)
    return table(rows, ["module", "conversion_name", "conversions"])


async def conversions_by_channel(conn: Any, s: Scope, q: Any = None) -> Table:
    rows = await conn.fetch(
        f"""
        WITH visits AS (
            SELECT channel, count(*) AS sessions FROM sessions WHERE {IN_SCOPE} AND NOT is_bot GROUP BY 1
        ), credited AS (
            SELECT channel, sum(credit::numeric) AS conversions FROM ({credits_in_scope(s)}) x
            WHERE model = '{s.model}' GROUP BY 1
        )
        SELECT channel, coalesce(v.sessions, 0) AS sessions, coalesce(c.conversions, 0) AS conversions
        FROM visits v FULL JOIN credited c USING (channel)
        WHERE coalesce(v.sessions, 0) <> 0 OR coalesce(c.conversions, 0) <> 0
        """, s.start, s.end, s.site, s.names)
    return by_channel_table(rows)


async def journey_credits(conn: Any, s: Scope, q: JourneyQuery) -> Table:
    guids = await journey_guids(conn, q)
    rows = await conn.fetch(
        f"""SELECT c.guid, c.conversion_hit_id, c.converted_at, c.conversion_name, c.module, x.session_id,
                   x.touch_index, x.touch_count, x.touch_started_at, x.channel, x.utm_source, x.utm_campaign, x.credit
            FROM conversions c
            LEFT JOIN {credits_source(s)} x ON x.converted_at = c.converted_at
                 AND x.conversion_hit_id = c.conversion_hit_id AND x.model = '{s.model}' AND x.credit > 0
            WHERE c.guid = ANY($1::uuid[]) AND c.conversion_name = ANY($2)
            ORDER BY c.converted_at, c.conversion_hit_id, x.touch_index""", guids, s.names)
    columns = JOURNEY_CREDIT_COLUMNS if q.user_id is None else PERSON_CREDIT_COLUMNS
    return journey_table(rows, columns, q, await device_order(conn, guids))


async def sessions(conn: Any, s: Scope, q: SessionsQuery) -> Table:
    where, args = session_conditions(q, 3)
    total = await conn.fetchval(
        f"SELECT count(*) FROM sessions WHERE started_at >= $1 AND started_at < $2 AND {where}",
        s.start, s.end, *args)
    rows = await conn.fetch(
        f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions WHERE started_at >= $1 AND started_at < $2 "
        f"AND {where} ORDER BY started_at DESC, session_id DESC LIMIT {q.page_size} "
        f"OFFSET {(q.page - 1) * q.page_size}", s.start, s.end, *args)
    return table(rows, list(SESSION_COLUMNS), total=int(total), page=q.page, page_size=q.page_size)
