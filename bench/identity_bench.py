"""`person_devices` (migration 0009): a table kept by incremental union vs a recursive view (not a test).

    .venv/bin/python bench/identity_bench.py [--devices 100000] [--identified-pct 30]
                                             [--links-pct 5] [--hub 1000] [--batch 500] [--rounds 3]

Needs PostgreSQL (`touchstream stack up`, or TOUCHSTREAM_PG_DSN). Everything happens in a throw-away
schema, dropped afterwards.

The data: `--devices` GUIDs; `--identified-pct` of them logged in, by user ids of which a third
have two or three devices; `--links-pct` replaced an older GUID (a storage clear: `device_links`);
and one user id shared by `--hub` devices (a test account, or a client sending one id from many
GUIDs: user ids come from clients, so this case is the one to bound).

What is measured, in the same run:

    build, table        every edge written as the sink writes them: `--batch` edges per transaction,
                        their rows COPYed into identities / device_links, then person_link() of them
    new edges, table    a further `--batch` edges (new devices of existing users, some of the hub)
                        on the full table: seconds per call, best of --rounds
    read all, table     SELECT count(*) over person_devices joined to nothing: what a per-person
                        view reads
    read all, view      the same of the recursive view (every component computed on every read)
    read one, view      one device's person through the view (the recursion is not limited by a
                        WHERE outside it)

It also checks that the view and the table give every device the same person.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from schemas.timefmt import UTC  # noqa: E402
from sink.migrations import migrate, quote_ident  # noqa: E402
from sink_bench import services  # noqa: E402

T0 = datetime(2026, 3, 1, tzinfo=UTC)

# Nodes as text: 'g' + guid, 'u' + user id. Every node reaches every node of its component.
VIEW = """
CREATE VIEW person_devices_view AS
WITH RECURSIVE edges(a, b) AS (
    SELECT 'g' || guid, 'u' || user_id FROM identities
    UNION ALL SELECT 'u' || user_id, 'g' || guid FROM identities
    UNION ALL SELECT 'g' || guid, 'g' || previous_guid FROM device_links
    UNION ALL SELECT 'g' || previous_guid, 'g' || guid FROM device_links
), reach(node, other) AS (
    SELECT a, a FROM edges
    UNION
    SELECT e.b, r.other FROM reach r JOIN edges e ON e.a = r.node
)
SELECT substr(node, 2)::uuid AS guid,
       coalesce(min(substr(other, 2)) FILTER (WHERE other LIKE 'u%'),
                min(substr(other, 2)) FILTER (WHERE other LIKE 'g%')) AS person_id,
       bool_or(other LIKE 'u%') AS named
