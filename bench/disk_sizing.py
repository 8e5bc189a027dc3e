"""Disk per hit, after a run of the pipeline (e.g. `touchstream demo`) on the local stack.

Kafka: the bytes of each topic's log segments (`*.log` and their indexes) in the stack's data
directory, per record and per accepted hit. PostgreSQL: pg_total_relation_size (heap, TOAST
and indexes; partitioned tables summed over their partitions) per table, per row and per hit.
"Hits" are the rows of pageviews + events + late_hits: what the edge accepted and the sink
placed. Uncompacted: `sessions` holds every snapshot version until the log cleaner runs.

    TOUCHSTREAM_KAFKA_BOOTSTRAP=... TOUCHSTREAM_PG_DSN=... .venv/bin/python bench/disk_sizing.py \
        --data-dir .stack/kafka/data --prefix touchstream. --schema public
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

import asyncpg

TOPICS = ("hits", "sessions", "events", "deadletter")
TABLES = ("sessions", "pageviews", "events", "devices", "late_hits", "deadletter", "session_retractions")


def topic_bytes(data_dir: Path, topic: str) -> tuple[int, int]:
    """(segment bytes, index bytes) of every partition directory of `topic`."""
    logs = indexes = 0
    for part in data_dir.glob(f"{topic}-*"):
        if not part.name[len(topic) + 1:].isdigit():
            continue
        for f in part.iterdir():
            if f.suffix == ".log":
                logs += f.stat().st_size
            elif f.suffix in (".index", ".timeindex"):
                indexes += f.stat().st_blocks * 512  # allocated: the files are sparse, preallocated to 10 MiB
    return logs, indexes


async def table_sizes(dsn: str, schema: str) -> dict[str, tuple[int, int, int]]:
    """table -> (rows, total bytes, index bytes)."""
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        out = {}
        for table in TABLES:
            # The table itself, and its partitions when it has any (a partitioned parent holds no data).
            rels = ("SELECT c.oid FROM pg_class c WHERE c.oid = $1::regclass "
                    "OR c.oid IN (SELECT relid FROM pg_partition_tree($1::regclass))")
            total = await conn.fetchval(f"SELECT sum(pg_total_relation_size(oid))::bigint FROM ({rels}) r", table)
            index = await conn.fetchval(f"SELECT sum(pg_indexes_size(oid))::bigint FROM ({rels}) r", table)
            rows = await conn.fetchval(f"SELECT count(*) FROM {table}")
            out[table] = (rows, total or 0, index or 0)
        return out
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--prefix", default="touchstream.")
    parser.add_argument("--schema", default="public")
    args = parser.parse_args()
    sizes = asyncio.run(table_sizes(os.environ["TOUCHSTREAM_PG_DSN"], args.schema))
    hits = sizes["pageviews"][0] + sizes["events"][0] + sizes["late_hits"][0]
    print(f"hits placed: {hits:,} (pageviews {sizes['pageviews'][0]:,}, events {sizes['events'][0]:,}, "
          f"late {sizes['late_hits'][0]:,}); sessions {sizes['sessions'][0]:,}, devices {sizes['devices'][0]:,}")
    print(f"\n{'kafka topic':<24}{'log bytes':>12}{'index (disk)':>13}{'B/hit (log)':>13}")
    for topic in TOPICS:
        logs, idx = topic_bytes(args.data_dir, args.prefix + topic)
        print(f"{args.prefix + topic:<24}{logs:>12,}{idx:>13,}{logs / max(hits, 1):>13.0f}")
    print(f"\n{'table':<22}{'rows':>9}{'total bytes':>13}{'of which idx':>14}{'B/row':>8}{'B/hit':>8}")
    for table, (rows, total, index) in sizes.items():
        print(f"{table:<22}{rows:>9,}{total:>13,}{index:>14,}{total / max(rows, 1):>8.0f}{total / max(hits, 1):>8.0f}")
    print(f"{'all tables':<22}{'':>9}{sum(t for _, t, _ in sizes.values()):>13,}{'':>14}{'':>8}"
          f"{sum(t for _, t, _ in sizes.values()) / max(hits, 1):>8.0f}")


if __name__ == "__main__":
    main()
