"""A PostgreSQL connection of the sink: opened as its role, closed without waiting on a dead peer.
The writer's connection and the rollup drainer's each come from here."""

from __future__ import annotations

import asyncpg

from sink.migrations import quote_ident


async def open_connection(dsn: str, *, role: str | None, connect_timeout: float, command_timeout: float,
                          application_name: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn, timeout=connect_timeout, command_timeout=command_timeout,
                                 server_settings={"application_name": application_name})
    if role:
        try:
            await conn.execute(f"SET ROLE {quote_ident(role)}")
        except BaseException:
            await close_quietly(conn)
            raise
    return conn


async def close_quietly(conn: asyncpg.Connection | None) -> None:
    """Close `conn` (None or closed: nothing); a peer that does not answer within 2 s is cut off."""
    if conn is not None and not conn.is_closed():
        try:
            await conn.close(timeout=2)
        except Exception:
            conn.terminate()
