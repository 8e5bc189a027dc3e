"""Topic names and their explicit creation (the broker never auto-creates topics).

All topics get one partition count: the sessionizer's Faust table changelog must match
`hits` partition for partition, and the sink's consumer group scales the same way.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from schemas.settings import KafkaSettings


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str

    @property
    def hits(self) -> str:
        return f"{self.prefix}hits"

    @property
    def sessions(self) -> str:
        return f"{self.prefix}sessions"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}deadletter"

    def all(self) -> list[str]:
        return [self.hits, self.sessions, self.events, self.deadletter]


def topic_configs(topics: Topics, hits_retention_ms: int) -> dict[str, dict[str, str]]:
    return {
        topics.hits: {"retention.ms": str(hits_retention_ms)},
        # Only the latest snapshot of a session matters; compaction keeps the topic bounded.
        topics.sessions: {"cleanup.policy": "compact"},
        topics.events: {},
        topics.deadletter: {},
    }


async def create_topics(
    bootstrap: str,
    prefix: str,
    partitions: int = 8,
    replication_factor: int = 1,
    hits_retention_ms: int = 7 * 24 * 3600 * 1000,
) -> None:
    """Create the four topics; existing ones are left as they are (idempotent)."""
    topics = Topics(prefix)
    configs = topic_configs(topics, hits_retention_ms)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(name, num_partitions=partitions, replication_factor=replication_factor, topic_configs=configs[name])
            for name in topics.all()
            if name not in existing
        ]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # another worker created them in the meantime
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [n for n in names if n in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


def main(argv: list[str]) -> int:
    """`touchstream topics`: create the topics named by the settings."""
    settings = KafkaSettings()
    asyncio.run(
        create_topics(
            settings.kafka_bootstrap,
            settings.topic_prefix,
            settings.partitions,
            settings.replication_factor,
            settings.hits_retention_ms,
        )
    )
    names = ", ".join(Topics(settings.topic_prefix).all())
    print(f"topics ready ({settings.partitions} partitions): {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
