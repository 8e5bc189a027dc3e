"""The sessionizer's partitioning must be the one every Kafka client uses for a key."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner, murmur2 as aiokafka_murmur2

from sessionizer.output import Partitioner, murmur2


def test_murmur2_matches_aiokafka_for_all_lengths() -> None:
    rng = random.Random(5)
    for length in range(0, 80):
        for _ in range(20):
            data = bytes(rng.getrandbits(8) for _ in range(length))
            assert murmur2(data) & 0x7FFFFFFF == aiokafka_murmur2(data) & 0x7FFFFFFF, data


def test_known_java_values() -> None:
    # Values of org.apache.kafka.common.utils.Utils.murmur2, from the Java client's own tests.
    assert murmur2(b"21") & 0xFFFFFFFF == (-973932308) & 0xFFFFFFFF
    assert murmur2(b"foobar") & 0xFFFFFFFF == (-790332482) & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-long-string") & 0xFFFFFFFF == (-985981536) & 0xFFFFFFFF
    assert murmur2(b"") & 0xFFFFFFFF == 275646681


def test_partitioner_agrees_with_the_default_partitioner() -> None:
    partitions = list(range(8))
    p = Partitioner(8, cache_size=10)
    for i in range(200):
        key = f"6f1c2b0e-4a57-4c3e-9d61-{i:012d}".encode()
        assert p(key) == DefaultPartitioner()(key, partitions, partitions)
        assert p(key) == p(key)  # cached
