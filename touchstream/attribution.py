"""`touchstream attribution`: what attribution counts, changed in the database (migration 0010).

    touchstream attribution show                                  the lookback, conversion names and rules
    touchstream attribution set --lookback-days 30                the views' lookback (1-365 days)
    touchstream attribution rule add NAME PATTERN [--value 120 --currency EUR] [--description TEXT]
    touchstream attribution rule remove NAME PATTERN

A rule makes every pageview whose URL matches PATTERN (SQL LIKE: `%` any run of characters, `_`
one character, `\\` escapes them; case-sensitive, over the whole URL as the tracker sent it) a
conversion NAME, e.g. `touchstream attribution rule add lead '%/thank-you%'`.

Both are data, not settings: they are read by the views at query time, and the dashboard's rollups
follow in the same transaction (a new lookback rebuilds them; a rule queues the pageviews it
matches, folded by the sink's next drain). Runs as the schema's owner
(TOUCHSTREAM_PG_MIGRATE_DSN, else TOUCHSTREAM_PG_DSN), like `forget`.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from schemas.hit import CURRENCY, MAX_VALUE
from touchstream.console import EXIT_OK, CliError, PgReadSettings, connect, error, load_settings, render_table

MAX_PATTERN = 2048


@dataclass(frozen=True)
class Rule:
    """A conversion rule as the command line gives it, checked before it reaches the database."""

    name: str
    url_pattern: str
    value: Decimal | None = None
    currency: str | None = None
    description: str | None = None

    @classmethod
    def of(cls, name: str, pattern: str, value: str | None = None, currency: str | None = None,
           description: str | None = None) -> Rule:
        """The rule, or CliError naming the argument that is wrong."""
        if not name.strip() or len(name) > 64:
            raise CliError("NAME must be 1-64 characters (the conversion's name, e.g. lead)")
        if not pattern or len(pattern) > MAX_PATTERN or "\x00" in pattern:
            raise CliError(f"PATTERN must be 1-{MAX_PATTERN} characters (SQL LIKE, e.g. '%/thank-you%')")
        if (len(pattern) - len(pattern.rstrip("\\"))) % 2:
            raise CliError(f"PATTERN {pattern!r} ends with a lone \\ (LIKE's escape): double it to match a \\")
        if "%" not in pattern and "_" not in pattern:
            # (allowed, but almost always a mistake: it would match one exact URL only)
            error(f"note: PATTERN {pattern!r} has no % or _: it matches that exact URL only")
        if (value is None) != (currency is None):
            raise CliError("--value and --currency go together (e.g. --value 120 --currency EUR)")
        amount = None
        if value is not None:
            try:
                amount = Decimal(value)
            except InvalidOperation:
                raise CliError(f"--value {value!r} is not a number") from None
            if not amount.is_finite() or abs(amount) > MAX_VALUE:
                raise CliError(f"--value must be a finite number of at most {MAX_VALUE} in size")
        if currency is not None and CURRENCY.fullmatch(currency) is None:
            raise CliError(f"--currency {currency!r} is not an ISO 4217 code: three upper-case letters, e.g. EUR")
        return cls(name.strip(), pattern, amount, currency, description)


def lookback(days: int) -> int:
    if not 1 <= days <= 365:
        raise CliError(f"--lookback-days {days}: it must be 1 to 365")
    return days


async def show(conn: Any) -> str:
    days = await conn.fetchval("SELECT lookback_days FROM attribution_settings")
    names = [r[0] for r in await conn.fetch("SELECT name FROM conversion_events ORDER BY 1")]
    rules = await conn.fetch("SELECT name, url_pattern, value, currency, description FROM conversion_rules "
                             "ORDER BY name, url_pattern")
    lookbacks = [r[0] for r in await conn.fetch("SELECT days FROM rollup_lookbacks ORDER BY 1")]
    lines = [f"lookback: {days} days (the views; the dashboard's rollups hold {', '.join(map(str, lookbacks))})",
             f"conversion events: {', '.join(names) or '(none)'}",
             "conversion rules (pageviews whose URL is LIKE the pattern):"]
    if rules:
        lines.append(render_table(("name", "url pattern", "value", "currency", "description"),
                                  [tuple("" if v is None else v for v in r) for r in rules]))
    else:
        lines.append("  (none)")
    return "\n".join(lines)


async def set_lookback(conn: Any, days: int) -> None:
    # The table's trigger updates rollup_lookbacks and, when that set changed, rebuilds the rollups in
    # this transaction: the views and the rollups change together.
    await conn.execute("UPDATE attribution_settings SET lookback_days = $1, updated_at = now()", days)


async def add_rule(conn: Any, rule: Rule) -> None:
    await conn.execute(
        "INSERT INTO conversion_rules (name, url_pattern, value, currency, description) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (name, url_pattern) DO UPDATE SET value = excluded.value, currency = excluded.currency, "
        "description = excluded.description", rule.name, rule.url_pattern, rule.value, rule.currency,
        rule.description)


async def remove_rule(conn: Any, name: str, pattern: str) -> bool:
    status = await conn.execute("DELETE FROM conversion_rules WHERE name = $1 AND url_pattern = $2", name, pattern)
    return status != "DELETE 0"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="touchstream attribution", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("show", help="the lookback, conversion event names and conversion rules")
    setter = sub.add_parser("set", help="change the lookback of the attribution views (and the rollups with them)")
    setter.add_argument("--lookback-days", type=int, required=True, help="1-365 days (was 90 before migration 0010)")
    rule = sub.add_parser("rule", help="conversions by URL pattern")
    rules = rule.add_subparsers(dest="action", required=True)
    add = rules.add_parser("add", help="pageviews whose URL is LIKE PATTERN count as conversion NAME")
    add.add_argument("name", metavar="NAME")
    add.add_argument("pattern", metavar="PATTERN", help="SQL LIKE over the URL, e.g. '%%/thank-you%%'")
    add.add_argument("--value", help="the value each such conversion is worth (with --currency)")
    add.add_argument("--currency", help="ISO 4217 code of --value, e.g. EUR")
    add.add_argument("--description")
    remove = rules.add_parser("remove", help="remove the rule (NAME, PATTERN)")
    remove.add_argument("name", metavar="NAME")
    remove.add_argument("pattern", metavar="PATTERN")
    return parser


async def run(settings: PgReadSettings, args: argparse.Namespace) -> str:
    conn = await connect(settings, "touchstream-attribution", dsn=settings.migrate_dsn)
    try:
        if await conn.fetchval("SELECT to_regclass('attribution_settings') IS NULL"):
            raise CliError("the schema has no attribution_settings: run `touchstream migrate` (migration 0010)")
        async with conn.transaction():
            if args.command == "set":
                await set_lookback(conn, lookback(args.lookback_days))
            elif args.command == "rule" and args.action == "add":
                await add_rule(conn, Rule.of(args.name, args.pattern, args.value, args.currency, args.description))
            elif args.command == "rule" and not await remove_rule(conn, args.name, args.pattern):
                raise CliError(f"no rule ({args.name!r}, {args.pattern!r}): see `touchstream attribution show`")
        return await show(conn)
    finally:
        await conn.close()


def main(argv: list[str]) -> int:
    import asyncpg

    args = build_parser().parse_args(argv)
    try:
        print(asyncio.run(run(load_settings(PgReadSettings), args)))
    except CliError as exc:
        error(exc.message)
        return exc.code
    except asyncpg.InsufficientPrivilegeError as exc:
        error(f"{exc} (run it as the schema's owner: TOUCHSTREAM_PG_MIGRATE_DSN)")
        return EXIT_USAGE
    except asyncpg.PostgresError as exc:  # a rule or a setting the database refuses: nothing changed
        error(f"PostgreSQL refused it: {exc}")
        return EXIT_USAGE
    return EXIT_OK
