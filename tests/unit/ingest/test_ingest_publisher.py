"""KafkaPublisher's batching and bounds, against a fake aiokafka producer (no broker)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner

from ingest.errors import PublishUnavailable
from ingest.metrics import Metrics
from ingest.publisher import KafkaPublisher
from ingest.settings import IngestSettings

TOPICS = ["p.hits", "p.deadletter"]
PARTITIONS = list(range(8))


class FakeBuilder:
    def __init__(self, max_bytes: int) -> None:
        self.records: list[tuple[bytes | None, bytes]] = []
        self.size = 0
        self.max_bytes = max_bytes
        self.closed = False

    def append(self, *, timestamp: Any, key: bytes | None, value: bytes) -> object | None:
        size = len(value) + len(key or b"")
        if self.closed or (self.records and self.size + size > self.max_bytes):
            return None
        self.records.append((key, value))
        self.size += size
        return object()

    def close(self) -> None:
        self.closed = True


class FakeCluster:
    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(PARTITIONS) if topic in TOPICS else None

    def brokers(self) -> set[int]:
        return {1}


class FakeClient:
    def __init__(self) -> None:
        self.cluster = FakeCluster()
        self.reachable = True

    async def fetch_all_metadata(self) -> FakeCluster:
        if not self.reachable:
            raise KafkaConnectionError("down")
        return self.cluster


class FakeProducer:
    instances: list[FakeProducer] = []
    fail_start = 0

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.client = FakeClient()
        self.sent: list[tuple[str, int, FakeBuilder, asyncio.Future[None]]] = []
        self.sender_died = False
        self.stopped = False
        FakeProducer.instances.append(self)

    async def start(self) -> None:
        if FakeProducer.fail_start:
            FakeProducer.fail_start -= 1
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")

    async def stop(self) -> None:
        self.stopped = True

    async def partitions_for(self, topic: str) -> set[int]:
        return set(PARTITIONS)

    def sender_stopped(self) -> bool:
        return self.sender_died

    def create_batch(self) -> FakeBuilder:
        return FakeBuilder(self.config["max_batch_size"])

    async def send_batch(self, builder: FakeBuilder, topic: str, *, partition: int) -> asyncio.Future[None]:
        assert builder.closed, "batches are handed over closed (no aiokafka linger)"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, partition, builder, future))
        return future

    def ack_all(self) -> int:
        count = 0
        for *_, future in self.sent:
            if not future.done():
                future.set_result(None)
                count += 1
        return count


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settings(**overrides: Any) -> IngestSettings:
    base: dict[str, Any] = {"ingest_linger_ms": 0, "ingest_publish_timeout_s": 0.3, "ingest_max_batch_bytes": 4096}
    return IngestSettings(**{**base, **overrides})


@pytest.fixture
async def started():
    FakeProducer.instances = []
    FakeProducer.fail_start = 0
    clock = Clock()
    publisher = KafkaPublisher(settings(), TOPICS, producer_factory=FakeProducer, clock=clock, metrics=Metrics())
    await publisher.start()
    yield publisher, FakeProducer.instances[-1], clock
    for producer in FakeProducer.instances:
        producer.ack_all()
    await publisher.stop(timeout=1)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def key(n: int) -> bytes:
    return f"6f1c2b0e-4a57-4c3e-9d61-{n:012d}".encode()


async def test_producer_is_idempotent_acks_all(started) -> None:
    _, producer, _ = started
    assert producer.config["enable_idempotence"] is True and producer.config["acks"] == "all"
    assert producer.config["compression_type"] == "zstd" and producer.config["linger_ms"] == 0


async def test_records_land_on_the_default_partitioners_partition_and_wait_for_acks(started) -> None:
    publisher, producer, _ = started
    records = [(key(n), b"v%d" % n) for n in range(40)]
    task = asyncio.create_task(publisher.publish([(TOPICS[0], records)], timeout=5))
    await settle()
    assert not task.done(), "answered before Kafka acknowledged"
    expected: dict[int, list[bytes]] = {}
    for k, v in records:
        expected.setdefault(DefaultPartitioner()(k, PARTITIONS, PARTITIONS), []).append(v)
    got = {p: [v for _, v in b.records] for t, p, b, _ in producer.sent}
    assert got == expected  # one batch per partition, in order
    producer.sent[0][3].set_result(None)
    await settle()
    assert not task.done(), "answered before every batch was acknowledged"
    producer.ack_all()
    await asyncio.wait_for(task, 1)


async def test_records_gather_while_their_partition_is_in_flight(started) -> None:
    publisher, producer, _ = started
    first = asyncio.create_task(publisher.publish([(TOPICS[0], [(key(1), b"a")])], 5))
    await settle()
    assert len(producer.sent) == 1
    later = [asyncio.create_task(publisher.publish([(TOPICS[0], [(key(1), b"b%d" % i)])], 5)) for i in range(5)]
    await settle()
    assert len(producer.sent) == 1, "a second batch left while the first was in flight"
    producer.ack_all()
    await asyncio.wait_for(first, 1)
    await settle()
    assert len(producer.sent) == 2
    assert [v for _, v in producer.sent[1][2].records] == [b"b0", b"b1", b"b2", b"b3", b"b4"]
    producer.ack_all()
    await asyncio.wait_for(asyncio.gather(*later), 1)


async def test_full_batches_split(started) -> None:
    publisher, producer, _ = started
    records = [(key(1), b"x" * 1000) for _ in range(10)]  # 10 kB to one partition, 4 kB batches
    task = asyncio.create_task(publisher.publish([(TOPICS[0], records)], 5))
    for _ in range(10):
        await settle()
        producer.ack_all()
    await asyncio.wait_for(task, 1)
    sizes = [len(b.records) for *_, b, _ in producer.sent]
    assert sizes == [3, 3, 3, 1]  # 1036-byte records in 4096-byte batches


async def test_timeout_is_503_and_unsent_records_of_that_request_never_leave(started) -> None:
    publisher, producer, _ = started
    blocker = asyncio.create_task(publisher.publish([(TOPICS[0], [(key(1), b"first")])], 5))
    await settle()
    with pytest.raises(PublishUnavailable, match="did not acknowledge within 0.1 s"):
        await publisher.publish([(TOPICS[0], [(key(1), b"late")])], timeout=0.1)
    producer.ack_all()
    await asyncio.wait_for(blocker, 1)
    await settle()
    sent = [v for *_, b, _ in producer.sent for _, v in b.records]
    assert sent == [b"first"], "a record of a request answered 503 was sent afterwards"


async def test_stalled_partition_fails_new_requests_at_once(started) -> None:
    publisher, producer, clock = started
    asyncio.create_task(publisher.publish([(TOPICS[0], [(key(1), b"a")])], 5))
    await settle()
    clock.now += 1.0  # past the 0.3 s bound with nothing acknowledged
    with pytest.raises(PublishUnavailable, match="has not acknowledged"):
        await publisher.publish([(TOPICS[0], [(key(1), b"b")])], 5)
    assert not await publisher.ready()
    producer.ack_all()
    await settle()
    task = asyncio.create_task(publisher.publish([(TOPICS[0], [(key(1), b"c")])], 5))
    await settle()
    producer.ack_all()
    await asyncio.wait_for(task, 1)  # recovered as soon as the broker answered


async def test_failed_batch_fails_its_requests(started) -> None:
    publisher, producer, _ = started
    task = asyncio.create_task(publisher.publish([(TOPICS[0], [(key(1), b"a")])], 5))
    await settle()
    producer.sent[0][3].set_exception(MessageSizeTooLargeError())
    with pytest.raises(PublishUnavailable, match="MessageSizeTooLarge"):
        await task


async def test_a_batch_aiokafka_will_not_take_fails_only_its_requests(started, monkeypatch) -> None:
    """One task hands a flush's batches over; one refused hand-over must not stop the others."""
    publisher, producer, _ = started
    real_send_batch = producer.send_batch
    refused_partition = publisher._states[TOPICS[0]][0].partition  # noqa: SLF001

    async def send_batch(builder: Any, topic: str, *, partition: int) -> asyncio.Future[None]:
        if partition == refused_partition:
            raise KafkaTimeoutError()
        return await real_send_batch(builder, topic, partition=partition)

    monkeypatch.setattr(producer, "send_batch", send_batch)
    keys = {}
    for n in range(200):  # a key for the refused partition and one for another
        partition = DefaultPartitioner()(key(n), PARTITIONS, PARTITIONS)
        keys.setdefault(partition == refused_partition, key(n))
    refused = asyncio.create_task(publisher.publish([(TOPICS[0], [(keys[True], b"a")])], 5))
    taken = asyncio.create_task(publisher.publish([(TOPICS[0], [(keys[False], b"b")])], 5))
    await settle()
    assert producer.ack_all() == 1
    with pytest.raises(PublishUnavailable, match="KafkaTimeoutError"):
        await refused
    await asyncio.wait_for(taken, 1)


