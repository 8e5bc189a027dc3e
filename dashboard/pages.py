"""The five pages: each parses its URL with the same parameter model as its API endpoints, asks
the same query functions, and renders HTML with SVG charts and the tables beside them.

Filters live in the query string (a GET form), so reload, the back button and shared links all
restore a view. A page with bad parameters answers 400 with each message next to the form.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from dashboard import charts, queries
from dashboard.api import BY_FUNCTION, Endpoint
from dashboard.charts import Bar
from dashboard.params import (
    CHANNELS,
    MODEL_LABELS,
    MODELS,
    AttributionQuery,
    ConversionsQuery,
    Filters,
    JourneyPageQuery,
    JourneyQuery,
    Query,
    SessionsQuery,
    TimeseriesQuery,
    TopQuery,
)
from dashboard.queries import NO_TOUCH, Table

METRIC_LABELS = {"sessions": "Sessions", "devices": "Devices", "pageviews": "Pageviews",
                 "conversions": "Conversions (credited)"}
CHART_GROUPS = 12  # groups drawn in the attribution chart; the table has them all


def derive(q: Query, cls: type[Query], **extra: Any) -> Query:
    """The page's query cut down to (and re-validated as) another model: one endpoint's parameters."""
    fields = {f.alias or n for n, f in cls.model_fields.items()}
    data = {k: v for k, v in q.model_dump(by_alias=True).items() if k in fields}
    data.update(extra)
    return cls.model_validate(data)


@dataclass
class Panel:
    """One table of a page, with the endpoint (and query) that serves the same rows."""

    endpoint: Endpoint
    query: Query
    table: Table

    @property
    def csv_url(self) -> str:
        qs = self.query.query_string(format="csv")
        return f"{self.endpoint.url}?{qs}"

    @property
    def api_url(self) -> str:
        return f"{self.endpoint.url}?{self.query.query_string()}"


async def panel(conn: Any, function: str, q: Query, cls: type[Query] | None = None, **extra: Any) -> Panel:
    endpoint = BY_FUNCTION[function]
    sub = derive(q, cls or endpoint.query, **extra)
    return Panel(endpoint, sub, await endpoint.answer(conn, sub))


def series_chart(chart_id: str, title: str, y_label: str, t: Table, q: Filters, key: str, value: str,
                 series: list[str]) -> Any:
    days = [d.isoformat() for d in q.days()]
    present = {r[key] for r in t.rows}
    order = [s for s in series if s in present] + sorted(present - set(series))
    bars = [Bar(r["day"].isoformat(), r[key], r[value]) for r in t.rows]
    return {"svg": charts.stacked(chart_id, title, y_label, days, order, bars), "legend": charts.legend(order)}


# --- the pages ---------------------------------------------------------------------------------------


async def overview(conn: Any, q: TimeseriesQuery) -> dict[str, Any]:
    series = await panel(conn, "timeseries", q)
    ctx: dict[str, Any] = {
        "summary": await panel(conn, "summary", q),
        "series": series,
        "tops": [await panel(conn, "top", q, dimension=d) for d in ("landing_page", "source", "campaign")],
        "metric_labels": METRIC_LABELS,
    }
    if series.table.rows:
        ctx["chart"] = series_chart("chart-overview", f"{METRIC_LABELS[q.metric]} per day by channel",
                                    METRIC_LABELS[q.metric], series.table, q, "channel", "value",
                                    [*CHANNELS, NO_TOUCH])
    return ctx


async def attribution(conn: Any, q: AttributionQuery) -> dict[str, Any]:
    p = await panel(conn, "attribution", q)
    # value columns (value_EUR, ...): the value the chosen model attributes, one per currency
    values = {f"value_{c}": f"Value {c} ({MODEL_LABELS[q.model]})" for c in p.table.meta["currencies"]}
    ctx: dict[str, Any] = {"credits": p, "models": MODELS, "model_labels": MODEL_LABELS,
                           "headers": {**MODEL_LABELS, **values}}
    if p.table.rows:
        groups = [label(r[q.group_by]) for r in p.table.rows[:CHART_GROUPS]]
        bars = [Bar(label(r[q.group_by]), m, r[m]) for r in p.table.rows[:CHART_GROUPS] for m in MODELS]
        ctx["chart"] = {"svg": charts.grouped("chart-attribution", f"Conversions credited by {q.group_by}, "
                                              "six models side by side", "Conversions", groups, list(MODELS), bars),
                        "legend": charts.legend(list(MODELS), MODEL_LABELS)}
    return ctx


async def conversions(conn: Any, q: ConversionsQuery) -> dict[str, Any]:
    daily = await panel(conn, "conversions_daily", q)
    by_channel = await panel(conn, "conversions_by_channel", q)
    ctx: dict[str, Any] = {"daily": daily, "by_channel": by_channel,
                           "by_module": await panel(conn, "conversions_by_module", q), "model_labels": MODEL_LABELS}
    if daily.table.rows:
        names = sorted({r["conversion_name"] for r in daily.table.rows})
        ctx["chart"] = series_chart("chart-conversions", "Conversions per day by event", "Conversions",
                                    daily.table, q, "conversion_name", "conversions", names)
    if by_channel.table.rows:
        rows = by_channel.table.rows
        ctx["channel_chart"] = {"svg": charts.grouped(
            "chart-by-channel", f"Conversions credited per channel ({MODEL_LABELS[q.model]})", "Conversions",
            [r["channel"] for r in rows], ["conversions"], [Bar(r["channel"], "conversions", r["conversions"])
                                                            for r in rows])}
    return ctx


async def journey(conn: Any, q: JourneyPageQuery) -> dict[str, Any]:
    if q.guid is None and q.user_id is None:
        return {}
    return {"sessions": await panel(conn, "journey_sessions", q, JourneyQuery),
            "credits": await panel(conn, "journey_credits", q, JourneyQuery), "model_labels": MODEL_LABELS}


async def sessions(conn: Any, q: SessionsQuery) -> dict[str, Any]:
    p = await panel(conn, "sessions", q)
    total, size = p.table.meta["total"], q.page_size
    pages = max(1, -(-total // size))
    return {"list": p, "channels": CHANNELS, "page_count": pages,
            "prev_url": f"?{q.query_string(page=q.page - 1)}" if q.page > 1 else None,
            "next_url": f"?{q.query_string(page=q.page + 1)}" if q.page < pages else None,
            "first_row": (q.page - 1) * size + 1, "last_row": min(q.page * size, total)}


def label(value: Any) -> str:
    return "(none)" if value is None or value == "" else str(value)


@dataclass(frozen=True)
class Page:
    name: str
    title: str
    query: type[Query]
    build: Callable[[Any, Any], Awaitable[dict[str, Any]]]


PAGES = {p.name: p for p in (
    Page("overview", "Overview", TimeseriesQuery, overview),
    Page("attribution", "Attribution", AttributionQuery, attribution),
    Page("conversions", "Conversions", ConversionsQuery, conversions),
    Page("journey", "Journey", JourneyPageQuery, journey),
    Page("sessions", "Sessions", SessionsQuery, sessions),
)}


def presets(q: Filters | None) -> list[tuple[str, str]]:
    return [("7d", "Last 7 days"), ("30d", "Last 30 days"), ("90d", "Last 90 days"), ("custom", "Custom")]


def shown_range(q: Filters) -> str:
    last = q.last_day
    return f"{q.first_day.isoformat()} to {last.isoformat()} (UTC, {(last - q.first_day + timedelta(days=1)).days} days)"


__all__ = ["PAGES", "Page", "derive", "label", "presets", "queries", "shown_range"]
