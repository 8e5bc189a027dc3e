"""Fixtures for the sink's integration tests (real PostgreSQL, and Kafka where a test asks for it).

`migrated` and `db` come from tests/conftest.py. Helpers (no fixtures) are in sink_helpers.py, imported by module name: this folder has no
__init__.py, so pytest puts it on sys.path.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from sink.batch import TopicRoles
from sink.settings import SinkSettings
from sink.writer import Writer


@pytest_asyncio.fixture
async def writer(migrated: Any) -> AsyncIterator[Writer]:
    w = Writer(migrated.dsn, migrated.schema, role="touchstream_writer")
    yield w
    await w.close()


@pytest.fixture
def roles(topic_prefix: str) -> TopicRoles:
    return TopicRoles.from_prefix(topic_prefix)


@pytest.fixture
def sink_settings(services: Any, topic_prefix: str, migrated: Any) -> SinkSettings:
    return SinkSettings(
        kafka_bootstrap=services.kafka_bootstrap,
        topic_prefix=topic_prefix,
        pg_dsn=migrated.dsn,
        pg_schema=migrated.schema,
        sink_group=f"sink-{uuid.uuid4().hex[:8]}",
        sink_metrics_port=0,
        sink_poll_timeout_ms=100,
        sink_max_records=500,
        sink_retry_initial_s=0.1,
        sink_retry_max_s=1.0,
        sink_session_timeout_ms=6000,
        # The records here are dated around sink.testing.T0 (March 2026), whatever today is: no
        # day window, and no retention deleting their late hits or retractions (tests of both set their own).
        sink_max_row_age_days=36500,
        sink_late_hits_retention_days=None,
        sink_deadletter_retention_days=None,
        sink_retractions_retention_days=None,
    )

