"""Every question the dashboard answers, as SQL over the rollups of migration 0005.

Each function takes a pool (or connection) and a validated query, and returns a `Table`: the rows
the API serves as JSON or CSV and the pages draw. `dashboard/baseline.py` asks the same questions
of the tables and views directly; tests/integration/dashboard compares the two exactly, and
bench/dashboard_bench.py times them side by side.

Days are UTC days, ranges include both ends. Credits are summed as numeric (exact) and served as
floats. Bot sessions are left out everywhere except the Sessions list (its `bots` filter).

The lookback is the configured one (attribution_settings, migration 0010) unless the query names
another the rollups hold (rollup_lookbacks). Credit per person (`by=person`) comes from the person
rollups of migration 0012, at the configured lookback only (the views', which the baseline and the
tests compare it with).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from dashboard.params import (
    MODELS,
    NONE_VALUE,
    AttributionQuery,
    BadParameters,
    Filters,
    JourneyQuery,
    SessionsQuery,
    TimeseriesQuery,
    TopQuery,
)
from schemas.timefmt import UTC
from touchstream.persons import person_guids

NO_TOUCH = "(no touch)"  # conversions with no session in the lookback window
SITE = "($3::text IS NULL OR site = $3)"
CREDITS = ", ".join(f"sum({m}) AS {m}" for m in MODELS)
# Conversion names: events listed in conversion_events, and the names of URL conversion rules (0010).
CONVERSION_NAMES = "SELECT name FROM conversion_events UNION SELECT name FROM conversion_rules ORDER BY 1"
SESSION_COLUMNS = ("session_id", "guid", "session_index", "started_at", "site", "channel", "utm_source", "utm_medium",
                   "utm_campaign", "landing_path", "pageviews", "events", "duration_s", "status", "is_bot")


@dataclass
class Table:
    columns: list[str]
    rows: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scope:
    """A query's filters, resolved against the data: its days and the conversion names it counts."""

    first: date
    last: date
    site: str | None
    names: list[str]
    model: str
    lookback: int
    configured: int = 90  # the configured lookback: the one the views give

    @property
    def args(self) -> tuple[Any, ...]:
        return self.first, self.last, self.site

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time(), UTC)

    @property
    def end(self) -> datetime:
        """The first moment after the range."""
        return datetime.combine(self.last + timedelta(days=1), time(), UTC)


def plain(value: Any) -> Any:
    """Decimal sums (credits) as floats, everything else as asyncpg gives it."""
    return float(value) if isinstance(value, Decimal) else value


def rate(part: Any, whole: Any) -> float | None:
    return float(part) / float(whole) if whole else None


def table(rows: list[Any], columns: list[str] | None = None, **meta: Any) -> Table:
    dicts = [{k: plain(v) for k, v in r.items()} for r in rows]
    return Table(columns or (list(dicts[0]) if dicts else []), dicts, meta)


# --- how fresh the rollups are ------------------------------------------------------------------


async def as_of(conn: Any) -> datetime:
    """Every row committed before this instant is counted in the rollups (the sink folds what it
    queued every TOUCHSTREAM_SINK_ROLLUP_INTERVAL_S). Read before the rollups, so the answer read
    after it is at least this fresh."""
    return await conn.fetchval("SELECT as_of FROM rollup_state")


# --- resolving filters against the data ---------------------------------------------------------


async def scope(conn: Any, q: Filters) -> Scope:
    """The query's scope; BadParameters when a value names nothing the data has."""
    problems: list[tuple[str, str]] = []
    lookbacks = [r[0] for r in await conn.fetch("SELECT days FROM rollup_lookbacks ORDER BY 1")]
    configured = await configured_lookback(conn)
    lookback = configured if q.lookback is None else q.lookback
    if lookback not in lookbacks:
        problems.append(("lookback", f"must be one of {', '.join(map(str, lookbacks))} (days)"))
    elif isinstance(q, AttributionQuery) and q.by == "person" and lookback != configured:
        problems.append(("lookback", f"by=person is computed at the configured lookback only, {configured} days "
                         "(`touchstream attribution set --lookback-days N` changes it)"))
    known = [r[0] for r in await conn.fetch(CONVERSION_NAMES)]
    unknown = [n for n in q.events if n not in known]
    if unknown:
        problems.append(("events", f"{', '.join(map(repr, unknown))} is not a conversion event; they are "
                         f"{', '.join(known) or '(none)'}"))
    if q.site is not None and not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM rollup_sessions_daily WHERE site = $1) "
            "OR EXISTS (SELECT 1 FROM rollup_conversions_daily WHERE site = $1)", q.site):
        problems.append(("site", f"no data for a site {q.site!r}"))
    if isinstance(q, SessionsQuery):
        for name, column in (("source", "utm_source"), ("campaign", "utm_campaign")):
            value = getattr(q, name)
            if value not in (None, NONE_VALUE) and not await conn.fetchval(
                    f"SELECT EXISTS (SELECT 1 FROM rollup_sessions_daily WHERE {column} = $1)", value):
                problems.append((name, f"no session has {column} {value!r}"))
    if problems:
        raise BadParameters(problems)
    return Scope(q.first_day, q.last_day, q.site, list(q.events) or known, q.model, lookback, configured)


