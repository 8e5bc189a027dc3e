"""Every stage's partitioning must be the one every Kafka client uses for a key."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from schemas.partitioning import Partitioner, murmur2


@given(st.binary(max_size=80))
def test_murmur2_is_aiokafkas(data: bytes) -> None:
    assert murmur2(data) == aiokafka_murmur2(data) & 0xFFFFFFFF


def test_murmur2_known_java_values() -> None:
    # Values of org.apache.kafka.common.utils.Utils.murmur2, from the Java client's own tests.
    assert murmur2(b"21") == (-973932308) & 0xFFFFFFFF
    assert murmur2(b"foobar") == (-790332482) & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-long-string") == (-985981536) & 0xFFFFFFFF
    assert murmur2(b"") == 275646681


@given(st.uuids().map(lambda u: str(u).encode()), st.integers(1, 64))
def test_partition_is_the_default_partitioners(key: bytes, count: int) -> None:
    partitions = list(range(count))
    assert Partitioner(count)(key) == DefaultPartitioner()(key, partitions, partitions)


def test_partitions_of_known_keys_match_the_java_client() -> None:
    # Values computed with the Java client's partitioner (kafka-python's compatibility test).
    known = {b"": 681, b"a": 524, b"ab": 434, b"abc": 107, b"123456789": 566, b"\x00 ": 742}
    partition_of = Partitioner(1000)
    assert {key: partition_of(key) for key in known} == known


def test_the_memo_is_bounded_and_answers_the_same_after_clearing() -> None:
    partition_of = Partitioner(8, cache_size=10)
    keys = [f"6f1c2b0e-4a57-4c3e-9d61-{i:012d}".encode() for i in range(200)]
    first = [partition_of(k) for k in keys]
    assert len(partition_of._cache) <= 10
    assert [partition_of(k) for k in keys] == first
    assert first == [DefaultPartitioner()(k, list(range(8)), list(range(8))) for k in keys]


def test_a_topic_without_partitions_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one partition"):
        Partitioner(0)