async def test_a_topic_waiting_in_send_batch_does_not_hold_another_topics_batches(started, monkeypatch) -> None:
    """aiokafka's send_batch can wait for a topic's metadata (e.g. during a broker restart)."""
    publisher, producer, _ = started
    real_send_batch = producer.send_batch
    gate = asyncio.Event()

    async def send_batch(builder: Any, topic: str, *, partition: int) -> asyncio.Future[None]:
        if topic == TOPICS[0]:
            await gate.wait()
        return await real_send_batch(builder, topic, partition=partition)

    monkeypatch.setattr(producer, "send_batch", send_batch)
    task = asyncio.create_task(publisher.publish([(TOPICS[0], [(key(1), b"a")]), (TOPICS[1], [(key(2), b"b")])], 5))
    await settle()
    assert [topic for topic, *_ in producer.sent] == [TOPICS[1]]
    gate.set()
    await settle()
    assert producer.ack_all() == 2
    await asyncio.wait_for(task, 1)


async def test_a_hand_over_cancelled_before_it_ran_settles_its_batches(started) -> None:
    publisher, producer, _ = started
    task = asyncio.create_task(publisher.publish([(TOPICS[0], [(key(1), b"a")])], 5))
    for _ in range(2):  # the request is queued and the flush has built its batch...
        await asyncio.sleep(0)
    handing = list(publisher._tasks)  # noqa: SLF001
    assert handing and not producer.sent
    for hand_over in handing:  # ...but the loop is torn down before the hand-over runs
        hand_over.cancel()
    with pytest.raises(PublishUnavailable, match="shutting down"):
        await task
    assert publisher._buffered == 0  # noqa: SLF001
    assert all(st.inflight_since is None for states in publisher._states.values() for st in states)  # noqa: SLF001


