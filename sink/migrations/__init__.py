"""`touchstream migrate`: create or upgrade the PostgreSQL schema (the sink also runs this at start).

    touchstream migrate               apply every pending migration
    touchstream migrate --status      show applied and pending migrations, change nothing
    touchstream migrate --target N    apply up to version N only

Settings: TOUCHSTREAM_PG_MIGRATE_DSN (the schema owner's login; unset: TOUCHSTREAM_PG_DSN), TOUCHSTREAM_PG_SCHEMA (default public), TOUCHSTREAM_PG_WRITER_ROLE,
TOUCHSTREAM_PG_ANALYST_ROLE, TOUCHSTREAM_ATTRIBUTION_LOOKBACK_DAYS (the lookback migration 0010 starts
with). The SQL files beside this module are the migrations; see
`runner.py` for how they are applied and why this is not yoyo-migrations.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncpg

from schemas.logs import without_password

from .runner import (
    MIGRATIONS_DIR,
    Migration,
    MigrationError,
    MigrationReport,
    Roles,
    applied_versions,
    discover,
    migrate,
    quote_ident,
)

__all__ = ["MIGRATIONS_DIR", "Migration", "MigrationError", "MigrationReport", "Roles", "applied_versions",
           "discover", "main", "migrate", "quote_ident"]


async def _status(dsn: str, schema: str) -> str:
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        applied = await applied_versions(conn, schema)
    finally:
        await conn.close()
    lines = [f"schema {schema}:"]
    for m in discover():
        state = "applied" if m.version in applied else "pending"
        if m.version in applied and applied[m.version][1] != m.checksum:
            state = "applied, CHANGED SINCE"
        lines.append(f"  {m.version:04d}_{m.name:<28} {state}")
    for version in sorted(set(applied) - {m.version for m in discover()}):
        lines.append(f"  {version:04d}_{applied[version][0]:<28} applied, unknown to this build")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    from sink.settings import SinkSettings

    parser = argparse.ArgumentParser(prog="touchstream migrate", description="create or upgrade the PostgreSQL schema")
    parser.add_argument("--status", action="store_true", help="list applied and pending migrations; change nothing")
    parser.add_argument("--target", type=int, default=None, help="apply migrations up to this version only")
    parser.add_argument("--dsn", default=None,
                        help="DSN of the schema's owner (default: TOUCHSTREAM_PG_MIGRATE_DSN, else TOUCHSTREAM_PG_DSN)")
    parser.add_argument("--schema", default=None, help="schema (default: TOUCHSTREAM_PG_SCHEMA)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in {"pg_migrate_dsn": args.dsn, "pg_schema": args.schema}.items() if v}
    settings = SinkSettings(**overrides)
    try:
        if args.status:
            print(asyncio.run(_status(settings.migrate_dsn, settings.pg_schema)))
            return 0
        report = asyncio.run(
            migrate(settings.migrate_dsn, settings.pg_schema, Roles(settings.pg_writer_role, settings.pg_analyst_role),
                    target=args.target, lookback_days=settings.attribution_lookback_days)
        )
    except MigrationError as exc:
        print(f"touchstream migrate: {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"touchstream migrate: cannot reach PostgreSQL at {without_password(settings.migrate_dsn)}: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
