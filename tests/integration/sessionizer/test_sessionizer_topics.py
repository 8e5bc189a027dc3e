"""The sessionizer's topic check at start (`sessionizer.app.ensure_topics`) against a real broker:
it creates the changelog beside the four topics with their policy, waits for every one of them
to be described, and refuses topics whose partition counts differ."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from sessionizer.app import PartitionsMismatch, changelog_topic, ensure_topics
from sessionizer.settings import SessionizerSettings
from tests.conftest import delete_topics_with_prefix


def _settings(services: Any, prefix: str) -> SessionizerSettings:
    return SessionizerSettings(kafka_bootstrap=services.kafka_bootstrap, topic_prefix=prefix, partitions=4,
                               sessionizer_app_id=f"{prefix}sessionizer", sessionizer_topics_wait_s=30)


async def test_creates_the_changelog_and_sees_every_topic(services: Any) -> None:
    prefix = f"e{uuid.uuid4().hex[:8]}."
    settings = _settings(services, prefix)
    try:
        counts = await ensure_topics(settings)
        assert counts == {f"{prefix}{t}": 4 for t in ("hits", "sessions", "events", "deadletter")} | {
            changelog_topic(settings): 4}
    finally:
        await delete_topics_with_prefix(services.kafka_bootstrap, prefix)


async def test_refuses_topics_whose_partition_counts_differ(services: Any) -> None:
    prefix = f"e{uuid.uuid4().hex[:8]}."
    admin = AIOKafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(f"{prefix}events", 2, 1)])  # made by hand, before the sessionizer
    finally:
        await admin.close()
    try:
        with pytest.raises(PartitionsMismatch, match=rf"partition count of {prefix}hits \(4\).*'{prefix}events': 2"):
            await ensure_topics(_settings(services, prefix))
    finally:
        await delete_topics_with_prefix(services.kafka_bootstrap, prefix)
