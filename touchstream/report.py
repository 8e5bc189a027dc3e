"""`touchstream report`: conversions credited to channels, campaigns or modules under each
attribution model (SPEC section 5), as a table, CSV or JSON, and optionally a PNG chart.

    touchstream report                          channel x model, per conversion name, with totals
    touchstream report --by campaign            rows: utm source / campaign of the touches
    touchstream report --by module              rows: the conversion's module x the touch's channel
    touchstream report --model linear,time_decay --since 2026-03-01 --until 2026-03-31
    touchstream report --chart credits.png      also a grouped bar chart (one bar per model)
    touchstream report --format csv > credits.csv
    touchstream report --summary                sessions per channel, bounce rate, pageviews/session

Numbers come from the `attribution_credits` view (one row per conversion, touch and model;
the credits of one conversion sum to 1 under every model), grouped here so that `--since` /
`--until` (on the conversion's time) can apply. So every "total" row equals the number of
conversions that have at least one touch.

Settings: TOUCHSTREAM_PG_DSN, TOUCHSTREAM_PG_SCHEMA (see `touchstream.console.PgReadSettings`).
The functions `attribution_table(conn, ...)` and `channel_summary(conn, ...)` render the same
text for other code (the demo); `conn` is an asyncpg connection whose search_path is the
Touchstream schema (`touchstream.console.connect` makes one).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from schemas.timefmt import UTC
from touchstream.console import (
    EXIT_OK,
    CliError,
    PgReadSettings,
    connect,
    error,
    load_settings,
    render_table,
)

MODELS = ("first_touch", "last_touch", "last_non_direct", "linear", "position_based", "time_decay")
# --by -> (the grouping columns of attribution_credits, their labels in tables)
GROUPINGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "channel": (("channel",), ("channel",)),
    "campaign": (("utm_source", "utm_campaign"), ("utm source", "utm campaign")),
    "module": (("module", "channel"), ("module", "channel")),
}
NONE_LABEL = "(none)"
CHART_MAX_GROUPS = 12  # bars groups in a chart; the rest are added up as "other"


class ReportSettings(PgReadSettings):
    """`TOUCHSTREAM_PG_DSN`, `TOUCHSTREAM_PG_SCHEMA` and the CLI connection timeouts."""


@dataclass
class Attribution:
    """Credited conversions per (conversion name, group) and model, plus conversion counts."""

    by: str
    models: tuple[str, ...]
    since: datetime | None
    until: datetime | None
    # (conversion_name, group values) -> model -> credit
    credits: dict[tuple[str, tuple[str | None, ...]], dict[str, float]] = field(default_factory=dict)
    conversions: dict[str, int] = field(default_factory=dict)  # name -> conversions in the period
    attributed: dict[str, int] = field(default_factory=dict)  # name -> conversions with at least one touch

    @property
    def columns(self) -> tuple[str, ...]:
        return GROUPINGS[self.by][0]

    def names(self) -> list[str]:
        """Conversion names, most conversions first."""
        return sorted(self.conversions, key=lambda n: (-self.conversions[n], n))

    def rows(self, name: str | None) -> list[tuple[tuple[str | None, ...], dict[str, float]]]:
        """(group, credits per model) of one conversion name (None: all names added up), best first."""
        merged: dict[tuple[str | None, ...], dict[str, float]] = {}
        for (conversion, group), credits in self.credits.items():
            if name is not None and conversion != name:
                continue
            into = merged.setdefault(group, dict.fromkeys(self.models, 0.0))
            for model in self.models:
                into[model] += credits.get(model, 0.0)
        # A touch with no credit under any model shown (e.g. a middle touch under first_touch) is noise.
        merged = {g: c for g, c in merged.items() if any(abs(v) > 1e-12 for v in c.values())}
        if self.by == "module":  # grouped by module first, then the channels of each, best first
            module_total: dict[str | None, float] = {}
            for group, credits in merged.items():
                module_total[group[0]] = module_total.get(group[0], 0.0) + sum(credits.values())
            key = lambda item: (-module_total[item[0][0]], _label(item[0][0]), -sum(item[1].values()),  # noqa: E731
                                tuple(_label(v) for v in item[0]))
        else:
            key = lambda item: (-sum(item[1].values()), tuple(_label(v) for v in item[0]))  # noqa: E731
        return sorted(merged.items(), key=key)

    def total(self, name: str | None) -> int:
        return sum(self.attributed.values()) if name is None else self.attributed.get(name, 0)


def _label(value: str | None) -> str:
    return NONE_LABEL if value is None or value == "" else value


# --- queries -------------------------------------------------------------------------------


def _period_sql(column: str, first: int) -> str:
    return f"(${first}::timestamptz IS NULL OR {column} >= ${first}) AND (${first + 1}::timestamptz IS NULL OR {column} < ${first + 1})"


async def attribution(conn: Any, *, by: str = "channel", models: Sequence[str] = MODELS,
                      since: datetime | None = None, until: datetime | None = None) -> Attribution:
    """Credited conversions grouped by `by`, for conversions at or after `since` and before `until`."""
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {', '.join(GROUPINGS)}, not {by!r}")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; the models are {', '.join(MODELS)}")
    columns = GROUPINGS[by][0]
    cols = ", ".join(columns)
    result = Attribution(by=by, models=tuple(models), since=since, until=until)
    rows = await conn.fetch(
        f"""
        SELECT conversion_name, {cols}, model, sum(credit) AS credit
        FROM attribution_credits
        WHERE model = ANY($3::text[]) AND {_period_sql("converted_at", 1)}
        GROUP BY conversion_name, {cols}, model
        """,
        since, until, list(models),
    )
    for r in rows:
        group = tuple(r[c] for c in columns)
        result.credits.setdefault((r["conversion_name"], group), {})[r["model"]] = float(r["credit"])
    # Every conversion in the period, and those the views found touches for (a conversion whose
    # session has not reached PostgreSQL yet has none, and so no credit).
    for r in await conn.fetch(
        f"""SELECT conversion_name, count(*) AS n FROM conversions
            WHERE {_period_sql("converted_at", 1)} GROUP BY conversion_name""", since, until):
        result.conversions[r["conversion_name"]] = int(r["n"])
    for r in await conn.fetch(
        f"""SELECT conversion_name, count(DISTINCT (conversion_hit_id, converted_at)) AS n FROM attribution_credits
            WHERE model = 'first_touch' AND {_period_sql("converted_at", 1)} GROUP BY conversion_name""",
            since, until):
        result.attributed[r["conversion_name"]] = int(r["n"])
    return result


@dataclass
class ChannelRow:
    channel: str
    sessions: int
    devices: int
    bounce_rate: float
    pageviews_per_session: float
    conversions: int


async def channel_rows(conn: Any, *, since: datetime | None = None, until: datetime | None = None,
                       include_bots: bool = False) -> tuple[list[ChannelRow], int]:
    """Sessions per channel (started in the period) and how many bot sessions were left out."""
    rows = await conn.fetch(
        f"""
        SELECT s.channel,
               count(*) AS sessions,
               count(DISTINCT s.guid) AS devices,
               avg(s.is_bounce::int)::float8 AS bounce_rate,
               avg(s.pageviews)::float8 AS pageviews_per_session,
               coalesce(sum(cv.n), 0)::bigint AS conversions
        FROM sessions s
        LEFT JOIN LATERAL (
            SELECT count(*) AS n FROM conversions c
            WHERE c.conversion_session_id = s.session_id AND c.guid = s.guid
        ) cv ON true
        WHERE ($3::bool OR NOT s.is_bot) AND {_period_sql("s.started_at", 1)}
        GROUP BY s.channel
        ORDER BY count(*) DESC, s.channel
        """,
        since, until, include_bots,
    )
    bots = 0 if include_bots else await conn.fetchval(
        f"SELECT count(*) FROM sessions s WHERE s.is_bot AND {_period_sql('s.started_at', 1)}", since, until)
    return [ChannelRow(r["channel"], int(r["sessions"]), int(r["devices"]), float(r["bounce_rate"]),
                       float(r["pageviews_per_session"]), int(r["conversions"])) for r in rows], int(bots)


# --- rendering -----------------------------------------------------------------------------


def _period_text(since: datetime | None, until: datetime | None) -> str:
    if since is None and until is None:
        return "all time"
    left = since.strftime("%Y-%m-%d %H:%M") if since else "the start"
    right = until.strftime("%Y-%m-%d %H:%M") if until else "now"
    return f"{left} to {right} UTC"


def _counts_text(data: Attribution) -> str:
    total = sum(data.conversions.values())
    parts = ", ".join(f"{data.conversions[n]} {n}" for n in data.names())
    return f"{total} conversion{'s' if total != 1 else ''}" + (f": {parts}" if parts else "")


def _section(data: Attribution, name: str | None) -> str:
    labels = GROUPINGS[data.by][1]
    body: list[list[Any]] = []
    last_module: str | None = object()  # type: ignore[assignment]
    for group, credits in data.rows(name):
        cells: list[Any] = [_label(v) for v in group]
        if data.by == "module":
            if group[0] == last_module:
                cells[0] = ""
            last_module = group[0]
        body.append(cells + [f"{credits[m]:.2f}" for m in data.models])
    totals = [0.0] * len(data.models)
    for _, credits in data.rows(name):
        for i, m in enumerate(data.models):
            totals[i] += credits[m]
    body.append(["total"] + [""] * (len(labels) - 1) + [f"{t:.2f}" for t in totals])
    return render_table([*labels, *data.models], body, rule_before_last=True,
                        right=range(len(labels), len(labels) + len(data.models)))


def render_attribution(data: Attribution) -> str:
    what = {"channel": "channel", "campaign": "utm source / campaign", "module": "conversion module and channel"}
    head = (f"Conversions credited by {what[data.by]} under each model "
            f"({_period_text(data.since, data.until)}; {_counts_text(data)})")
    if not data.conversions:
        return head + "\n\nno conversions in this period"
    parts = [head]
    names = data.names()
    sections: list[str | None] = list(names)
    if len(names) > 1:
        sections.append(None)
    for name in sections:
        count = data.total(name)
        title = f"{name}" if name is not None else "all conversions"
        title += f" ({count} conversion{'s' if count != 1 else ''} with touches)"
        missing = (data.conversions.get(name, 0) if name is not None else sum(data.conversions.values())) - count
        if missing:
            title += f"; {missing} without any session in the 90-day lookback"
        parts.append(title + "\n" + _section(data, name))
    return "\n\n".join(parts)


def attribution_rows(data: Attribution) -> list[dict[str, Any]]:
    """Flat rows for CSV/JSON: conversion name, grouping columns, one credit per model."""
    out = []
    for name in data.names():
        for group, credits in data.rows(name):
            row: dict[str, Any] = {"conversion_name": name}
            row.update(zip(data.columns, group, strict=True))
            row.update({m: round(credits[m], 6) for m in data.models})
            out.append(row)
    return out


def render_csv(data: Attribution) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["conversion_name", *data.columns, *data.models], lineterminator="\n")
    writer.writeheader()
    for row in attribution_rows(data):
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def render_json(data: Attribution) -> str:
    doc = {
        "by": data.by,
        "models": list(data.models),
        "since": data.since.isoformat() if data.since else None,
        "until": data.until.isoformat() if data.until else None,
        "conversions": {n: {"total": data.conversions[n], "with_touches": data.attributed.get(n, 0)}
                        for n in data.names()},
        "rows": attribution_rows(data),
        "totals": {n: {m: round(sum(c[m] for _, c in data.rows(n)), 6) for m in data.models} for n in data.names()},
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"


def render_channel_summary(rows: list[ChannelRow], bots: int, since: datetime | None = None,
                           until: datetime | None = None) -> str:
    total = sum(r.sessions for r in rows)
    head = f"Sessions per channel ({_period_text(since, until)}; {total} sessions"
    head += f", {bots} bot sessions left out)" if bots else ")"
    if not rows:
        return head + "\n\nno sessions in this period"
    body: list[list[Any]] = [
        [r.channel, r.sessions, f"{100 * r.sessions / total:.1f}%", r.devices, f"{100 * r.bounce_rate:.1f}%",
         f"{r.pageviews_per_session:.2f}", r.conversions]
        for r in rows
    ]
    all_sessions = sum(r.sessions for r in rows)
    bounce = sum(r.bounce_rate * r.sessions for r in rows) / all_sessions
    pps = sum(r.pageviews_per_session * r.sessions for r in rows) / all_sessions
    body.append(["total", all_sessions, "100.0%", "", f"{100 * bounce:.1f}%", f"{pps:.2f}",
                 sum(r.conversions for r in rows)])
    table = render_table(["channel", "sessions", "share", "devices", "bounce rate", "pageviews/session",
                          "conversions"], body, rule_before_last=True, right=range(1, 7))
    return head + "\n\n" + table


async def attribution_table(conn: Any, by: str = "channel", *, models: Sequence[str] = MODELS,
                            since: datetime | None = None, until: datetime | None = None) -> str:
    """The rendered text table of `touchstream report --by BY` (for the demo and other callers)."""
    return render_attribution(await attribution(conn, by=by, models=models, since=since, until=until))


async def channel_summary(conn: Any, *, since: datetime | None = None, until: datetime | None = None) -> str:
    """Sessions per channel with bounce rate and pageviews per session, rendered (bots left out)."""
    rows, bots = await channel_rows(conn, since=since, until=until)
    return render_channel_summary(rows, bots, since, until)


# --- chart ---------------------------------------------------------------------------------


def write_chart(data: Attribution, path: Path) -> None:
    """Grouped bars: credited conversions (all conversion names) per group, one bar per model."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise CliError(f"--chart needs matplotlib ({exc}); install it with `pip install matplotlib==3.11.2`") from None

    rows = data.rows(None)
    if len(rows) > CHART_MAX_GROUPS:  # the best ones, and the rest added up
        rest = rows[CHART_MAX_GROUPS - 1:]
        other = {m: sum(c[m] for _, c in rest) for m in data.models}
        rows = rows[:CHART_MAX_GROUPS - 1] + [((f"other ({len(rest)})",), other)]
    labels = [" / ".join(_label(v) for v in group) for group, _ in rows] or ["(no conversions)"]
    n_models = len(data.models)
    width = 0.8 / max(n_models, 1)
    fig = Figure(figsize=(min(20.0, max(7.0, 1.5 + len(labels) * (0.3 + 0.25 * n_models))), 5.0), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, model in enumerate(data.models):
        xs = [x + (i - (n_models - 1) / 2) * width for x in range(len(labels))]
        ys = [credits[model] for _, credits in rows] or [0.0]
        ax.bar(xs, ys, width=width, label=model)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30 if len(labels) > 3 else 0, ha="right" if len(labels) > 3 else "center")
    ax.set_ylabel("credited conversions")
    top = max((credits[m] for _, credits in rows for m in data.models), default=0.0)
    ax.set_ylim(0, max(top, 1.0) * 1.25)  # room for the legend above the bars
    ax.set_title(f"Conversions credited by {data.by} ({_period_text(data.since, data.until)}; {_counts_text(data)})",
                 fontsize=9)
    ax.legend(fontsize=8, ncols=min(3, max(1, n_models)))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    except OSError as exc:
        raise CliError(f"cannot write the chart to {path}: {exc.strerror or exc}") from None


