"""Every topic the project creates has a retention and min.insync.replicas (SPEC section 4)."""

from __future__ import annotations

from schemas.settings import KafkaSettings
from schemas.topics import TopicPolicy, Topics

DAY_MS = 24 * 3600 * 1000


def test_every_topic_has_a_retention_with_the_documented_defaults() -> None:
    topics = Topics("p.")
    configs = TopicPolicy.of(KafkaSettings()).configs(topics)
    assert set(configs) == set(topics.all())
    retention = {name: int(config["retention.ms"]) for name, config in configs.items()}
    assert retention == {topics.hits: 7 * DAY_MS, topics.sessions: 30 * DAY_MS, topics.events: 7 * DAY_MS,
                         topics.deadletter: 14 * DAY_MS}
    assert configs[topics.sessions]["cleanup.policy"] == "compact,delete"
    assert "cleanup.policy" not in configs[topics.hits]


def test_retention_settings_reach_the_topics() -> None:
    topics = Topics("p.")
    settings = KafkaSettings(hits_retention_ms=1000, sessions_retention_ms=-1, events_retention_ms=2000,
                             deadletter_retention_ms=3000)
    configs = TopicPolicy.of(settings).configs(topics)
    assert [configs[t]["retention.ms"] for t in topics.all()] == ["1000", "-1", "2000", "3000"]
    # -1: compaction alone keeps the latest snapshot of every session forever.
    assert configs[topics.sessions]["cleanup.policy"] == "compact"


def test_min_insync_replicas_is_capped_at_the_replication_factor() -> None:
    topics = Topics("p.")
    single = TopicPolicy(replication_factor=1).configs(topics)
    cluster = TopicPolicy.of(KafkaSettings(replication_factor=3)).configs(topics)
    assert {c["min.insync.replicas"] for c in single.values()} == {"1"}
    assert {c["min.insync.replicas"] for c in cluster.values()} == {"2"}
    changelog = TopicPolicy(replication_factor=3).changelog_config()
    assert changelog == {"min.insync.replicas": "2", "cleanup.policy": "compact"}  # the state: no time retention
    topic = TopicPolicy(partitions=4, replication_factor=3).new_topic("x", changelog)
    assert (topic.num_partitions, topic.replication_factor) == (4, 3)