async def configured_lookback(conn: Any) -> int:
    """The lookback of the attribution views (attribution_settings)."""
    return int(await conn.fetchval("SELECT lookback_days FROM attribution_settings"))


async def resolved(conn: Any, q: Any) -> Any:
    """The query with its lookback filled in when it named none: pages and answers show the one used."""
    if isinstance(q, Filters) and q.lookback is None:
        return q.model_copy(update={"lookback": await configured_lookback(conn)})
    return q


# --- Overview -------------------------------------------------------------------------------------


async def summary(conn: Any, s: Scope, q: Any = None) -> Table:
    row = await conn.fetchrow(
        f"""
        WITH t AS (
            SELECT coalesce(sum(sessions) FILTER (WHERE NOT is_bot), 0) AS sessions,
                   coalesce(sum(pageviews) FILTER (WHERE NOT is_bot), 0) AS pageviews,
                   coalesce(sum(events) FILTER (WHERE NOT is_bot), 0) AS events,
                   coalesce(sum(bounces) FILTER (WHERE NOT is_bot), 0) AS bounces,
                   coalesce(sum(sessions) FILTER (WHERE is_bot), 0) AS bot_sessions
            FROM rollup_sessions_daily WHERE day BETWEEN $1 AND $2 AND {SITE}
        )
        SELECT t.*,
               (SELECT coalesce(sum(devices), 0) FROM rollup_device_reach WHERE site IS NOT DISTINCT FROM $3
                 AND day BETWEEN $1 AND $2 AND (prev_day IS NULL OR prev_day < $1)) AS devices,
               (SELECT coalesce(sum(conversions), 0) FROM rollup_conversions_daily
                 WHERE day BETWEEN $1 AND $2 AND {SITE} AND conversion_name = ANY($4)) AS conversions,
               (SELECT coalesce(sum(sessions), 0) FROM rollup_sessions_daily
                 WHERE status = 'open' AND NOT is_bot AND {SITE}) AS open_now
        FROM t
        """, *s.args, s.names)
    return summary_table(dict(row))


def summary_table(r: dict[str, Any]) -> Table:
    """The Overview's one row (shared with the baseline, which counts the same things its own way)."""
    out = {"sessions": int(r["sessions"]), "devices": int(r["devices"]), "pageviews": int(r["pageviews"]),
           "events": int(r["events"]), "bounce_rate": rate(r["bounces"], r["sessions"]),
           "conversions": int(r["conversions"]), "conversion_rate": rate(r["conversions"], r["sessions"]),
           "open_now": int(r["open_now"]), "bot_sessions": int(r["bot_sessions"])}
    return Table(list(out), [out])


async def timeseries(conn: Any, s: Scope, q: TimeseriesQuery) -> Table:
    if q.metric in ("sessions", "pageviews"):
        rows = await conn.fetch(
            f"SELECT day, channel, sum({q.metric})::bigint AS value FROM rollup_sessions_daily "
            f"WHERE day BETWEEN $1 AND $2 AND {SITE} AND NOT is_bot GROUP BY 1, 2 HAVING sum({q.metric}) <> 0 "
            "ORDER BY 1, 2", *s.args)
    elif q.metric == "devices":
        rows = await conn.fetch(
            "SELECT day, channel, sum(devices)::bigint AS value FROM rollup_devices_daily "
            "WHERE day BETWEEN $1 AND $2 AND site IS NOT DISTINCT FROM $3 GROUP BY 1, 2 HAVING sum(devices) <> 0 "
            "ORDER BY 1, 2", *s.args)
    else:
        rows = await conn.fetch(
            f"""
            WITH credited AS (
                SELECT day, channel, sum({s.model}) AS value, sum(first_touch) AS touched
                FROM rollup_attribution_daily
                WHERE day BETWEEN $1 AND $2 AND {SITE} AND conversion_name = ANY($4) AND lookback_days = $5
                GROUP BY 1, 2
            ), counted AS (
                SELECT day, sum(conversions) AS n FROM rollup_conversions_daily
                WHERE day BETWEEN $1 AND $2 AND {SITE} AND conversion_name = ANY($4) GROUP BY 1
            )
            SELECT day, channel, value FROM credited WHERE value <> 0
            UNION ALL
            SELECT c.day, '{NO_TOUCH}', c.n - coalesce((SELECT sum(touched) FROM credited t WHERE t.day = c.day), 0)
            FROM counted c
            WHERE c.n - coalesce((SELECT sum(touched) FROM credited t WHERE t.day = c.day), 0) <> 0
            ORDER BY 1, 2
            """, *s.args, s.names, s.lookback)
    return table(rows, ["day", "channel", "value"], metric=q.metric)


