"""Helpers of the edge's integration tests: an edge app in process, and reading topics back."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from ingest.app import IngestApp, create_app
from ingest.settings import IngestSettings

NOW = datetime(2026, 3, 2, 9, 0, 5, 250000, tzinfo=timezone.utc)
PEER = ("198.51.100.23", 50123)


@contextlib.asynccontextmanager
async def running_edge(
    bootstrap: str, prefix: str, *, clock: Callable[[], datetime] = lambda: NOW, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, IngestApp]]:
    """The real app (real KafkaPublisher) in this process, behind an httpx client."""
    settings = IngestSettings(kafka_bootstrap=bootstrap, topic_prefix=prefix, **overrides)
    app = create_app(settings, clock=clock)
    await app.startup()
    try:
        transport = httpx.ASGITransport(app=app, client=PEER)
        async with httpx.AsyncClient(transport=transport, base_url="http://edge", timeout=60) as client:
            yield client, app
    finally:
        await app.shutdown()


async def consume(
    bootstrap: str, topic: str, expected: int, timeout: float = 30.0, settle: float = 0.5
) -> list[ConsumerRecord]:
    """Every record of `topic` from the beginning: at least `expected` of them (waiting up to
    `timeout`), then whatever else arrives within `settle` seconds (to catch extras)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or [])
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - a topic made after start
            partitions = sorted(consumer.partitions_for_topic(topic) or [])
        assert partitions, f"no partitions known for {topic}"
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=300, max_records=10_000)).values():
                records.extend(batch)
        quiet_until = time.monotonic() + settle
        while time.monotonic() < quiet_until:
            for batch in (await consumer.getmany(timeout_ms=100, max_records=10_000)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()
