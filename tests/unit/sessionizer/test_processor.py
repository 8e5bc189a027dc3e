"""The processing task's at-least-once order, with Kafka, Faust and RocksDB replaced by fakes:
outputs acknowledged before the changelog is written, the changelog acknowledged before
RocksDB, RocksDB before the offsets are acked; and a failed write is redone from the durable
state, acking nothing before it succeeds."""

from __future__ import annotations

from collections.abc import Callable

import asyncio
from collections import namedtuple
from datetime import datetime, timezone
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError
from aiokafka.producer.message_accumulator import BatchBuilder
from faust.types import TP

import sessionizer.store as store_module
from schemas.partitioning import Partitioner
from schemas.topics import Topics
from schemas.wire import encode
from sessionizer.machine import DeviceState
from sessionizer.output import Sender
from sessionizer.processor import Processor
from sessionizer.rules import Rules
from sessionizer.stats import Stats
from sessionizer.store import CLOCK_KEY, DeviceStore
from sessionizer.transport import Inbox

TOPICS = Topics("u.")
CHANGELOG = "u.sessionizer-devices-changelog"
Rec = namedtuple("Rec", "offset key value")
Meta = namedtuple("Meta", "offset")


class Log(list):
    def index_of(self, kind: str, topic: str | None = None) -> list[int]:
        return [i for i, e in enumerate(self) if e[0] == kind and (topic is None or e[1] == topic)]


class FakeProducer:
    def __init__(self, log: Log, fail: set[str]) -> None:
        self.log = log
        self.fail = fail  # topics whose next batch fails once
        self.records: dict[str, list[tuple[bytes, bytes | None]]] = {}
        self.by_partition: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] = {}
        self.offsets: dict[tuple[str, int], int] = {}

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(1_000_000, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, partition: int) -> asyncio.Future[Any]:
        self.log.append(("send", topic, partition))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        count = batch.record_count()

        def done() -> None:
            if topic in self.fail:
                self.fail.discard(topic)
                self.log.append(("fail", topic, partition))
                fut.set_exception(KafkaTimeoutError())
                return
            base = self.offsets.get((topic, partition), 0)
            self.offsets[(topic, partition)] = base + count
            self.log.append(("acked", topic, partition))
            fut.set_result(Meta(base))

        asyncio.get_running_loop().call_later(0.01, done)
        # keep what was sent, decoded back from the batch, for the assertions
        sent = _records_of(batch)
        self.records.setdefault(topic, []).extend(sent)
        self.by_partition.setdefault((topic, partition), []).extend(sent)
        return fut


def _records_of(batch: BatchBuilder) -> list[tuple[bytes, bytes | None]]:
    from aiokafka.record.default_records import DefaultRecordBatch

    buf = batch._build()
    return [(r.key, r.value) for r in DefaultRecordBatch(bytearray(buf))]


class FakeDB(dict):
    def __init__(self, log: Log, partition: int) -> None:
        super().__init__()
        self.log = log
        self.partition = partition

    def items(self, from_key: bytes | None = None):  # type: ignore[override]
        """In key order, as RocksDB gives them (rocksdict's `from_key`)."""
        return [(k, self[k]) for k in sorted(self) if from_key is None or k >= from_key]

    def write(self, batch: list[tuple[bytes, bytes | None]], write_opt: Any = None) -> None:
        self.log.append(("db", self.partition))
        for key, value in batch:
            if value is None:
                self.pop(key, None)
            else:
                self[key] = value


class WB(list):
    def __init__(self, raw_mode: bool = True) -> None:
        super().__init__()

    def put(self, key: bytes, value: bytes) -> None:
        self.append((key, value))

    def delete(self, key: bytes) -> None:
        self.append((key, None))


class FakeStore:
    """The table's storage (schemas.internals.PartitionStore), a dict per partition."""

    changelog_topic = CHANGELOG
    offset_key = b"__faust\x00offset__"

    def __init__(self, log: Log) -> None:
        self.dbs: dict[int, FakeDB] = {}
        self.log = log

    def db(self, partition: int) -> FakeDB:
        return self.dbs.setdefault(partition, FakeDB(self.log, partition))


class FakeConsumer:
    def __init__(self, log: Log) -> None:
        self.log = log

    def assignment(self) -> set[TP]:
        return {TP(TOPICS.hits, p) for p in range(2)}

    def highwater(self, tp: TP) -> int:
        return 10**9  # never caught up: nothing closes by time in these tests

    async def position(self, tp: TP) -> int:
        return 0

    def ack_range(self, tp: TP, first: int, last: int) -> None:
        self.log.append(("ack", tp.partition, first, last))


