"""Which partition a key goes to: murmur2, exactly as the Java client and aiokafka's
DefaultPartitioner compute it. Every stage that picks partitions itself (the edge's publisher,
the sessionizer's outputs) must agree with any other Kafka client, or one device's records
would split across two partitions.

aiokafka's pure-Python murmur2 works a byte at a time; this one reads the key four bytes at a
time with `struct`, and `Partitioner` remembers recent keys in a plain dict (devices send many
hits), so a known key costs a dict lookup instead of a hash (`bench/micro_bench.py` measures
each, and a `functools.lru_cache` for comparison).
"""

from __future__ import annotations

import struct

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_SEED = 0x9747B28C


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2) as an unsigned 32-bit int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    words = length >> 2
    if words:
        for k in struct.unpack_from(f"<{words}I", data):
            k = (k * _M) & _MASK
            k = ((k ^ (k >> 24)) * _M) & _MASK
            h = ((h * _M) & _MASK) ^ k
    extra = length & 3
    if extra:
        whole = length - extra
        if extra >= 3:
            h ^= data[whole + 2] << 16
        if extra >= 2:
            h ^= data[whole + 1] << 8
        h = ((h ^ data[whole]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


class Partitioner:
    """Key -> partition among `partitions` (ids 0..partitions-1), as the default partitioner
    places a key, with a bounded memo of recent keys (cleared when full)."""

    def __init__(self, partitions: int, cache_size: int = 262_144) -> None:
        if partitions < 1:
            raise ValueError(f"a topic has at least one partition, not {partitions}")
        self.partitions = partitions
        self._cache: dict[bytes, int] = {}
        self._cache_size = cache_size

    def __call__(self, key: bytes) -> int:
        p = self._cache.get(key)
        if p is None:
            p = (murmur2(key) & 0x7FFFFFFF) % self.partitions
            cache = self._cache
            if len(cache) >= self._cache_size:
                cache.clear()
            cache[key] = p
        return p
