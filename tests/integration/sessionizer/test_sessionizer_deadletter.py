"""Bad records on `hits` go to `deadletter` with the reason and the original bytes, and the
worker keeps going (SPEC section 6: bad input never stops a component)."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
from sessionizer_helpers import Worker, edge_records, produce, read_all, wait_for

from schemas.topics import Topics
from schemas.wire import deadletter_codec

GUID = "3b0f6f0e-1d1c-4c53-9a51-6c1b8f0e2a11"


def _hit(n: int) -> dict[str, Any]:
    return {"hit_id": f"00000000-0000-4000-8000-{n:012d}", "guid": GUID, "type": "pageview",
            "url": f"https://www.oakridge-apts.com/p{n}", "created_at": f"2026-03-02T09:{n:02d}:00.000Z"}


async def test_garbage_on_hits_is_dead_lettered_and_the_worker_keeps_going(
    services: Any, topic_prefix: str, tmp_path: Path
) -> None:
    topics = Topics(topic_prefix)
    good = edge_records([_hit(1), _hit(2), _hit(3)])
    valid_value = good[0][1]
    wrong_version = orjson.dumps({**orjson.loads(valid_value), "v": 99})
    missing_fields = orjson.dumps({"v": 1, "kind": "hit", "guid": GUID})
    bad_time = orjson.dumps({**orjson.loads(valid_value), "occurred_at": "yesterday"})
    wrong_key = good[1][1]
    garbage: list[tuple[bytes | None, bytes | None, str]] = [
        (GUID.encode(), b"\xff\xfe not json at all", "not valid JSON"),
        (GUID.encode(), wrong_version, "unsupported schema version"),
        (GUID.encode(), missing_fields, "record does not match the schema"),
        (GUID.encode(), bad_time, "record does not match the schema"),
        (GUID.encode(), b"[1, 2, 3]", "not a JSON object"),
        (b"not-the-guid", wrong_key, "record key does not match its guid"),
        (GUID.encode(), None, "empty record"),
    ]
    # Garbage between good hits of one device: everything after it must still be processed.
    records = [good[0], *[(k, v) for k, v, _ in garbage], good[1], good[2]]

    worker = Worker("w", services.kafka_bootstrap, topic_prefix, f"{topic_prefix}sessionizer", tmp_path).start()
    try:
        await worker.wait_partitions(8)
        await produce(services.kafka_bootstrap, topics.hits, records)

        async def all_out() -> bool:
            assert worker.alive(), worker.log_tail()
            dead = await read_all(services.kafka_bootstrap, topics.deadletter)
            events = await read_all(services.kafka_bootstrap, topics.events)
            return len(dead) >= len(garbage) and len(events) >= 3

        await wait_for(all_out, 60, "dead letters and events")
        dead = await read_all(services.kafka_bootstrap, topics.deadletter)
        events = await read_all(services.kafka_bootstrap, topics.events)
        assert worker.alive()
    finally:
        code = worker.stop()
    assert code == 0

    letters = [deadletter_codec.decode(r.value) for r in dead]
    assert len(letters) == len(garbage)
    by_payload = {base64.b64decode(dl.payload_b64): dl for dl in letters}
    for key, value, reason in garbage:
        dl = by_payload[value or b""]
        assert dl.source == "sessionizer"
        assert dl.reason.startswith(reason), (dl.reason, reason)
        assert dl.topic == topics.hits and dl.partition is not None and dl.offset is not None
        assert dl.key == (key.decode() if key else None)
        assert dl.at <= datetime.now(timezone.utc)
    assert any(e["field"] == "v" for e in by_payload[wrong_version].errors)

    # The good hits after the garbage were placed: one session, three pageviews.
    placed = sorted(orjson.loads(r.value)["hit_id"] for r in events)
    assert placed == sorted(h["hit_id"] for h in (_hit(1), _hit(2), _hit(3)))
    sessions = {orjson.loads(r.value)["session_id"] for r in events}
    assert len(sessions) == 1