class FakeApp:
    def __init__(self, log: Log) -> None:
        self.consumer_generation_id = 1
        self.should_stop = False
        self.rebalancing = False
        self.consumer = FakeConsumer(log)
        self.monitor = None


def _hit(n: int, guid: str) -> bytes:
    at = datetime(2026, 3, 2, 9, n, tzinfo=timezone.utc)
    return encode({
        "v": 1, "kind": "hit", "hit_id": f"00000000-0000-4000-8000-{n:012d}", "guid": guid, "type": "pageview",
        "url": "https://example.com/", "path": "/", "site": "example.com", "received_at": at, "occurred_at": at,
    })


async def _run(fail: set[str], monkeypatch: pytest.MonkeyPatch, rules: Rules | None = None,
               prefill: Callable[[FakeStore], None] | None = None,
               stats: Stats | None = None, until: Callable[[], bool] = lambda: True,
               ) -> tuple[Log, FakeProducer, FakeStore]:
    monkeypatch.setattr(store_module.rocksdict, "WriteBatch", WB)
    log = Log()
    producer = FakeProducer(log, fail)
    table = FakeStore(log)
    if prefill is not None:
        prefill(table)
    app = FakeApp(log)
    inbox = Inbox([TOPICS.hits], 10_000)
    proc = Processor(app, rules=rules or Rules(), topics=TOPICS, inbox=inbox, store=DeviceStore(table),
                     sender=Sender(producer), partitions=2, batch_max=1000, tick_s=0.02, sweep_max=1000,
                     stats=stats or Stats(), idle_scan_max=3)
    proc.on_recovered({TP(CHANGELOG, 0), TP(CHANGELOG, 1)})
    guids = ["6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01", "0a9e7d2c-5b1f-4e8a-8c3d-2f6b9a4e1c02"]
    part = Partitioner(2)
    offsets = {0: 0, 1: 0}
    for n in range(6):
        guid = guids[n % 2]
        p = part(guid.encode())
        inbox.put(1, {TP(TOPICS.hits, p): [Rec(offsets[p], guid.encode(), _hit(n, guid))]})
        offsets[p] += 1
    task = asyncio.ensure_future(proc.run())
    for _ in range(300):
        await asyncio.sleep(0.02)
        if proc.stats.records_in >= 6 and until():
            break
    await proc.before_stop()
    await asyncio.wait_for(task, 5)
    assert proc.stats.records_in == 6
    return log, producer, table


def _check_order(log: Log) -> None:
    """Every ack comes after some RocksDB write, which comes after a changelog ack, which comes
    after the outputs it follows were acked."""
    acks = log.index_of("ack")
    assert acks
    for i in acks:
        before = log[:i]
        assert any(e[0] == "db" for e in before)
    for i in log.index_of("send", CHANGELOG):
        outputs_acked = [j for j in log.index_of("acked", TOPICS.events) if j < i]
        assert outputs_acked, "a changelog batch was sent before any output was acknowledged"
    for i in log.index_of("db"):
        assert [j for j in log.index_of("acked", CHANGELOG) if j < i], "RocksDB written before the changelog ack"


async def test_outputs_then_changelog_then_rocksdb_then_ack(monkeypatch: pytest.MonkeyPatch) -> None:
    log, producer, table = await _run(set(), monkeypatch)
    _check_order(log)
    events = producer.records[TOPICS.events]
    assert len(events) == 6 and len({v for _, v in events}) == 6
    # The table holds each device's state and the clock, with Faust's persisted-offset key.
    devices = set()
    for partition, db in table.dbs.items():
        assert CLOCK_KEY in db and FakeStore.offset_key in db
        for key in db:
            if key[0] != 0 and not key.startswith(b"__faust"):
                assert DeviceState.from_bytes(db[key]).guid == key.decode()
                devices.add(key)
        # What the changelog partition got is what RocksDB got (Faust's recovery reads it),
        # and the persisted offset is that of its last record.
        changelog = producer.by_partition[(CHANGELOG, partition)]
        assert dict(changelog) == {k: v for k, v in db.items() if k != FakeStore.offset_key}
        assert int(db[FakeStore.offset_key]) == len(changelog) - 1
    assert len(devices) == 2


