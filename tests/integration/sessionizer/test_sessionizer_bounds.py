"""Bounded state against a real broker (SPEC rule 13): a flood of client-chosen sites is
dead-lettered with the reason while the worker goes on, and a device idle past the TTL leaves
the table (a changelog tombstone) — its later hits are too late, nothing comes back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from sessionizer_helpers import Worker, edge_records, produce, read_all, wait_for

from schemas.topics import Topics

FLOODER = "7d3c2b1a-0f9e-4d8c-b7a6-958473625140"
NEIGHBOUR = "1a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d"


def _hit(n: int, guid: str, created_at: str, site: str | None = None) -> dict[str, Any]:
    hit = {"hit_id": f"00000000-0000-4000-8000-{n:012d}", "guid": guid, "type": "pageview",
           "url": "https://www.oakridge-apts.com/", "created_at": created_at}
    if site is not None:
        hit["site"] = site
    return hit


async def _records_in(worker: Worker, n: int) -> bool:
    assert worker.alive(), worker.log_tail()
    return worker.stats().get("records_in", 0) >= n


async def test_a_flood_of_sites_is_dead_lettered_and_the_worker_goes_on(services: Any, topic_prefix: str,
                                                                        tmp_path: Path) -> None:
    bootstrap = services.kafka_bootstrap
    topics = Topics(topic_prefix)
    env = {"TOUCHSTREAM_SESSION_SCOPE": "site", "TOUCHSTREAM_SESSION_MAX_SLOTS": "5",
           "TOUCHSTREAM_SESSIONIZER_STANDBY_REPLICAS": "0"}
    flood = [_hit(n, FLOODER, f"2026-03-02T09:{n:02d}:00.000Z", site=f"s{n}.example") for n in range(20)]
    normal = [_hit(100 + n, NEIGHBOUR, f"2026-03-02T09:{n:02d}:30.000Z") for n in range(5)]
    worker = Worker("w", bootstrap, topic_prefix, f"{topic_prefix}sessionizer", tmp_path, **env).start()
    try:
        await worker.wait_partitions(8)
        await produce(bootstrap, topics.hits, edge_records(flood + normal))
        await wait_for(lambda: _records_in(worker, 25), 90, "the 25 hits to be processed")
        stats = worker.stats()
        letters = [orjson.loads(r.value) for r in await read_all(bootstrap, topics.deadletter)]
        events = [orjson.loads(r.value) for r in await read_all(bootstrap, topics.events)]
        assert worker.alive()
    finally:
        worker.stop()
    assert len(letters) == 15 and stats["state_limit_refused"] == 15
    assert all("TOUCHSTREAM_SESSION_MAX_SLOTS" in letter["reason"] for letter in letters), letters[0]
    assert sorted(letter["hit_id"] for letter in letters) == sorted(h["hit_id"] for h in flood[5:])
    # The first five sites' hits and every hit of the device beside it were placed.
    placed = sorted(e["hit_id"] for e in events)
    assert placed == sorted(h["hit_id"] for h in flood[:5] + normal)


async def test_a_device_idle_past_the_ttl_leaves_the_table(services: Any, topic_prefix: str, tmp_path: Path) -> None:
    bootstrap = services.kafka_bootstrap
    topics = Topics(topic_prefix)
    app_id = f"{topic_prefix}sessionizer"
    # Hits of January 2025 (received then): the partition's event time runs on to today once it
    # is caught up (rule 7), which closes and freezes the session and then passes the TTL.
    env = {"TOUCHSTREAM_SESSION_ALLOWED_LATENESS_MS": str(86_400_000), "TOUCHSTREAM_SESSION_IDLE_TTL_DAYS": "30",
           "TOUCHSTREAM_SESSIONIZER_STANDBY_REPLICAS": "0"}
    worker = Worker("w", bootstrap, topic_prefix, app_id, tmp_path, **env).start()
    try:
        await worker.wait_partitions(8)
        await produce(bootstrap, topics.hits, edge_records([_hit(1, FLOODER, "2025-01-06T10:00:00.000Z"),
                                                            _hit(2, FLOODER, "2025-01-06T10:05:00.000Z")]))

        async def removed() -> bool:
            assert worker.alive(), worker.log_tail()
            return worker.stats().get("idle_devices_removed", 0) >= 1

        await wait_for(removed, 90, "the idle device to leave the state")
        changelog = [r for r in await read_all(bootstrap, f"{app_id}-devices-changelog") if r.key == FLOODER.encode()]
        assert changelog and changelog[-1].value is None  # a tombstone: recovery does not bring it back
        assert changelog[0].value is not None
        # A hit of the same day now: too late (its rows stay as they were), not a new device's session 1.
        await produce(bootstrap, topics.hits, edge_records([_hit(3, FLOODER, "2025-01-06T10:20:00.000Z")]))
        await wait_for(lambda: _records_in(worker, 3), 60, "the third hit to be processed")
        events = [orjson.loads(r.value) for r in await read_all(bootstrap, topics.events)]
    finally:
        worker.stop()
    kinds = {e["hit_id"][-1]: (e["kind"], e.get("reason")) for e in events}
    assert kinds["3"] == ("late_hit", "too_late"), kinds
    assert kinds["1"][0] == kinds["2"][0] == "pageview"
