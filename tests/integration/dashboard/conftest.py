"""Fixtures of the dashboard's integration tests: a migrated schema filled through the sink's
writer, the dashboard's own read-only pool on it, and an HTTP client of the app (in process)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio

from dashboard.app import create_app
from dashboard.db import create_pool
from tests.dashboard_data import dashboard_settings, fill


@pytest_asyncio.fixture
async def filled(migrated: Any) -> Any:
    """The schema with the hand-built journeys and a seeded crowd (two weeks from sink.testing.T0)."""
    return await fill(migrated)


@pytest_asyncio.fixture
async def pool(filled: Any) -> AsyncIterator[Any]:
    p = await create_pool(dashboard_settings(filled))
    yield p
    await p.close()


@pytest_asyncio.fixture
async def client(filled: Any, pool: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(dashboard_settings(filled), pool=pool)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dashboard") as c:
        yield c