async def test_a_failed_changelog_write_is_redone_and_nothing_is_acked_before(monkeypatch: pytest.MonkeyPatch) -> None:
    log, producer, table = await _run({CHANGELOG}, monkeypatch)
    failed = log.index_of("fail", CHANGELOG)
    assert failed
    first_fail = failed[0]
    # nothing was acked or written to RocksDB before the failure was redone
    assert not [i for i in log.index_of("ack") if i < first_fail]
    assert not [i for i in log.index_of("db") if i < first_fail]
    _check_order(log)
    # the outputs were sent again, identically: every event record once or as an exact copy
    values = [v for _, v in producer.records[TOPICS.events]]
    assert len(set(values)) == 6 and len(values) >= 6
    by_hit = {}
    for v in values:
        rec = orjson.loads(v)
        by_hit.setdefault(rec["hit_id"], set()).add(v)
    assert all(len(vs) == 1 for vs in by_hit.values())
    # and the offsets of all six hits were acked in the end
    acked = {(p, o) for _, p, first, last in (e for e in log if e[0] == "ack") for o in range(first, last + 1)}
    assert len(acked) == 6


async def test_a_devices_outputs_go_to_its_hits_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    """Co-partitioning: each device's events and session snapshots land in the partition number
    of the `hits` partition its hits came from (here the edge's murmur2 placement)."""
    _, producer, _ = await _run(set(), monkeypatch)
    home = Partitioner(2)
    placed = 0
    for (topic, partition), sent in producer.by_partition.items():
        if topic not in (TOPICS.events, TOPICS.sessions):
            continue
        for _, value in sent:
            guid = orjson.loads(value)["guid"]
            assert partition == home(guid.encode()), (topic, guid)
            placed += 1
    assert placed >= 6 + 2  # 6 event records, and at least one snapshot per device


def _stored_state(guid: str, at: datetime, rules: Rules, *, site: str = "example.com", frozen: bool = True) -> bytes:
    from sessionizer.machine import Emitted, on_hit, on_time
    from tests.unit.sessionizer.driver import make_hit

    t = int(at.timestamp() * 1000)
    state = on_hit(None, make_hit(t, hid=1, guid=guid, site=site), rules, t, Emitted())
    if frozen:
        on_time(state, rules, t + rules.timeout_ms + rules.lateness_ms + 1, Emitted())
    return state.to_bytes()


async def test_idle_devices_leave_the_state_a_few_per_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """Devices idle past the TTL are deleted (changelog tombstone, then RocksDB), a bounded number
    looked at per round; a device seen within the TTL stays."""
    rules = Rules(idle_ttl_ms=30 * 86_400_000)
    old = [f"00000000-0000-4000-8000-0000000000{i:02d}" for i in range(7)]
    recent = "11111111-0000-4000-8000-000000000001"

    def prefill(table: FakeStore) -> None:
        part = Partitioner(2)
        for guid in old:
            table.db(part(guid.encode()))[guid.encode()] = _stored_state(guid, datetime(2025, 6, 1, tzinfo=timezone.utc), rules)
        table.db(part(recent.encode()))[recent.encode()] = _stored_state(recent, datetime(2026, 2, 20, tzinfo=timezone.utc), rules)

    stats = Stats()
    log, producer, table = await _run(set(), monkeypatch, rules, prefill, stats,
                                      until=lambda: stats.idle_removed >= len(old))
    stored = {k for db in table.dbs.values() for k in db if k[0] != 0 and not k.startswith(b"__faust")}
    assert recent.encode() in stored and not stored & {g.encode() for g in old}
    assert stats.idle_removed == len(old)
    tombstones = {k for (topic, _), sent in producer.by_partition.items() if topic == CHANGELOG
                  for k, v in sent if v is None}
    assert tombstones == {g.encode() for g in old}
    _check_order(log)


async def test_a_hit_the_state_may_not_take_is_dead_lettered_with_why(monkeypatch: pytest.MonkeyPatch) -> None:
    rules = Rules(scope="site", max_slots=1)
    guid = "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01"  # one of _run's two devices: its 3 hits name example.com

    def prefill(table: FakeStore) -> None:
        state = _stored_state(guid, datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc), rules, site="other.example",
                              frozen=False)
        table.db(Partitioner(2)(guid.encode()))[guid.encode()] = state

    stats = Stats()
    _, producer, _ = await _run(set(), monkeypatch, rules, prefill, stats)
    letters = [orjson.loads(v) for _, v in producer.records[TOPICS.deadletter]]
    assert len(letters) == 3 and stats.refused == 3
    assert all("TOUCHSTREAM_SESSION_MAX_SLOTS" in letter["reason"] for letter in letters)
    events = [orjson.loads(v) for _, v in producer.records[TOPICS.events]]
    assert {e["guid"] for e in events} == {"0a9e7d2c-5b1f-4e8a-8c3d-2f6b9a4e1c02"}  # the other device's 3 hits
