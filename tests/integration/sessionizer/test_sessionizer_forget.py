"""A forget record on `hits` (`touchstream forget GUID`) deletes the device's table state: its
next hit starts afresh at session 1, nothing is emitted for the record itself, and the deletion
survives a restart on an empty data dir (it is a changelog tombstone)."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
from sessionizer_helpers import Worker, edge_records, latest_sessions, produce, read_all, wait_for

from schemas.hit import ForgetRecord
from schemas.topics import Topics
from schemas.wire import encode

GUID = "5e2d7c1a-9b8f-4e6d-a3c2-1f0e9d8c7b6a"


def _hit(n: int, minute: int) -> dict[str, Any]:
    return {"hit_id": f"00000000-0000-4000-8000-{n:012d}", "guid": GUID, "type": "pageview",
            "url": "https://www.oakridge-apts.com/", "created_at": f"2026-03-02T09:{minute:02d}:00.000Z"}


async def test_forget_record_deletes_the_device_state(services: Any, topic_prefix: str, tmp_path: Path) -> None:
    bootstrap = services.kafka_bootstrap
    topics = Topics(topic_prefix)
    app_id = f"{topic_prefix}sessionizer"
    env = {"TOUCHSTREAM_SESSIONIZER_STANDBY_REPLICAS": "0"}
    forget = encode(ForgetRecord(guid=GUID, requested_at=datetime(2026, 3, 3, tzinfo=timezone.utc)))

    worker = Worker("w", bootstrap, topic_prefix, app_id, tmp_path, **env).start()
    try:
        await worker.wait_partitions(8)
        await produce(bootstrap, topics.hits, edge_records([_hit(1, 0), _hit(2, 5)]))

        async def sessions(n: int) -> bool:
            latest = await latest_sessions(bootstrap, topics)
            return len(latest) >= n and all(s["status"] == "closed" for s in latest.values())

        await wait_for(lambda: sessions(1), 60, "the first session to close")
        await produce(bootstrap, topics.hits, [(GUID.encode(), forget)])
        await wait_for(lambda: _records_in(worker, 3), 60, "the forget record to be processed")
        worker.stop()
    finally:
        if worker.alive():
            worker.kill9()

    # The deletion is in the changelog: a worker on an empty data dir does not bring it back.
    shutil.rmtree(worker.data_dir)
    again = Worker("again", bootstrap, topic_prefix, app_id, tmp_path, **env)
    again.data_dir = worker.data_dir
    again.env["TOUCHSTREAM_SESSIONIZER_DATA_DIR"] = str(worker.data_dir)
    again.start()
    try:
        await again.wait_partitions(8, timeout=120)
        # A hit an hour later: without the forget it would be session 2 of the device.
        await produce(bootstrap, topics.hits, edge_records([_hit(3, 59)]))
        await wait_for(lambda: sessions(2), 60, "the second session to close")
        latest = await latest_sessions(bootstrap, topics)
        events = await read_all(bootstrap, topics.events)
    finally:
        again.stop()

    by_index = sorted((s["session_index"], s["pageviews"], s["started_at"]) for s in latest.values())
    assert by_index == [(1, 1, "2026-03-02T09:59:00Z"), (1, 2, "2026-03-02T09:00:00Z")]
    # Nothing was emitted for the forget record itself: three hits, three event records.
    assert sorted(orjson.loads(r.value)["hit_id"] for r in events) == [_hit(n, 0)["hit_id"] for n in (1, 2, 3)]


async def _records_in(worker: Worker, n: int) -> bool:
    assert worker.alive(), worker.log_tail()
    return worker.stats().get("records_in", 0) >= n
