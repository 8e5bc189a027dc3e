"""`touchstream journey GUID`: one device's sessions in order, its conversions at their time,
and its first touch. `touchstream journey --user-id ID`: the same for a person, every device of
it (SPEC section 5, `person_devices`) in one timeline, each session labelled by its device.

    touchstream journey 6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01
    touchstream journey 6F1C2B0E4A574C3E9D610B8F3F1E7A01 --format json
    touchstream journey --user-id crm-4711

Reads `sessions`, `devices`, the `conversions` view (events whose name is in
`conversion_events`) and counts the device's `late_hits`. Times are UTC.

Exit codes: 0 shown, 1 no data for this guid (or user id), 2 not a guid (or bad settings), 3 PostgreSQL
unreachable. Settings: TOUCHSTREAM_PG_DSN, TOUCHSTREAM_PG_SCHEMA.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import orjson

from touchstream.persons import person_guids, user_id_problem
from touchstream.console import (
    EXIT_NO,
    EXIT_OK,
    CliError,
    PgReadSettings,
    connect,
    error,
    fmt_duration,
    fmt_time,
    load_settings,
    parse_guid,
    render_table,
)

SESSION_FIELDS = (
    "session_id", "session_index", "site", "status", "started_at", "last_seen_at", "ended_at", "end_reason",
    "duration_s", "channel", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "click_id_type",
    "referrer", "landing_url", "landing_path", "exit_url", "pageviews", "events", "hits", "is_bounce", "is_bot",
    "browser", "os", "device_type",
)
DEVICE_FIELDS = (
    "first_seen_at", "last_seen_at", "sessions", "first_session_id", "first_utm_source", "first_utm_medium",
    "first_utm_campaign", "first_channel",
)


class JourneySettings(PgReadSettings):
    """`TOUCHSTREAM_PG_DSN`, `TOUCHSTREAM_PG_SCHEMA` and the CLI connection timeouts."""


@dataclass
class Journey:
    guid: str
    device: dict[str, Any] | None
    sessions: list[dict[str, Any]]
    conversions: list[dict[str, Any]]
    late_hits: int = 0
    timeline: list[dict[str, Any]] = field(default_factory=list)
    user_id: str | None = None  # a person's journey: `devices` labels each of its devices
    devices: list[dict[str, Any]] = field(default_factory=list)

    @property
    def known(self) -> bool:
        return bool(self.device or self.sessions or self.conversions or self.late_hits or self.devices)


async def load_journey(conn: Any, guid: str) -> Journey:
    """Everything `journey` shows for a (canonical, lower-case) guid."""
    device_row = await conn.fetchrow(f"SELECT {', '.join(DEVICE_FIELDS)} FROM devices WHERE guid = $1::uuid", guid)
    return await _timeline(conn, [guid], Journey(guid, dict(device_row) if device_row else None, [], []))


async def load_person_journey(conn: Any, user_id: str) -> Journey:
    """Every device of the person seen with `user_id`, their sessions and conversions in one
    timeline; each session and conversion names its device (`device`: D1, D2, ... in the order
    the devices were first seen)."""
    guids = await person_guids(conn, user_id)
    rows = await conn.fetch(
        f"SELECT guid::text AS guid, {', '.join(DEVICE_FIELDS)} FROM devices WHERE guid = ANY($1::uuid[])", guids)
    known = {r["guid"]: dict(r) for r in rows}
    journey = await _timeline(conn, guids, Journey(guids[0] if guids else "", None, [], [], user_id=user_id))
    first_session = {}
    for s in journey.sessions:
        first_session.setdefault(s["guid"], s)
    # Devices in the order they were first seen (a device with no row yet: after the others).
    order = sorted(guids, key=lambda g: (known[g]["first_seen_at"] is None if g in known else True,
                                         known[g]["first_seen_at"] if g in known else None, g))
    labels = {g: f"D{n}" for n, g in enumerate(order, 1)}
    for g in order:
        s = first_session.get(g, {})
        journey.devices.append({"device": labels[g], "guid": g, "browser": s.get("browser"), "os": s.get("os"),
                                "device_type": s.get("device_type"), **(known.get(g) or {"guid": g})})
    for item in journey.timeline:
        item["device"] = labels.get(item["guid"])
    return journey


async def _timeline(conn: Any, guids: list[str], journey: Journey) -> Journey:
    """The sessions, conversions and late hits of `guids`, in one timeline, into `journey`."""
    many = journey.user_id is not None
    extra = "guid::text AS guid, " if many else ""
    sessions = [
        {k: r[k] for k in r.keys()}
        for r in await conn.fetch(
            f"SELECT {extra}{', '.join(SESSION_FIELDS)} FROM sessions WHERE guid = ANY($1::uuid[]) "
            "ORDER BY started_at, guid, session_index, session_id", guids)
    ]
    conversions = [
        dict(r) for r in await conn.fetch(
            f"SELECT {extra}conversion_hit_id, conversion_name, module, conversion_session_id, site, converted_at, "
            "properties FROM conversions WHERE guid = ANY($1::uuid[]) ORDER BY converted_at, conversion_hit_id", guids)
    ]
    late = await conn.fetchval("SELECT count(*) FROM late_hits WHERE guid = ANY($1::uuid[])", guids)
    journey.sessions, journey.conversions, journey.late_hits = sessions, conversions, int(late)
    by_id = {s["session_id"]: s for s in sessions}
    for c in conversions:
        owner = by_id.get(c["conversion_session_id"])
        c["session_index"] = owner["session_index"] if owner else None
        if isinstance(c.get("properties"), str):  # jsonb arrives as text without a codec
            try:
                c["properties"] = orjson.loads(c["properties"])
            except orjson.JSONDecodeError:
                pass
    # A session at its start, a conversion at its time; at equal times the session comes first.
    items = [(s["started_at"], 0, n, {"type": "session", **s}) for n, s in enumerate(sessions)]
    items += [(c["converted_at"], 1, n, {"type": "conversion", **c}) for n, c in enumerate(conversions)]
    journey.timeline = [item for *_, item in sorted(items, key=lambda t: t[:3])]
    return journey


def _path(url: str | None) -> str:
    if not url:
        return "-"
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _campaign(source: str | None, medium: str | None, campaign: str | None) -> str:
    if not (source or medium or campaign):
        return "-"
    return " / ".join(v or "-" for v in (source, medium, campaign))


def render_journey(j: Journey) -> str:
    lines = _person_header(j) if j.user_id is not None else _device_header(j)
    n_conv = len(j.conversions)
    lines.append(f"  {len(j.sessions)} session{'s' if len(j.sessions) != 1 else ''}, "
                 f"{n_conv} conversion{'s' if n_conv != 1 else ''}"
                 + (f", {j.late_hits} late hit{'s' if j.late_hits != 1 else ''} (in late_hits)" if j.late_hits else ""))
    rows = _timeline_rows(j)
    if rows:
        person = j.user_id is not None
        lines.append("")
        lines.append(render_table(
            (["device"] if person else []) + ["#", "started (UTC)", "ended (UTC)", "duration", "channel",
                                               "source / medium / campaign", "landing → exit", "pv", "ev",
                                               "end reason", "status"],
            rows, right=tuple(n + person for n in (0, 3, 7, 8))))
    return "\n".join(lines)


def _device_header(j: Journey) -> list[str]:
    lines = [f"device {j.guid}"]
    d = j.device
    if d:
        lines.append(f"  first seen {fmt_time(d['first_seen_at'])} UTC, last seen {fmt_time(d['last_seen_at'])} UTC, "
                     f"{d['sessions']} session{'s' if d['sessions'] != 1 else ''}")
        first_index = next((s["session_index"] for s in j.sessions if s["session_id"] == d["first_session_id"]), None)
        where = f" (session {first_index})" if first_index is not None else ""
        lines.append(f"  first touch: {d['first_channel'] or '-'}, "
                     f"{_campaign(d['first_utm_source'], d['first_utm_medium'], d['first_utm_campaign'])}{where}")
    else:
        lines.append("  no `devices` row (the sink has not written this device's sessions yet)")
    return lines


def _person_header(j: Journey) -> list[str]:
    n = len(j.devices)
    lines = [f"person with user id {j.user_id!r}: {n} device{'s' if n != 1 else ''}"]
    for d in j.devices:
        what = " / ".join(v or "-" for v in (d.get("browser"), d.get("os"), d.get("device_type")))
        seen = (f", first seen {fmt_time(d['first_seen_at'])} UTC, {d['sessions']} session"
                f"{'s' if d['sessions'] != 1 else ''}" if d.get("first_seen_at") else ", no sessions written yet")
        lines.append(f"  {d['device']}  {d['guid']}  {what}{seen}")
    return lines


def _timeline_rows(j: Journey) -> list[list[Any]]:
    person = j.user_id is not None
    rows: list[list[Any]] = []
    for item in j.timeline:
        if item["type"] == "session":
            s = item
            flags = [s["status"]] + (["bot"] if s["is_bot"] else []) + (["bounce"] if s["is_bounce"] else [])
            row = [
                s["session_index"], fmt_time(s["started_at"]),
                fmt_time(s["ended_at"]) if s["ended_at"] else "(open)", fmt_duration(s["duration_s"]),
                s["channel"], _campaign(s["utm_source"], s["utm_medium"], s["utm_campaign"]),
                f"{_path(s['landing_url'])} → {_path(s['exit_url'])}", s["pageviews"], s["events"],
                s["end_reason"] or "-", ", ".join(flags),
            ]
        else:
            c = item
            where = f"in session {c['session_index']}" if c["session_index"] is not None else "session not in sessions"
            row = ["", fmt_time(c["converted_at"]), "", "", f"* {c['conversion_name']}",
                   f"module {c['module'] or '-'}", where, "", "", "", "conversion"]
        rows.append(([item["device"]] if person else []) + row)
    return rows


def _json_default(value: Any) -> Any:
    # asyncpg's UUID is its own type (orjson only knows uuid.UUID); numeric columns are Decimal.
    if isinstance(value, (uuid.UUID, Decimal)) or type(value).__name__ == "UUID":
        return str(value) if not isinstance(value, Decimal) else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def render_json(j: Journey) -> str:
    if j.user_id is not None:
        doc = {"user_id": j.user_id, "devices": j.devices, "late_hits": j.late_hits, "timeline": j.timeline}
    else:
        doc = {"guid": j.guid, "device": j.device, "late_hits": j.late_hits, "timeline": j.timeline}
    return orjson.dumps(doc, default=_json_default,
                        option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC).decode() + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="touchstream journey",
        description="A device's sessions in order (times UTC), its conversions at their time, and its first touch; "
                    "with --user-id, a person's: every device of it in one timeline, each labelled D1, D2, ...",
        epilog="Exit codes: 0 shown, 1 nothing is known about this guid or user id, 2 not a guid or bad settings, "
               "3 PostgreSQL unreachable. Settings: TOUCHSTREAM_PG_DSN, TOUCHSTREAM_PG_SCHEMA.",
    )
    parser.add_argument("guid", metavar="GUID", nargs="?", help="the device's guid (a UUID; any case)")
    parser.add_argument("--user-id", metavar="ID",
                        help="instead of GUID: the person seen with this user id (identify()), all its devices")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="output (default table)")
    return parser


async def _run(guid: str | None, user_id: str | None, settings: JourneySettings) -> Journey:
    conn = await connect(settings, "touchstream-journey")
    try:
        return await (load_journey(conn, guid) if guid is not None else load_person_journey(conn, user_id or ""))
    finally:
        await conn.close()


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        if (args.guid is None) == (args.user_id is None):
            raise CliError("give either a GUID or --user-id ID (one of them)")
        guid = parse_guid(args.guid) if args.guid is not None else None
        if args.user_id is not None and (problem := user_id_problem(args.user_id)):
            raise CliError(f"--user-id {problem}")
        settings = load_settings(JourneySettings)
        journey = asyncio.run(_run(guid, args.user_id, settings))
    except CliError as exc:
        error(exc.message)
        return exc.code
    if not journey.known:
        what = f"device {guid}" if guid is not None else f"user id {args.user_id!r}"
        error(f"no data for {what}: no sessions, conversions, late hits or devices row in schema "
              f"{settings.pg_schema!r} (check the guid, TOUCHSTREAM_PG_SCHEMA, or whether its hits have been "
              "processed yet)")
        return EXIT_NO
    sys.stdout.write(render_json(journey) if args.format == "json" else render_journey(journey) + "\n")
    return EXIT_OK