async def test_a_failed_request_leaves_no_record_behind_to_be_sent_later(started) -> None:
    """A request answered 503 is retried whole: its records still waiting must not leave."""
    publisher, producer, _ = started
    first, second = _two_keys_on_one_partition()
    other = next(key(n) for n in range(200) if DefaultPartitioner()(key(n), PARTITIONS, PARTITIONS) != 0)
    busy = asyncio.create_task(publisher.publish([(TOPICS[0], [(first, b"busy")])], 5))  # partition 0 in flight
    await settle()
    failing = asyncio.create_task(publisher.publish([(TOPICS[0], [(other, b"x"), (second, b"y")])], 5))
    await settle()  # its record for partition 0 waits behind "busy"; the other one is in flight
    batch_of_other = next(sent for sent in producer.sent if sent[2].records[0][1] == b"x")
    batch_of_other[3].set_exception(MessageSizeTooLargeError())
    with pytest.raises(PublishUnavailable):
        await failing
    producer.ack_all()  # "busy" is acknowledged: partition 0 is free again
    await asyncio.wait_for(busy, 1)
    await settle()
    assert [v for _t, _p, builder, _f in producer.sent for _k, v in builder.records] == [b"busy", b"x"]


def _two_keys_on_one_partition() -> tuple[bytes, bytes]:
    found = [key(n) for n in range(400) if DefaultPartitioner()(key(n), PARTITIONS, PARTITIONS) == 0]
    return found[0], found[1]