async def top(conn: Any, s: Scope, q: TopQuery) -> Table:
    source, column = {"landing_page": ("rollup_landing_daily", "landing_path"),
                      "source": ("rollup_sessions_daily", "utm_source"),
                      "campaign": ("rollup_sessions_daily", "utm_campaign")}[q.dimension]
    rows = await conn.fetch(
        f"SELECT {column} AS {q.dimension}, sum(sessions) AS sessions, sum(bounces) AS bounces FROM {source} "
        f"WHERE day BETWEEN $1 AND $2 AND {SITE} AND NOT is_bot GROUP BY 1 HAVING sum(sessions) <> 0 "
        f"ORDER BY 2 DESC, 1 NULLS FIRST LIMIT $4", *s.args, q.limit)
    return top_table(q.dimension, rows)


def top_table(dimension: str, rows: list[Any]) -> Table:
    out = [{dimension: r[dimension], "sessions": int(r["sessions"]),
            "bounce_rate": rate(r["bounces"], r["sessions"])} for r in rows]
    return Table([dimension, "sessions", "bounce_rate"], out, {"dimension": dimension})


# --- Attribution and conversions ------------------------------------------------------------------

GROUP_COLUMNS = {"channel": "channel", "source": "utm_source", "campaign": "utm_campaign", "module": "module"}


# Credit per device (0005) and per person (0012): the same shapes, summed from different credit rows.
ATTRIBUTION_TABLES = {"device": ("rollup_attribution_daily", "rollup_value_daily"),
                      "person": ("rollup_person_attribution_daily", "rollup_person_value_daily")}


async def attribution(conn: Any, s: Scope, q: AttributionQuery) -> Table:
    column = GROUP_COLUMNS[q.group_by]
    daily, value_daily = ATTRIBUTION_TABLES[q.by]
    rows = await conn.fetch(
        f"""SELECT {column} AS {q.group_by}, {CREDITS} FROM {daily}
            WHERE day BETWEEN $1 AND $2 AND {SITE} AND conversion_name = ANY($4) AND lookback_days = $5
            GROUP BY 1 HAVING ({', '.join(f'sum({m})' for m in MODELS)}) <> ({', '.join('0' for _ in MODELS)})
            ORDER BY sum({s.model}) DESC, 1 NULLS FIRST""", *s.args, s.names, s.lookback)
    counts = await conn.fetchrow(
        f"""SELECT (SELECT coalesce(sum(conversions), 0) FROM rollup_conversions_daily
                    WHERE day BETWEEN $1 AND $2 AND {SITE} AND conversion_name = ANY($4)) AS conversions,
                   (SELECT coalesce(sum(first_touch), 0) FROM {daily}
                    WHERE day BETWEEN $1 AND $2 AND {SITE} AND conversion_name = ANY($4) AND lookback_days = $5)
                   AS attributed""", *s.args, s.names, s.lookback)
    values = await conn.fetch(
        f"""SELECT {column} AS grp, currency, sum({s.model}) AS value FROM {value_daily}
            WHERE day BETWEEN $1 AND $2 AND {SITE} AND conversion_name = ANY($4) AND lookback_days = $5
            GROUP BY 1, 2 HAVING sum({s.model}) <> 0""", *s.args, s.names, s.lookback)
    return attribution_table(s, q, rows, values, counts["conversions"], counts["attributed"])


def attribution_table(s: Scope, q: AttributionQuery, rows: list[Any], values: list[Any], conversions: Any,
                      attributed: Any) -> Table:
    """Credit per group under the six models, and beside it the value the query's model attributes, one
    column per currency (`value_EUR`, ...: never summed across currencies). Shared by the rollups, the
    views and the per-person answer."""
    currencies = sorted({v["currency"] for v in values})
    by_group: dict[Any, dict[str, float]] = {}
    for v in values:
        by_group.setdefault(v["grp"], {})[f"value_{v['currency']}"] = plain(v["value"])
    value_columns = [f"value_{c}" for c in currencies]
    out = []
    for r in rows:
        row = {k: plain(v) for k, v in r.items()}
        found = by_group.get(r[q.group_by], {})
        out.append({**row, **{c: found.get(c) for c in value_columns}})
    return Table([q.group_by, *MODELS, *value_columns], out,
                 {"group_by": q.group_by, "conversions": int(conversions), "attributed": int(attributed),
                  "by": q.by, "lookback": s.lookback, "value_model": s.model, "currencies": currencies})


