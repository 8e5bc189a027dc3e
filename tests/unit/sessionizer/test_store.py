"""`DeviceStore.write` on a real RocksDB (rocksdict, a local library): the rows and the
persisted offset go in one batch without the write-ahead log (the changelog is the log), and
are there again after the database is let go (as Faust does) and opened."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

import rocksdict
from aiokafka.producer.message_accumulator import BatchBuilder

from sessionizer.output import BatchWriter, Sender
from sessionizer.state import DeviceState
from sessionizer.store import DeviceStore

CHANGELOG = "app-devices-changelog"
OFFSET_KEY = b"__faust\x00offset__"


class Acked:
    offset = 41  # the first record's offset in the changelog partition


class Producer:
    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(1_000_000, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, partition: int) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(Acked())
        return fut


class Partitions:
    changelog_topic = CHANGELOG
    offset_key = OFFSET_KEY

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dbs: dict[int, rocksdict.Rdict] = {}

    def db(self, partition: int) -> rocksdict.Rdict:
        if partition not in self.dbs:
            self.dbs[partition] = rocksdict.Rdict(str(self.path / str(partition)), options=rocksdict.Options(raw_mode=True))
        return self.dbs[partition]

    def let_go(self) -> None:
        """What Faust's RocksDB store does at a revoke and at stop: it drops the Rdicts and
        collects (its `db.close()` calls are commented out), so RocksDB closes them."""
        self.dbs.clear()
        gc.collect()


def _wal_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.log"))


async def test_rows_and_offset_are_written_without_the_wal_and_kept_when_faust_lets_the_database_go(tmp_path: Path) -> None:
    partitions = Partitions(tmp_path)
    store = DeviceStore(partitions)
    states = {f"guid-{i}": DeviceState(f"guid-{i}", offset=i) for i in range(50)}
    encoded = store.encode({3: dict(states)}, {})
    n = await store.write(encoded, BatchWriter(Sender(Producer())))

    assert n == 50
    db = partitions.db(3)
    assert db.get(b"guid-7") == states["guid-7"].to_bytes()
    assert int(db.get(OFFSET_KEY)) == 41 + 50 - 1  # the last changelog record's offset
    assert _wal_bytes(tmp_path / "3") == 0, "the rows went through RocksDB's write-ahead log"

    del db
    partitions.let_go()  # closing flushes what the log would have held
    reopened = Partitions(tmp_path)
    assert DeviceState.from_bytes(reopened.db(3).get(b"guid-7")).offset == 7
    assert int(reopened.db(3).get(OFFSET_KEY)) == 90
    reopened.let_go()