async def test_a_cancelled_acknowledgement_fails_its_requests(started) -> None:
    publisher, producer, _ = started
    task = asyncio.create_task(publisher.publish([(TOPICS[0], [(key(1), b"a")])], 5))
    await settle()
    producer.sent[0][3].cancel()  # aiokafka closing under it
    with pytest.raises(PublishUnavailable, match="shutting down"):
        await task


async def test_buffer_cap_refuses_at_once() -> None:
    FakeProducer.instances = []
    publisher = KafkaPublisher(settings(ingest_buffer_bytes=1024 * 1024), TOPICS, producer_factory=FakeProducer)
    await publisher.start()
    producer = FakeProducer.instances[-1]
    tasks = [asyncio.create_task(publisher.publish([(TOPICS[0], [(key(1), b"x" * 300_000)])], 5)) for _ in range(4)]
    await settle()
    with pytest.raises(PublishUnavailable, match="wait for Kafka"):
        await publisher.publish([(TOPICS[0], [(key(2), b"y")])], 5)
    for _ in range(6):
        producer.ack_all()
        await settle()
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    await publisher.stop(timeout=1)


async def test_unknown_topic_is_unavailable(started) -> None:
    publisher, _, _ = started
    with pytest.raises(PublishUnavailable, match="no metadata"):
        await publisher.publish([("p.elsewhere", [(key(1), b"a")])], 1)


async def test_starts_without_kafka_and_connects_in_the_background() -> None:
    FakeProducer.instances = []
    FakeProducer.fail_start = 1
    publisher = KafkaPublisher(settings(), TOPICS, producer_factory=FakeProducer)
    await publisher.start()  # does not raise: the edge serves 503 until Kafka is there
    with pytest.raises(PublishUnavailable, match="cannot reach Kafka"):
        await publisher.publish([(TOPICS[0], [(key(1), b"a")])], 1)
    assert not await publisher.ready()
    await asyncio.sleep(1.3)  # the watcher retries every second
    task = asyncio.create_task(publisher.publish([(TOPICS[0], [(key(1), b"a")])], 5))
    await settle()
    FakeProducer.instances[-1].ack_all()
    await asyncio.wait_for(task, 1)
    await publisher.stop(timeout=1)


async def test_a_broken_producer_is_replaced(started) -> None:
    publisher, producer, _ = started
    producer.sender_died = True  # aiokafka's sender died (e.g. OutOfOrderSequenceNumber)
    await asyncio.sleep(1.3)
    assert producer.stopped and FakeProducer.instances[-1] is not producer
    fresh = FakeProducer.instances[-1]
    task = asyncio.create_task(publisher.publish([(TOPICS[0], [(key(1), b"a")])], 5))
    await settle()
    fresh.ack_all()
    await asyncio.wait_for(task, 1)


async def test_ready_checks_metadata_and_caches_it(started) -> None:
    publisher, producer, clock = started
    assert await publisher.ready()
    producer.client.reachable = False
    assert await publisher.ready(), "within the cache time the last answer stands"
    clock.now += 5
    assert not await publisher.ready()
    assert "metadata request failed" in publisher.last_error


async def test_stop_flushes_pending_records(started) -> None:
    publisher, producer, _ = started
    task = asyncio.create_task(publisher.publish([(TOPICS[0], [(key(1), b"a"), (key(2), b"b")])], 5))
    await settle()

    async def acker() -> None:
        while not task.done():
            producer.ack_all()
            await asyncio.sleep(0.01)

    ack = asyncio.create_task(acker())
    await publisher.stop(timeout=2)
    await asyncio.wait_for(task, 1)
    await ack
    assert producer.stopped