# --- command line --------------------------------------------------------------------------


def parse_moment(text: str, *, end: bool) -> datetime:
    """A date (YYYY-MM-DD, a UTC day; as an end, the whole day is included) or an ISO 8601 time
    with a zone."""
    value = text.strip()
    try:
        day = date.fromisoformat(value)
    except ValueError:
        pass
    else:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return start + timedelta(days=1) if end else start
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (YYYY-MM-DD) or an ISO 8601 time (2026-03-02T09:00:00Z)") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone: add one (e.g. Z) or give a date")
    return moment.astimezone(UTC)


def parse_models(text: str) -> tuple[str, ...]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names or "all" in names:
        return MODELS
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown model {', '.join(unknown)}: choose from {', '.join(MODELS)} (or all)")
    return tuple(dict.fromkeys(names))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="touchstream report",
        description="Conversions credited per channel, campaign or module under each attribution model "
                    "(from the attribution_credits view). Times are UTC.",
        epilog="Settings: TOUCHSTREAM_PG_DSN, TOUCHSTREAM_PG_SCHEMA. Exit codes: 0 done, 2 bad arguments or "
               "settings, 3 PostgreSQL unreachable.",
    )
    parser.add_argument("--model", type=parse_models, default=MODELS, metavar="M[,M...]",
                        help=f"models to show (default all): {', '.join(MODELS)}")
    parser.add_argument("--by", choices=tuple(GROUPINGS), default="channel",
                        help="rows: the touch's channel (default), its utm source/campaign, or the conversion's "
                             "module x the touch's channel")
    parser.add_argument("--since", type=lambda t: parse_moment(t, end=False), metavar="DATE",
                        help="conversions from this day (YYYY-MM-DD, UTC) or time (ISO 8601 with zone)")
    parser.add_argument("--until", type=lambda t: parse_moment(t, end=True), metavar="DATE",
                        help="conversions up to and including this day, or before this time")
    parser.add_argument("--chart", type=Path, metavar="OUT.png",
                        help="also write a PNG: grouped bars of credited conversions per row, one bar per model")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output (default table)")
    parser.add_argument("--summary", action="store_true",
                        help="print sessions per channel (share, bounce rate, pageviews per session, conversions; "
                             "bots left out) instead of attribution")
    return parser


