"""A small versioned-migration runner on asyncpg.

Why not yoyo-migrations (or alembic)? The sink already speaks asyncpg, and a migration tool
would add a second, synchronous driver (psycopg) for about a dozen statements. What the tools
give that matters here is small enough to own:

- `NNNN_name.sql` files applied in order, each in its own transaction, recorded in
  `<schema>.schema_migrations` (version, name, sha256 checksum, when, how long, by whom);
- a session advisory lock per schema, so several sink workers starting at once apply each
  migration exactly once (the others wait, then find nothing to do);
- refusal to run when an applied file was edited (checksum), when the database is newer than
  this build, or when a new file sorts before an applied one;
- the schema is a setting: every file runs with `search_path` set to it and names nothing
  schema-qualified, and `{{placeholders}}` give the few statements that need a name (roles,
  GRANT ... ON SCHEMA) as quoted identifiers. The checksum is over the template, so a different
  schema or role name is not an edit.

yoyo's own state lives in tables of one schema per database URL and it has no placeholder
substitution, which is exactly the part a per-test (and per-deployment) schema needs.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from schemas.errors import TouchstreamError

log = logging.getLogger("touchstream.sink.migrations")

MIGRATIONS_DIR = Path(__file__).resolve().parent
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")


class MigrationError(TouchstreamError):
    """The database's schema history and this build's migration files disagree."""


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    template: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.template.replace("\r\n", "\n").encode("utf-8")).hexdigest()

    def render(self, params: dict[str, str]) -> str:
        def substitute(match: re.Match[str]) -> str:
            key = match.group(1)
            if key not in params:
                raise MigrationError(f"migration {self.version:04d}_{self.name}: unknown placeholder {{{{{key}}}}}")
            return params[key]

        return _PLACEHOLDER.sub(substitute, self.template)


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files of `directory`, in version order (versions must be unique)."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_lower_case_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations with version {version:04d}: {found[version].name}, {match.group(2)}")
        found[version] = Migration(version, match.group(2), path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


@dataclass(frozen=True)
class Roles:
    writer: str = "touchstream_writer"
    analyst: str = "touchstream_analyst"


@dataclass
class MigrationReport:
    schema: str
    applied: list[tuple[int, str, float]] = field(default_factory=list)  # (version, name, seconds)
    current: int = 0  # the version the schema is at afterwards
    pending: list[int] = field(default_factory=list)  # left out by `target`

    def summary(self) -> str:
        if not self.applied:
            return f"schema {self.schema}: up to date at version {self.current:04d}"
        done = ", ".join(f"{v:04d}_{n} ({s * 1000:.0f} ms)" for v, n, s in self.applied)
        return f"schema {self.schema}: applied {done}; now at version {self.current:04d}"


DEFAULT_LOOKBACK_DAYS = 90  # attribution's lookback before it was configurable (0002)


def _params(schema: str, roles: Roles, lookback_days: int = DEFAULT_LOOKBACK_DAYS) -> dict[str, str]:
    if not 1 <= lookback_days <= 365:  # (an int, spliced as a literal: checked, never quoted)
        raise MigrationError(f"attribution lookback of {lookback_days} days: it must be 1 to 365")
    return {
        "schema": quote_ident(schema),
        "schema_name": quote_literal(schema),
        "writer_role": quote_ident(roles.writer),
        "writer_role_name": quote_literal(roles.writer),
        "analyst_role": quote_ident(roles.analyst),
        "analyst_role_name": quote_literal(roles.analyst),
        # 0010's initial attribution lookback (TOUCHSTREAM_ATTRIBUTION_LOOKBACK_DAYS); later changes are data
        "attribution_lookback_days": str(int(lookback_days)),
    }


def _lock_key(schema: str) -> str:
    return f"touchstream.migrate.{schema}"


async def applied_versions(conn: asyncpg.Connection, schema: str) -> dict[int, tuple[str, str]]:
    """{version: (name, checksum)} recorded in the schema, {} if it has no history table yet."""
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{quote_ident(schema)}.schema_migrations")
    if not exists:
        return {}
    rows = await conn.fetch(f"SELECT version, name, checksum FROM {quote_ident(schema)}.schema_migrations")
    return {r["version"]: (r["name"], r["checksum"]) for r in rows}


def plan(migrations: Sequence[Migration], applied: dict[int, tuple[str, str]], target: int | None) -> list[Migration]:
    """What to apply, after checking the recorded history against the files."""
    known = {m.version: m for m in migrations}
    for version, (name, checksum) in sorted(applied.items()):
        migration = known.get(version)
        if migration is None:
            raise MigrationError(
                f"the database has migration {version:04d}_{name}, which this build does not know: "
                "it was migrated by a newer Touchstream; upgrade this one"
            )
        if migration.checksum != checksum:
            raise MigrationError(
                f"migration {version:04d}_{migration.name} was changed after it was applied "
                f"(checksum {checksum[:12]}… recorded, {migration.checksum[:12]}… on disk): "
                "add a new migration instead of editing an applied one"
            )
    newest = max(applied, default=0)
    pending = [m for m in migrations if m.version not in applied and (target is None or m.version <= target)]
    early = [m for m in pending if m.version < newest]
    if early:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in early)
        raise MigrationError(f"migration(s) {names} sort before the applied {newest:04d}: renumber them")
    return pending


async def migrate(
    dsn_or_conn: str | asyncpg.Connection,
    schema: str = "public",
    roles: Roles | None = None,
    *,
    target: int | None = None,
    migrations: Sequence[Migration] | None = None,
    lock_timeout_s: float = 300.0,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
) -> MigrationReport:
    """Bring `schema` up to `target` (default: the newest file). Idempotent; safe to run concurrently.
    `lookback_days`: attribution's lookback where migration 0010 creates it (an applied 0010 keeps
    whatever `touchstream attribution set` made of it)."""
    migrations = list(migrations) if migrations is not None else discover()
    own = isinstance(dsn_or_conn, str)
    conn: asyncpg.Connection = (
        await asyncpg.connect(dsn_or_conn, timeout=30) if own else dsn_or_conn  # type: ignore[arg-type]
    )
    try:
        await conn.execute(
            "SELECT pg_advisory_lock(hashtextextended($1, 0))", _lock_key(schema), timeout=lock_timeout_s
        )
        try:
            return await _migrate_locked(conn, schema, _params(schema, roles or Roles(), lookback_days), migrations, target)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", _lock_key(schema))
    finally:
        if own:
            await conn.close()


async def _migrate_locked(
    conn: asyncpg.Connection, schema: str, params: dict[str, str], migrations: list[Migration], target: int | None
) -> MigrationReport:
    """`migrate` once this connection holds the schema's advisory lock."""
    q = quote_ident(schema)
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {q}")
    await conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {q}.schema_migrations (
                version     integer PRIMARY KEY,
                name        text NOT NULL,
                checksum    text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now(),
                duration_ms integer NOT NULL,
                applied_by  text NOT NULL DEFAULT current_user
            )"""
    )
    applied = await applied_versions(conn, schema)
    pending = plan(migrations, applied, target)
    report = MigrationReport(schema=schema)
    for migration in pending:
        spent = await _apply(conn, q, migration, params)
        report.applied.append((migration.version, migration.name, spent))
        log.info("migration applied", extra={"schema": schema, "version": migration.version,
                                             "migration": migration.name, "ms": round(spent * 1000)})
    versions = set(applied) | {m.version for m in pending}
    report.current = max(versions, default=0)
    report.pending = [m.version for m in migrations if m.version not in versions]
    return report


async def _apply(conn: asyncpg.Connection, q: str, migration: Migration, params: dict[str, str]) -> float:
    """One migration and its history row, in one transaction; returns the seconds it took."""
    started = time.monotonic()
    sql = migration.render(params)
    async with conn.transaction():
        await conn.execute(f"SET LOCAL search_path TO {q}")
        try:
            await conn.execute(sql)
        except asyncpg.PostgresError as exc:
            raise MigrationError(
                f"migration {migration.version:04d}_{migration.name} failed: {type(exc).__name__}: {exc}"
            ) from exc
        spent = time.monotonic() - started
        await conn.execute(
            f"INSERT INTO {q}.schema_migrations (version, name, checksum, duration_ms) VALUES ($1, $2, $3, $4)",
            migration.version, migration.name, migration.checksum, int(spent * 1000),
        )
    return spent
