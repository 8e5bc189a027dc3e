"""The session ids of one device as the `sessions` topic knows them (for `touchstream forget`).

PostgreSQL only holds the sessions the sink has written: a session the sessionizer published
but the sink has not reached yet (a lagging or stopped sink), or one whose row was refused, is
on the compacted `sessions` topic only. Forget must tombstone those too, or compaction keeps
the device's snapshot (and a later sink run writes it back). The topic is keyed by session id,
so every partition is read from its start to the end it had when the read began; a record is
decoded only when its bytes contain the guid (snapshots and retractions name it, canonical).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from schemas.wire import session_codec

POLL_MS = 500


async def session_ids_on_topic(client_args: dict[str, Any], topic: str, partitions: list[int], guid: str,
                               timeout_s: float) -> dict[str, set[int]]:
    """Every session id whose snapshot or retraction on `topic` (its `partitions`, from the
    caller's metadata) names `guid` (canonical form), with the partitions holding them: the
    sessionizer writes a device's records to its `hits` partition, not murmur2(session id), and
    a tombstone compacts only a record of its own partition. Raises TimeoutError when the topic
    cannot be read to its end within `timeout_s`."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    # (`client_args`: the bootstrap and the connection's security, schemas.kafka_security)
    consumer = AIOKafkaConsumer(**client_args, enable_auto_commit=False, group_id=None,
                                client_id="touchstream-forget", request_timeout_ms=int(timeout_s * 1000))
    deadline = time.monotonic() + timeout_s
    try:
        await asyncio.wait_for(consumer.start(), timeout_s)
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        ends = await asyncio.wait_for(consumer.end_offsets(tps), timeout_s)
        pending = {tp for tp in tps if ends[tp] > 0}
        if not pending:
            return {}
        for tp in pending:  # (explicit offsets: a reset to the beginning is lazy and was seen to end early)
            consumer.seek(tp, 0)
        return await _scan(consumer, pending, ends, guid, deadline)
    finally:
        await consumer.stop()


async def _scan(consumer: Any, pending: set[Any], ends: dict[Any, int], guid: str,
                deadline: float) -> dict[str, set[int]]:
    """Read `pending` partitions up to `ends`, collecting the ids of the device's session records."""
    needle = guid.encode()
    found: dict[str, set[int]] = {}
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the sessions topic was not read to its end ({len(pending)} partitions left)")
        batches = await consumer.getmany(*pending, timeout_ms=POLL_MS)
        for tp, records in batches.items():
            for record in records:
                if record.offset < ends[tp] and record.value is not None and needle in record.value:
                    for sid in _session_id(record.value, guid):
                        found.setdefault(sid, set()).add(tp.partition)
                if record.offset >= ends[tp] - 1:  # read to the end as it was when the scan began
                    pending.discard(tp)
    return found


def _session_id(value: bytes, guid: str) -> list[str]:
    try:
        record = session_codec.decode(value)
    except Exception:  # not a session record (the sink dead-letters those): nothing of the device
        return []
    return [record.session_id] if record.guid == guid else []
