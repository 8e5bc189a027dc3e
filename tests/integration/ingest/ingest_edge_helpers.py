"""Helpers of the edge's integration tests: an edge app in process (topics are read back with `tests.topic_reader`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from typing import Any

import httpx

from ingest.app import IngestApp, create_app
from ingest.settings import IngestSettings

NOW = datetime(2026, 3, 2, 9, 0, 5, 250000, tzinfo=timezone.utc)
PEER = ("198.51.100.23", 50123)


ADMIN_PORT = 9464
ADMIN = f"http://edge:{ADMIN_PORT}"  # running_edge's app on its admin listener (/metrics)


@contextlib.asynccontextmanager
async def running_edge(
    bootstrap: str, prefix: str, *, clock: Callable[[], datetime] = lambda: NOW, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, IngestApp]]:
    """The real app (real KafkaPublisher) in this process, behind an httpx client."""
    overrides.setdefault("ingest_admin_port", ADMIN_PORT)
    settings = IngestSettings(kafka_bootstrap=bootstrap, topic_prefix=prefix, **overrides)
    app = create_app(settings, clock=clock)
    await app.startup()
    try:
        transport = httpx.ASGITransport(app=app, client=PEER)
        async with httpx.AsyncClient(transport=transport, base_url="http://edge", timeout=60) as client:
            yield client, app
    finally:
        await app.shutdown()
