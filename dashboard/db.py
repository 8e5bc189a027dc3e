"""The dashboard's PostgreSQL pool: read-only, as the analyst role.

Every connection runs `SET ROLE <analyst>` (TOUCHSTREAM_DASHBOARD_SET_ROLE) and has
`default_transaction_read_only` on: the role cannot write (migration 0003 grants it SELECT only),
and read-only transactions refuse writes even for a login that could.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from dashboard.settings import DashboardSettings
from sink.migrations import quote_ident


async def create_pool(settings: DashboardSettings) -> asyncpg.Pool:
    role = settings.pg_analyst_role if settings.dashboard_set_role else None

    async def init(conn: asyncpg.Connection) -> None:
        if role:
            await conn.execute(f"SET ROLE {quote_ident(role)}")

    return await asyncpg.create_pool(
        settings.read_dsn,
        min_size=1,
        max_size=settings.dashboard_pool_size,
        init=init,
        command_timeout=settings.dashboard_statement_timeout_ms / 1000 + 5,
        server_settings={
            "search_path": quote_ident(settings.pg_schema),
            "application_name": "touchstream-dashboard",
            "default_transaction_read_only": "on",
            "statement_timeout": str(settings.dashboard_statement_timeout_ms),
            "timezone": "UTC",
        },
    )


async def fetch(pool: Any, sql: str, *args: Any) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(sql, *args)