async def _conversion_counts(conn: Any, s: Scope, first: str, order: str) -> Table:
    """Conversions per `first` (day or module) and name."""
    rows = await conn.fetch(
        f"SELECT {first}, conversion_name, sum(conversions)::bigint AS conversions FROM rollup_conversions_daily "
        f"WHERE day BETWEEN $1 AND $2 AND {SITE} AND conversion_name = ANY($4) GROUP BY 1, 2 "
        f"HAVING sum(conversions) <> 0 ORDER BY {order}", *s.args, s.names)
    return table(rows, [first, "conversion_name", "conversions"])


async def conversions_daily(conn: Any, s: Scope, q: Any = None) -> Table:
    return await _conversion_counts(conn, s, "day", "1, 2")


async def conversions_by_module(conn: Any, s: Scope, q: Any = None) -> Table:
    return await _conversion_counts(conn, s, "module", "3 DESC, 1 NULLS FIRST, 2")


async def conversions_by_channel(conn: Any, s: Scope, q: Any = None) -> Table:
    rows = await conn.fetch(
        f"""
        WITH visits AS (
            SELECT channel, sum(sessions) AS sessions FROM rollup_sessions_daily
            WHERE day BETWEEN $1 AND $2 AND {SITE} AND NOT is_bot GROUP BY 1
        ), credited AS (
            SELECT channel, sum({s.model}) AS conversions FROM rollup_attribution_daily
            WHERE day BETWEEN $1 AND $2 AND {SITE} AND conversion_name = ANY($4) AND lookback_days = $5 GROUP BY 1
        )
        SELECT channel, coalesce(v.sessions, 0) AS sessions, coalesce(c.conversions, 0) AS conversions
        FROM visits v FULL JOIN credited c USING (channel)
        WHERE coalesce(v.sessions, 0) <> 0 OR coalesce(c.conversions, 0) <> 0
        """, *s.args, s.names, s.lookback)
    return by_channel_table(rows)


def by_channel_table(rows: list[Any]) -> Table:
    out = [{"channel": r["channel"], "sessions": int(r["sessions"]), "conversions": plain(r["conversions"]),
            "conversion_rate": rate(r["conversions"], r["sessions"])} for r in rows]
    out.sort(key=lambda r: (-r["conversions"], -r["sessions"], r["channel"]))
    return Table(["channel", "sessions", "conversions", "conversion_rate"], out)


# --- Journey and Sessions -------------------------------------------------------------------------


async def journey_guids(conn: Any, q: JourneyQuery) -> list[str]:
    """The device asked for, or every device of the person (touchstream.persons)."""
    return [q.guid] if q.guid is not None else await person_guids(conn, q.user_id or "")


def journey_table(rows: list[Any], columns: list[str], q: JourneyQuery, order: list[str] | None = None) -> Table:
    """A device's table as it was; a person's with a `device` column first: D1, D2, ... in the order
    of `order` (the guids by their first session), so every table of the page labels alike."""
    if q.user_id is None:
        out = table(rows, columns, guid=q.guid)
        out.rows = [{c: row[c] for c in columns} for row in out.rows]  # (the query reads guid for persons)
        return out
    labels = {g: f"D{n}" for n, g in enumerate(order or [], 1)}
    out = table(rows, ["device", *columns], user_id=q.user_id, devices=[{"device": d, "guid": g}
                                                                        for g, d in labels.items()])
    for row in out.rows:
        row["device"] = labels.get(str(row["guid"]))
    return out


async def device_order(conn: Any, guids: list[str]) -> list[str]:
    """The guids by their first session (then by guid): how the Journey of a person numbers them."""
    rows = await conn.fetch(
        "SELECT g::text FROM unnest($1::uuid[]) g LEFT JOIN LATERAL (SELECT min(started_at) AS first "
        "FROM sessions WHERE guid = g) s ON true ORDER BY s.first NULLS LAST, g", guids)
    return [r[0] for r in rows]


