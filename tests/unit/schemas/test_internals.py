"""The adapter over pinned libraries' private internals (schemas.internals): the start-up check,
and each adapter against the real library object it reaches into (no fakes here: these tests
are what tells an upgrade broke one)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from schemas import internals
from schemas.internals import INTERNALS, PINNED, FaustTableStore, Internal, MissingInternals, missing

REPO = Path(__file__).resolve().parents[3]


def test_every_internal_exists_on_the_installed_versions() -> None:
    assert missing(INTERNALS) == []
    internals.require(*PINNED)  # what each component runs at start-up


def test_a_missing_internal_is_named_with_the_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = Internal("aiokafka", "aiokafka.producer.producer:AIOKafkaProducer", "_accumulator_v2", "ingest.publisher")
    monkeypatch.setattr(internals, "INTERNALS", (*INTERNALS, gone))
    with pytest.raises(MissingInternals) as refused:
        internals.require.__wrapped__("aiokafka")  # (uncached)
    message = str(refused.value)
    assert "aiokafka.producer.producer.AIOKafkaProducer._accumulator_v2 (used by ingest.publisher)" in message
    assert "missing in aiokafka 0.14.0, read on 0.14.0" in message
    assert "_sender" not in message, "only what is missing is named"
    assert missing([Internal("faust-streaming", "faust.nowhere:Thing", "x", "-")]) != []


def test_the_pinned_versions_are_pyprojects() -> None:
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = dict(re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", pin).groups() for pin in pins)  # type: ignore[union-attr]
    assert {name: pinned[name] for name in PINNED} == PINNED


async def test_range_acks_keep_faust_s_own_bookkeeping(tmp_path: Path) -> None:
    import faust

    import sessionizer.transport  # noqa: F401 - registers the touchstream:// transport

    app = faust.App("acks", broker="kafka://127.0.0.1:1", broker_consumer="touchstream://127.0.0.1:1",
                    datadir=str(tmp_path), autodiscover=False)
    consumer = app.consumer
    tp = TP("x.hits", 3)
    assert consumer.ack_range(tp, 0, 9) == 10
    assert consumer.ack_range(tp, 5, 12) == 3, "offsets acked before are not counted twice"
    assert consumer.ack_range(tp, 14, 15) == 2
    # What Faust's commit loop will commit: up to the first gap (13 was never acked).
    assert consumer._new_offset(tp) == 13


async def test_the_table_store_reaches_a_partition_s_rocksdb(tmp_path: Path) -> None:
    import faust

    app = faust.App("store", broker="kafka://127.0.0.1:1", store="rocksdb://", datadir=str(tmp_path),
                    autodiscover=False)
    table = app.Table("devices", key_type=bytes, value_type=bytes, partitions=2)
    store = FaustTableStore(table)
    assert store.changelog_topic == "store-devices-changelog"
    db = store.db(1)
    db.put(b"guid", b"state")
    db.put(store.offset_key, b"41")
    assert store.db(1).get(b"guid") == b"state"
    # Faust reads the persisted offset where the adapter says it is.
    assert table.data.persisted_offset(TP(store.changelog_topic, 1)) == 41
    assert store.db(0).get(b"guid") is None


def test_histogram_counts_added_from_outside_show_in_the_exposition() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("t_seconds", "test", buckets=(0.1, 1.0), registry=registry)
    assert internals.histogram_bounds(histogram) == [0.1, 1.0, float("inf")]
    internals.histogram_add(histogram, [2, 0, 1], 7.5)
    text = generate_latest(registry).decode()
    assert 't_seconds_bucket{le="0.1"} 2.0' in text and 't_seconds_bucket{le="+Inf"} 3.0' in text
    assert "t_seconds_sum 7.5" in text and "t_seconds_count 3.0" in text