async def _run(args: argparse.Namespace, settings: ReportSettings) -> str:
    conn = await connect(settings, "touchstream-report")
    try:
        if args.summary:
            rows, bots = await channel_rows(conn, since=args.since, until=args.until)
            if args.format == "table":
                return render_channel_summary(rows, bots, args.since, args.until)
            dicts = [{"channel": r.channel, "sessions": r.sessions, "devices": r.devices,
                      "bounce_rate": round(r.bounce_rate, 6), "pageviews_per_session": round(r.pageviews_per_session, 6),
                      "conversions": r.conversions} for r in rows]
            if args.format == "json":
                return orjson.dumps({"bot_sessions_left_out": bots, "rows": dicts},
                                    option=orjson.OPT_INDENT_2).decode() + "\n"
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=list(ChannelRow.__dataclass_fields__), lineterminator="\n")
            writer.writeheader()
            writer.writerows(dicts)
            return buf.getvalue()
        data = await attribution(conn, by=args.by, models=args.model, since=args.since, until=args.until)
    finally:
        await conn.close()
    if args.chart is not None:
        write_chart(data, args.chart)
    if args.format == "csv":
        return render_csv(data)
    if args.format == "json":
        return render_json(data)
    text = render_attribution(data)
    if args.chart is not None:
        text += f"\n\nchart written to {args.chart}"
    return text


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.since and args.until and args.since >= args.until:
        parser.error("--since must be before --until")
    if args.summary and args.chart is not None:
        parser.error("--chart draws attribution; it cannot be combined with --summary")
    try:
        settings = load_settings(ReportSettings)
        out = asyncio.run(_run(args, settings))
    except CliError as exc:
        error(exc.message)
        return exc.code
    sys.stdout.write(out if out.endswith("\n") else out + "\n")
    return EXIT_OK


__all__ = ["MODELS", "Attribution", "attribution", "attribution_table", "channel_summary", "main"]