async def journey_sessions(conn: Any, s: Scope, q: JourneyQuery) -> Table:
    guids = await journey_guids(conn, q)
    rows = await conn.fetch(
        f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions WHERE guid = ANY($1::uuid[]) "
        "ORDER BY started_at, guid, session_index, session_id", guids)
    return journey_table(rows, list(SESSION_COLUMNS), q, await device_order(conn, guids))


JOURNEY_CREDIT_COLUMNS = ["conversion_hit_id", "converted_at", "conversion_name", "module", "session_id",
                          "touch_index", "touch_count", "touch_started_at", "channel", "utm_source", "utm_campaign",
                          "credit"]
PERSON_CREDIT_COLUMNS = ["guid", *JOURNEY_CREDIT_COLUMNS]


async def journey_credits(conn: Any, s: Scope, q: JourneyQuery) -> Table:
    """Each conversion of the device (or the person's devices) with the touches that earned credit
    under the model (a conversion with no touch in the lookback window: one row without a touch)."""
    guids = await journey_guids(conn, q)
    rows = await conn.fetch(
        f"""SELECT c.guid, c.conversion_hit_id, c.converted_at, c.conversion_name, c.module, r.session_id,
                   r.touch_index, r.touch_count, r.touch_started_at, r.channel, r.utm_source, r.utm_campaign,
                   r.{s.model} AS credit
            FROM rollup_conversions c
            LEFT JOIN rollup_credits r ON r.converted_at = c.converted_at AND r.conversion_hit_id = c.conversion_hit_id
                 AND r.lookback_days = $3 AND r.{s.model} > 0
            WHERE c.guid = ANY($1::uuid[]) AND c.conversion_name = ANY($2)
            ORDER BY c.converted_at, c.conversion_hit_id, r.touch_index""", guids, s.names, s.lookback)
    columns = JOURNEY_CREDIT_COLUMNS if q.user_id is None else PERSON_CREDIT_COLUMNS
    return journey_table(rows, columns, q, await device_order(conn, guids))


def session_conditions(q: SessionsQuery, first_arg: int) -> tuple[str, list[Any]]:
    """WHERE conditions of the Sessions filters (other than the days), for `sessions` and the rollup alike."""
    conds, args = [], []
    for column, value in (("site", q.site), ("channel", q.channel), ("utm_source", q.source),
                          ("utm_campaign", q.campaign)):
        if value == NONE_VALUE and column in ("utm_source", "utm_campaign"):
            conds.append(f"{column} IS NULL")
        elif value is not None:
            args.append(value)
            conds.append(f"{column} = ${first_arg + len(args) - 1}")
    if q.bots != "include":
        conds.append("is_bot" if q.bots == "only" else "NOT is_bot")
    if q.status != "any":
        conds.append(f"status = '{q.status}'")
    return " AND ".join(conds) or "true", args


async def sessions(conn: Any, s: Scope, q: SessionsQuery) -> Table:
    where, args = session_conditions(q, 3)
    total = await conn.fetchval(
        f"SELECT coalesce(sum(sessions), 0) FROM rollup_sessions_daily WHERE day BETWEEN $1 AND $2 AND {where}",
        s.first, s.last, *args)
    rows = []
    offset = (q.page - 1) * q.page_size
    if offset < total:  # a filter that matches nothing (or a page past the end) reads no sessions
        rows = await conn.fetch(
            f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions WHERE started_at >= $1 AND started_at < $2 "
            f"AND {where} ORDER BY started_at DESC, session_id DESC LIMIT {q.page_size} OFFSET {offset}",
            s.start, s.end, *args)
    return table(rows, list(SESSION_COLUMNS), total=int(total), page=q.page, page_size=q.page_size)


async def meta(conn: Any) -> Table:
    row = await conn.fetchrow(
        f"""SELECT ARRAY(SELECT DISTINCT site FROM rollup_sessions_daily WHERE sessions <> 0 ORDER BY 1) AS sites,
                  ARRAY({CONVERSION_NAMES}) AS conversion_events,
                  ARRAY(SELECT days FROM rollup_lookbacks ORDER BY 1) AS lookbacks,
                  (SELECT lookback_days FROM attribution_settings) AS lookback,
                  (SELECT min(day) FROM rollup_sessions_daily WHERE sessions <> 0) AS first_day,
                  (SELECT max(day) FROM rollup_sessions_daily WHERE sessions <> 0) AS last_day""")
    out = {"sites": list(row["sites"]), "conversion_events": list(row["conversion_events"]),
           "lookbacks": [int(d) for d in row["lookbacks"]], "lookback": int(row["lookback"]), "models": list(MODELS),
           "first_day": row["first_day"], "last_day": row["last_day"]}
    return Table(list(out), [out])
