"""What the analyst-facing subcommands (`import`, `report`, `journey`, `forget`) share: settings
for reaching PostgreSQL, guid parsing, plain-text tables, and errors that become exit codes.

Exit codes used by those commands: 0 done, 1 the command ran but the answer is "no"/"not all"
(unknown device, refused hits), 2 the invocation is wrong (bad argument, bad setting), 3 a
service (PostgreSQL, Kafka, the edge) could not be reached or refused the work.
"""

from __future__ import annotations

import math
import sys
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import SettingsConfigDict

from schemas.logs import without_password
from schemas.settings import ENV_PREFIX, PostgresSettings
from schemas.timefmt import UTC

EXIT_OK = 0
EXIT_NO = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

EXAMPLE_GUID = "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01"


class CliError(Exception):
    """A problem to print as one clear message (no traceback), with the exit code it means."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PgReadSettings(PostgresSettings):
    """PostgreSQL settings of the analyst commands (`TOUCHSTREAM_PG_DSN`, `TOUCHSTREAM_PG_SCHEMA`, ...)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    pg_connect_timeout_s: float = Field(10.0, gt=0, description="PostgreSQL connect timeout of the CLI commands")
    pg_command_timeout_s: float = Field(300.0, gt=0, description="longest a CLI query may run")

    @field_validator("pg_schema")
    @classmethod
    def _plain_schema(cls, value: str) -> str:
        if not value or len(value) > 63 or not (value[0].isalpha() or value[0] == "_") or not all(
                c.isalnum() or c in "_$" for c in value):
            raise ValueError(f"{value!r} is not a plain SQL identifier (letters, digits, _ and $; at most 63)")
        return value


def load_settings(cls: type[Any], **overrides: Any) -> Any:
    """Settings from `TOUCHSTREAM_*` (once, in main); a bad value becomes a CliError naming the variable."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            name = ENV_PREFIX + "_".join(str(p) for p in err["loc"]).upper()
            problems.append(f"{name}: {err['msg']}")
        raise CliError("bad setting: " + "; ".join(problems), EXIT_USAGE) from None


async def connect(settings: PgReadSettings, application_name: str = "touchstream-cli") -> Any:
    """An asyncpg connection whose search_path is the Touchstream schema (names need no schema).

    Raises CliError(EXIT_UNAVAILABLE) with the DSN (password hidden) when PostgreSQL cannot be
    reached, and CliError(EXIT_USAGE) when the schema holds no Touchstream tables."""
    import asyncpg

    try:
        conn = await asyncpg.connect(
            settings.pg_dsn,
            timeout=settings.pg_connect_timeout_s,
            command_timeout=settings.pg_command_timeout_s,
            server_settings={"search_path": quote_ident(settings.pg_schema), "application_name": application_name},
        )
    except Exception as exc:
        raise CliError(
            f"cannot connect to PostgreSQL at {without_password(settings.pg_dsn)}: {type(exc).__name__}: {exc}\n"
            "(set TOUCHSTREAM_PG_DSN; `touchstream stack up` starts a local one)",
            EXIT_UNAVAILABLE,
        ) from None
    try:
        found = await conn.fetchval("SELECT to_regclass(format('%I.sessions', $1::text)) IS NOT NULL",
                                    settings.pg_schema)
    except Exception:
        await conn.close()
        raise
    if not found:
        await conn.close()
        raise CliError(
            f"schema {settings.pg_schema!r} has no Touchstream tables (no `sessions` table): run "
            "`touchstream migrate`, or set TOUCHSTREAM_PG_SCHEMA to the schema the sink writes",
            EXIT_USAGE,
        )
    return conn


def parse_guid(text: str) -> str:
    """A device guid in canonical lower-case form, or CliError(EXIT_USAGE) saying what is wrong."""
    value = text.strip()
    if not value:
        raise CliError(f"the guid is empty: give the device's guid, a UUID such as {EXAMPLE_GUID}")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        pass
    shown = value if len(value) <= 64 else value[:61] + "..."
    bad = sorted({c for c in value if c not in _UUID_CHARS})
    if bad:
        why = "it holds characters a UUID cannot: " + " ".join(repr(c) for c in bad[:8])
    else:
        digits = sum(c in _HEX for c in value)
        why = f"a UUID has 32 hex digits, this has {digits}" if digits != 32 else "its hyphens or braces are misplaced"
    raise CliError(f"{shown!r} is not a valid guid: {why} (expected e.g. {EXAMPLE_GUID})")


_HEX = frozenset("0123456789abcdefABCDEF")
_UUID_CHARS = _HEX | frozenset("-{}")


# --- formatting ----------------------------------------------------------------------------


def fmt_time(value: datetime | None) -> str:
    """UTC, to the second ("-" for none)."""
    if value is None:
        return "-"
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    total = int(round(seconds))
    if total < 60:
        return f"{total}s"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Sequence[int] | None = None,
                 rule_before_last: bool = False, indent: str = "") -> str:
    """A plain-text table with a rule under the header (and before the last row, e.g. totals,
    with rule_before_last). Columns listed in `right` are right-aligned; by default those whose
    values are all numbers (or empty)."""
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    if right is None:
        right = [i for i in range(len(headers))
                 if rows and all(_is_number(row[i]) or row[i] in (None, "", "-") for row in rows)
                 and any(_is_number(row[i]) for row in rows)]
    right_set = set(right)
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(widths[i]) if i in right_set else v.ljust(widths[i]) for i, v in enumerate(values)]
        return (indent + "  ".join(parts)).rstrip()

    rule = indent + "  ".join("-" * w for w in widths)
    out = [line(headers), rule]
    for n, row in enumerate(cells):
        if rule_before_last and n == len(cells) - 1 and n > 0:
            out.append(rule)
        out.append(line(row))
    return "\n".join(out)


def error(message: str) -> None:
    print(f"touchstream: {message}", file=sys.stderr)

