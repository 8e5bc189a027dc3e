"""Topic names and their explicit creation (the broker never auto-creates topics).

All topics get one partition count: the sessionizer's Faust table changelog must match
`hits` partition for partition, and the sink's consumer group scales the same way. Every topic
gets a retention (`TopicPolicy`, from the settings) and `min.insync.replicas`, so that a
replicated cluster keeps acknowledged writes when a broker is lost.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from schemas.kafka_security import KafkaConnection
from schemas.settings import DAY_MS, KafkaSettings


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


@dataclass(frozen=True, slots=True)
class TopicPolicy:
    """How the project's topics are made: one partition count, replication, and a retention for
    every topic (SPEC section 4). Defaults are `KafkaSettings`'."""

    partitions: int = 8
    replication_factor: int = 1
    min_insync_replicas: int = 2
    hits_retention_ms: int = 7 * DAY_MS
    sessions_retention_ms: int = 30 * DAY_MS
    events_retention_ms: int = 7 * DAY_MS
    deadletter_retention_ms: int = 14 * DAY_MS

    @classmethod
    def of(cls, settings: KafkaSettings) -> TopicPolicy:
        # Each field is named after the setting it comes from.
        return cls(**{name: getattr(settings, name) for name in cls.__dataclass_fields__})

    def _replicas(self) -> dict[str, str]:
        # A write with acks=all needs this many in-sync replicas; more than there are would
        # refuse every write.
        return {"min.insync.replicas": str(min(self.min_insync_replicas, self.replication_factor))}

    def configs(self, topics: Topics) -> dict[str, dict[str, str]]:
        """Each topic's configuration at creation."""
        return {
            topics.hits: {**self._replicas(), "retention.ms": str(self.hits_retention_ms)},
            # Only the latest snapshot (or retraction) of a session matters: compaction keeps one per
            # session; with a retention, snapshots older than it go too (PostgreSQL keeps the rows).
            topics.sessions: {
                **self._replicas(),
                "cleanup.policy": "compact" if self.sessions_retention_ms < 0 else "compact,delete",
                "retention.ms": str(self.sessions_retention_ms),
            },
            topics.events: {**self._replicas(), "retention.ms": str(self.events_retention_ms)},
            topics.deadletter: {**self._replicas(), "retention.ms": str(self.deadletter_retention_ms)},
        }

    def changelog_config(self) -> dict[str, str]:
        """A table's changelog (the sessionizer's state): compacted and never deleted by time, since
        the latest record of a device is its state, however old."""
        return {**self._replicas(), "cleanup.policy": "compact"}

    def new_topic(self, name: str, config: dict[str, str]) -> NewTopic:
        return NewTopic(name, num_partitions=self.partitions, replication_factor=self.replication_factor,
                        topic_configs=config)


async def create_missing(kafka: str | KafkaConnection, new: list[NewTopic]) -> None:
    """Create the topics of `new` that do not exist yet (idempotent; concurrent callers are fine)."""
    admin = AIOKafkaAdminClient(**KafkaConnection.of(kafka).client_args())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [topic for topic in new if topic.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another worker created them in the meantime
    finally:
        await admin.close()


async def create_topics(
    kafka: str | KafkaConnection,
    prefix: str,
    partitions: int = 8,
    replication_factor: int = 1,
    *,
    policy: TopicPolicy | None = None,
) -> None:
    """Create the four topics; existing ones are left as they are (idempotent). `policy` wins
    over `partitions` and `replication_factor`."""
    policy = policy or TopicPolicy(partitions, replication_factor)
    topics = Topics(prefix)
    configs = policy.configs(topics)
    await create_missing(kafka, [policy.new_topic(name, configs[name]) for name in topics.all()])


async def create_topics_for(settings: KafkaSettings) -> None:
    """The topics `settings` name, made as they say (`touchstream topics`, the sessionizer)."""
    await create_topics(settings.kafka_connection(), settings.topic_prefix, policy=TopicPolicy.of(settings))


async def delete_topics(kafka: str | KafkaConnection, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(**KafkaConnection.of(kafka).client_args())
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
    try:
        asyncio.run(create_topics_for(settings))
    except Exception as exc:  # unreachable, refused credentials...: one line, not a traceback
        print(f"touchstream topics: cannot create the topics at {settings.kafka_bootstrap} "
              f"({settings.kafka_security_protocol}): {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    names = ", ".join(Topics(settings.topic_prefix).all())
    print(f"topics ready ({settings.partitions} partitions): {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
