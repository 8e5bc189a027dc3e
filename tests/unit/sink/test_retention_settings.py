"""The retention of `session_retractions` (sink.settings): on by default, never shorter than what
it guards against, and off when `sessions` is compaction only. No services."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.settings import DAY_MS
from sink.retention import RowRetention
from sink.settings import SinkSettings


def settings(**values: object) -> SinkSettings:
    base: dict[str, object] = {"sessions_retention_ms": 30 * DAY_MS, "hits_retention_ms": 7 * DAY_MS}
    return SinkSettings(**{**base, **values})


def test_retractions_expire_after_60_days_by_default_beside_the_other_tables():
    s = settings()
    assert s.sink_retractions_retention_days == 60
    assert RowRetention.from_settings(s).days["session_retractions"] == 60


def test_off_keeps_every_retraction():
    s = settings(sink_retractions_retention_days="off")
    assert s.sink_retractions_retention_days is None
    assert "session_retractions" not in RowRetention.from_settings(s).days


@pytest.mark.parametrize("topic", ["sessions_retention_ms", "hits_retention_ms"])
def test_a_retention_within_a_topic_replay_window_is_refused_naming_the_field(topic):
    with pytest.raises(ValidationError, match="sink_retractions_retention_days"):
        settings(sink_retractions_retention_days=40, **{topic: 40 * DAY_MS})
    assert settings(sink_retractions_retention_days=41, **{topic: 40 * DAY_MS}).sink_retractions_retention_days == 41


def test_compaction_only_sessions_turn_the_default_off_and_refuse_an_explicit_value():
    assert settings(sessions_retention_ms=-1).sink_retractions_retention_days is None
    with pytest.raises(ValidationError, match="sessions_retention_ms is -1"):
        settings(sessions_retention_ms=-1, sink_retractions_retention_days=90)