FROM reach WHERE node LIKE 'g%' GROUP BY node
"""


def edges(devices: int, identified_pct: int, links_pct: int, hub: int, seed: int = 7) -> tuple[list, list]:
    """(identities rows, device_links rows) of the synthetic population."""
    rnd = random.Random(seed)
    guids = [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(devices)]
    identities, links = [], []
    n_identified = devices * identified_pct // 100
    user = 0
    i = 0
    while i < n_identified:
        many = 1 if rnd.random() < 2 / 3 else rnd.choice((2, 3))
        for g in guids[i:i + many]:
            identities.append((g, f"user-{user:07d}", T0, T0))
        user += 1
        i += many
    for g in guids[n_identified:n_identified + hub]:
        identities.append((g, "qa-shared", T0, T0))
    start = n_identified + hub
    for g in guids[start:start + devices * links_pct // 100]:
        old = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
        links.append((g, old, T0))
        if rnd.random() < 0.3:  # the new GUID of a logged-in person
            identities.append((old, f"user-{rnd.randrange(user):07d}", T0, T0))
    return identities, links


def calls(identities: list, links: list, batch: int) -> list[list[tuple[str, str | None, str | None]]]:
    """The edges, `batch` a transaction, identities and links interleaved."""
    flat = [(g, u, None) for g, u, *_ in identities] + [(g, None, o) for g, o, _ in links]
    random.Random(3).shuffle(flat)
    return [flat[i:i + batch] for i in range(0, len(flat), batch)]


async def write_edges(conn: asyncpg.Connection, edges: list[tuple[str, str | None, str | None]]) -> None:
    """One sink write of `edges`: their rows, then person_link() of them, in one transaction."""
    async with conn.transaction():
        await conn.copy_records_to_table("identities", records=[(g, u, T0, T0) for g, u, o in edges if u])
        await conn.copy_records_to_table("device_links", records=[(g, o, T0) for g, u, o in edges if o])
        g, u, o = (list(column) for column in zip(*edges, strict=True))
        await conn.fetchval("SELECT person_link($1::uuid[], $2::text[], $3::uuid[])", g, u, o)


async def timed(conn: asyncpg.Connection, sql: str, *args: object) -> tuple[float, object]:
    started = time.perf_counter()
    value = await conn.fetchval(sql, *args)
    return time.perf_counter() - started, value


async def main(args: argparse.Namespace) -> None:
    dsn = services()[0]
    schema = f"identity_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {quote_ident(schema)}")
        await migrate(dsn, schema)
        await conn.execute(f"SET search_path = {quote_ident(schema)}")
        await run(conn, args)
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
        await conn.close()


async def run(conn: asyncpg.Connection, args: argparse.Namespace) -> None:
    identities, links = edges(args.devices, args.identified_pct, args.links_pct, args.hub)
    print(f"{args.devices:,} devices: {len(identities):,} identities ({args.hub:,} of them one shared user id), "
          f"{len(links):,} links; person_link() with {args.batch} edges a call")
    started = time.perf_counter()
    work = calls(identities, links, args.batch)
    for n, batch in enumerate(work):
        await write_edges(conn, batch)
        if n == 20:  # (the planner's statistics of a table that started empty)
            await conn.execute("ANALYZE identities; ANALYZE device_links; ANALYZE person_devices")
    built = time.perf_counter() - started
    edges_n = len(identities) + len(links)
    print(f"build, table        {built:8.2f} s   ({edges_n / built:,.0f} edges/s, {len(work)} calls)")
    await conn.execute("ANALYZE person_devices")
    await conn.execute(VIEW)

    # New edges on the full table: devices joining existing users, a few joining the hub.
    rnd = random.Random(11)
    best = float("inf")
    for _ in range(args.rounds):
        fresh = [(str(uuid.uuid4()), "qa-shared" if n % 50 == 0 else f"user-{rnd.randrange(1000):07d}", None)
                 for n in range(args.batch)]
        started = time.perf_counter()
        await write_edges(conn, fresh)
        best = min(best, time.perf_counter() - started)
    print(f"new edges, table    {best * 1000:8.1f} ms  per write of {args.batch} edges, rows and persons "
          f"(best of {args.rounds})")

    table_s, table_n = min([await timed(conn, "SELECT count(*) FROM person_devices") for _ in range(args.rounds)])
    print(f"read all, table     {table_s * 1000:8.1f} ms  ({table_n:,} devices of known persons)")
    view_s, view_n = min([await timed(conn, "SELECT count(*) FROM person_devices_view") for _ in range(args.rounds)])
    print(f"read all, view      {view_s * 1000:8.1f} ms  ({view_n:,} devices)  {view_s / table_s:,.0f}x the table")
    one = identities[0][0]
    one_s, _ = min([await timed(conn, "SELECT person_id FROM person_devices_view WHERE guid = $1::uuid", one)
                    for _ in range(args.rounds)])
    print(f"read one, view      {one_s * 1000:8.1f} ms")
    differ = await conn.fetchval(
        "SELECT count(*) FROM person_devices_view v FULL JOIN person_devices t USING (guid) "
        "WHERE (v.person_id, v.named) IS DISTINCT FROM (t.person_id, t.named)")
    print(f"view and table agree on every device: {differ == 0} ({differ} differ)")
    if differ:
        raise SystemExit(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--identified-pct", type=int, default=30)
    parser.add_argument("--links-pct", type=int, default=5)
    parser.add_argument("--hub", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
