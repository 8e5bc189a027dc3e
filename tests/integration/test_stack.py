"""The real services work the way the rest of the project assumes.

- Records keyed by guid land in the partition the Kafka *Java* client would pick (really run
  on a JVM against the stack's kafka-clients jar), with an idempotent acks=all producer.
- PostgreSQL takes COPY and idempotent upserts, in a per-test schema.
- The local stack's lifecycle: `up` is idempotent, stop/start of each service keeps the data
  (on the private stack of `fault_services`), `down --wipe` deletes the data.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2

from schemas.internals import partitions_of
from touchstream import devstack
from touchstream.devstack import kafka as stack_kafka
from touchstream.devstack import postgres as stack_postgres
from touchstream.devstack.partitioner import java_partitions
from touchstream.devstack.paths import PG_PASSWORD
from touchstream.devstack.process import free_port, port_open

REPO = Path(__file__).resolve().parents[2]


def _producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all",
                            linger_ms=5, request_timeout_ms=30000)


async def _consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list:
    """Every record of `topic` from the beginning (no group), until `expected` or `timeout`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", isolation_level="read_committed")
    await consumer.start()
    try:
        partitions = await partitions_of(consumer, topic)
        assert partitions, f"no partitions known for {topic}"
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        records: list = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for recs in batch.values():
                records.extend(recs)
        # Nothing beyond what was produced may show up either.
        extra = await consumer.getmany(timeout_ms=300)
        records.extend(r for recs in extra.values() for r in recs)
        return records
    finally:
        await consumer.stop()


# --- Kafka ----------------------------------------------------------------------------


async def test_records_land_in_the_partition_the_java_client_picks(services, topics):
    guids = [str(uuid.uuid4()) for _ in range(400)]
    # A device sends several hits: every one of them must land in the same partition.
    sends = [(guid, {"guid": guid, "n": i}) for i in range(3) for guid in guids]
    producer = _producer(services.kafka_bootstrap)
    await producer.start()
    try:
        futures = [await producer.send(topics.hits, key=guid.encode(), value=orjson.dumps(value))
                   for guid, value in sends]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()

    partition_count = len(await _partitions(services.kafka_bootstrap, topics.hits))
    assert partition_count == 8
    java = dict(zip(guids, java_partitions([g.encode() for g in guids], partition_count)))

    landed = {}
    for (guid, _), md in zip(sends, metadata):
        assert md.topic == topics.hits
        assert md.partition == java[guid], f"{guid}: broker partition {md.partition}, Java {java[guid]}"
        landed.setdefault(guid, set()).add(md.partition)
    assert all(len(parts) == 1 for parts in landed.values())
    assert set(java.values()) == set(range(partition_count)), "400 keys should reach all 8 partitions"

    records = await _consume_all(services.kafka_bootstrap, topics.hits, len(sends))
    assert len(records) == len(sends), "every record exactly once (idempotent producer, no duplicates)"
    seen = set()
    for rec in records:
        guid = rec.key.decode()
        value = orjson.loads(rec.value)
        assert value["guid"] == guid
        assert rec.partition == java[guid]
        seen.add((guid, value["n"]))
    assert seen == {(guid, value["n"]) for guid, value in sends}
    # Per partition, one device's hits keep their order.
    for guid in random.sample(guids, 20):
        ns = [orjson.loads(r.value)["n"] for r in records if r.key.decode() == guid]
        assert ns == [0, 1, 2]


async def test_aiokafka_murmur2_agrees_with_java_on_arbitrary_keys():
    rng = random.Random(1234)
    keys = [b"", b"\x00", b"\xff" * 7, "größe-ü".encode(), "设备".encode()]
    keys += [rng.randbytes(rng.randrange(1, 80)) for _ in range(500)]
    for partitions in (1, 3, 8, 12, 64):
        java = java_partitions(keys, partitions)
        python = [(murmur2(k) & 0x7FFFFFFF) % partitions for k in keys]
        assert python == java, f"aiokafka and Java disagree with {partitions} partitions"


async def _partitions(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        assert described["error_code"] == 0, described
        return sorted(p["partition"] for p in described["partitions"])
    finally:
        await admin.close()


async def test_topic_prefix_creates_the_four_topics(services, topic_prefix):
    admin = AIOKafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    await admin.start()
    try:
        mine = sorted(t for t in await admin.list_topics() if t.startswith(topic_prefix))
    finally:
        await admin.close()
    assert mine == sorted(f"{topic_prefix}{n}" for n in ("hits", "sessions", "events", "deadletter"))
    for name in mine:
        assert len(await _partitions(services.kafka_bootstrap, name)) == 8


@pytest.mark.topic_partitions(3)
async def test_topic_partitions_marker(services, topics):
    assert len(await _partitions(services.kafka_bootstrap, topics.events)) == 3


async def test_broker_refuses_to_auto_create_topics(services, topic_prefix):
    """Topics come only from `touchstream topics`; a typo must not silently create one."""
    if services.source != "stack":
        pytest.fail("this checks the local stack's broker configuration; run it against the stack")
    producer = AIOKafkaProducer(bootstrap_servers=services.kafka_bootstrap, request_timeout_ms=3000)
    await producer.start()
    try:
        with pytest.raises(Exception):
            await asyncio.wait_for(producer.send_and_wait(f"{topic_prefix}no-such-topic", b"x"), 10)
    finally:
        await producer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    await admin.start()
    try:
        assert f"{topic_prefix}no-such-topic" not in await admin.list_topics()
    finally:
        await admin.close()


# --- PostgreSQL -----------------------------------------------------------------------


async def test_postgres_copy_and_idempotent_upsert(pg_schema):
    conn = await pg_schema.connect()
    try:
        assert await conn.fetchval("SELECT current_schema()") == pg_schema.schema
        await conn.execute("""
            CREATE TABLE events (
                occurred_at timestamptz NOT NULL,
                hit_id uuid NOT NULL,
                name text NOT NULL,
                properties jsonb,
                PRIMARY KEY (occurred_at, hit_id))""")
        t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
        rows = [(t0 + timedelta(seconds=i), uuid.uuid4(), f"e{i % 7}", orjson.dumps({"i": i}).decode())
                for i in range(5000)]
        await conn.copy_records_to_table("events", records=rows)
        # Replaying the same rows through a staging table changes nothing.
        await conn.execute("CREATE TEMP TABLE staging (LIKE events)")
        await conn.copy_records_to_table("staging", records=rows[:1000])
        inserted = await conn.execute("INSERT INTO events SELECT * FROM staging ON CONFLICT DO NOTHING")
        assert inserted == "INSERT 0 0"
        count, total = await conn.fetchrow("SELECT count(*), sum((properties->>'i')::int) FROM events")
        assert count == 5000
        assert total == sum(range(5000))
        where = await conn.fetchval(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'events' "
            "AND table_schema = $1", pg_schema.schema)
        assert where == pg_schema.schema
    finally:
        await conn.close()

    # The same schema through the DSN alone (for tools without a schema setting).
    conn = await asyncpg.connect(pg_schema.search_path_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM events") == 5000
    finally:
        await conn.close()


async def test_pg_schemas_are_separate(services, pg_schema):
    conn = await asyncpg.connect(services.pg_dsn)
    try:
        if services.source == "stack":
            assert await conn.fetchval("SELECT current_database()") == "touchstream"
        assert await conn.fetchval("SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
                                   pg_schema.schema) == 0
        assert await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", pg_schema.schema) == 1
    finally:
        await conn.close()
    assert pg_schema.env() == {"TOUCHSTREAM_PG_DSN": services.pg_dsn, "TOUCHSTREAM_PG_SCHEMA": pg_schema.schema}


# --- the local stack itself -------------------------------------------------------------


def test_services_are_exported_to_the_environment(services):
    assert os.environ["TOUCHSTREAM_KAFKA_BOOTSTRAP"] == services.kafka_bootstrap
    assert os.environ["TOUCHSTREAM_PG_DSN"] == services.pg_dsn


def test_stack_up_again_reuses_what_runs(services):
    if services.source != "stack":
        pytest.fail("this checks the local stack; run it against the stack")
    cfg = services.stack_config
    before = (stack_kafka.kafka_pid(cfg), stack_postgres.postgres_pid(cfg))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "touchstream.cli", "stack", "up"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == [
        f"export TOUCHSTREAM_KAFKA_BOOTSTRAP={services.kafka_bootstrap}",
        f"export TOUCHSTREAM_PG_DSN={services.pg_dsn}",
    ]
    assert (stack_kafka.kafka_pid(cfg), stack_postgres.postgres_pid(cfg)) == before
    assert elapsed < 10, f"a warm `stack up` took {elapsed:.1f}s"
    status = subprocess.run([sys.executable, "-m", "touchstream.cli", "stack", "status"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count(" ready ") == 2


async def test_fault_services_restart_keeps_data_and_spares_the_shared_stack(fault_services, services):
    """The private stack of fault tests: stop/start (graceful and hard) of each service keeps
    the data, every call is idempotent, and the shared stack is never touched."""
    cfg = fault_services.stack_config
    assert fault_services.private and fault_services.kafka_bootstrap != services.kafka_bootstrap
    assert fault_services.pg_dsn != services.pg_dsn
    topic = f"life{uuid.uuid4().hex[:8]}"

    admin = AIOKafkaAdminClient(bootstrap_servers=fault_services.kafka_bootstrap)
    await admin.start()
    try:
        from aiokafka.admin import NewTopic

        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    producer = _producer(fault_services.kafka_bootstrap)
    await producer.start()
    try:
        for attempt in range(50):  # the fresh topic's leaders may take a moment
            try:
                await producer.send_and_wait(topic, key=b"k", value=b"before")
                break
            except Exception:
                if attempt == 49:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await producer.stop()
    conn = await asyncpg.connect(fault_services.pg_dsn)
    try:
        await conn.execute(f"CREATE TABLE {topic} (v text); INSERT INTO {topic} VALUES ('before')")
    finally:
        await conn.close()

    shared = services.stack_config if services.source == "stack" else None

    # Kafka: stop (the second stop is a no-op), start (twice), the record is still there.
    await fault_services.stop_kafka()
    assert await asyncio.to_thread(devstack.stop_kafka, cfg) is False
    assert not port_open("127.0.0.1", cfg.kafka_port)
    if shared is not None:
        assert stack_kafka.ready(shared)
    assert stack_kafka.status(cfg).running is False
    await fault_services.start_kafka()
    pid = stack_kafka.kafka_pid(cfg)
    await fault_services.start_kafka()
    assert stack_kafka.kafka_pid(cfg) == pid and stack_kafka.status(cfg).ready
    assert [r.value for r in await _consume_all(fault_services.kafka_bootstrap, topic, 1)] == [b"before"]

    # A hard stop (SIGKILL) is survivable too.
    await fault_services.stop_kafka(hard=True)
    assert stack_kafka.kafka_pid(cfg) is None
    await fault_services.start_kafka()
    assert [r.value for r in await _consume_all(fault_services.kafka_bootstrap, topic, 1)] == [b"before"]

    # PostgreSQL: the same, with a fast and an immediate stop.
    for hard in (False, True):
        await fault_services.stop_postgres(hard=hard)
        assert await asyncio.to_thread(devstack.stop_postgres, cfg) is False
        with pytest.raises((OSError, asyncpg.PostgresError)):
            await asyncpg.connect(fault_services.pg_dsn, timeout=3)
        if shared is not None:  # the shared stack did not notice
            assert stack_postgres.ready(shared)
        await fault_services.start_postgres()
        await fault_services.start_postgres()
        conn = await asyncpg.connect(fault_services.pg_dsn)
        try:
            assert await conn.fetchval(f"SELECT v FROM {topic}") == "before"
        finally:
            await conn.close()


async def _start_postgres(cfg: devstack.StackConfig) -> None:
    """Start `cfg`'s PostgreSQL; its DSN reaches the database."""
    await asyncio.to_thread(devstack.start_postgres, cfg)
    conn = await asyncpg.connect(cfg.pg_dsn())
    try:
        assert await conn.fetchval("SELECT current_database()") == "touchstream"
    finally:
        await conn.close()


async def test_down_wipe_deletes_the_data_and_keeps_the_jars(tmp_path):
    shared = devstack.StackConfig.from_env()
    await asyncio.to_thread(stack_kafka.ensure_libs, shared)
    cfg = devstack.StackConfig(root=tmp_path / "stack", kafka_port=free_port(), kafka_controller_port=free_port(),
                               pg_port=free_port(), kafka_libs=shared.kafka_libs_dir)
    try:
        stack_kafka.render_properties(cfg)
        assert await asyncio.to_thread(stack_kafka.format_storage, cfg) is not None
        assert await asyncio.to_thread(stack_kafka.format_storage, cfg) is None  # formatted once
        await _start_postgres(cfg)
        pg_data = stack_postgres.data_dir(cfg)
        assert (pg_data / "PG_VERSION").is_file() and (cfg.kafka_data_dir / "meta.properties").is_file()
    finally:
        stopped = await asyncio.to_thread(devstack.down, cfg, wipe=True)
    assert stopped == {"kafka": False, "postgres": True}
    assert not cfg.kafka_data_dir.exists() and not cfg.kafka_properties.exists()
    assert not pg_data.exists() and not cfg.pg_dir.exists()
    assert not port_open("127.0.0.1", cfg.pg_port)
    assert shared.kafka_libs_dir.is_dir() and stack_kafka.libs_present(shared), "the shared jars are kept"


# --- password authentication --------------------------------------------------------------


def _without_password(dsn: str, password: str = PG_PASSWORD) -> str:
    return dsn.replace(f":{quote(password, safe='')}@", "@", 1)


async def _refused(dsn: str) -> str:
    """The error a connection attempt gets (the test fails if it is accepted)."""
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    raise AssertionError(f"PostgreSQL accepted {dsn}")


async def test_the_stack_refuses_a_connection_without_the_password(services):
    if services.source != "stack":
        pytest.fail("this checks the local stack; run it against the stack")
    dsn, password = services.pg_dsn, quote(services.stack_config.pg_password, safe="")
    assert f":{password}@" in dsn
    assert "password" in (await _refused(_without_password(dsn, services.stack_config.pg_password))).lower()
    assert "password" in (await _refused(dsn.replace(password, "not-the-password", 1))).lower()
    conn = await asyncpg.connect(dsn)  # the stack's own DSN (every default one) still gets in
    try:
        assert await conn.fetchval("SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid "
                                   "WHERE rolname = current_user")
    finally:
        await conn.close()


async def test_a_stack_with_its_own_password(tmp_path):
    """TOUCHSTREAM_STACK_PG_PASSWORD's cluster asks for that password (the default one is refused);
    started again with another, `stack up` says at once which setting to fix instead of waiting."""
    own = "sh4red/machine's pw"
    cfg = devstack.StackConfig(root=tmp_path / "stack", kafka_port=free_port(), kafka_controller_port=free_port(),
                               pg_port=free_port(), pg_password=own)
    default = dataclasses.replace(cfg, pg_password=PG_PASSWORD)
    try:
        await _start_postgres(cfg)
        assert "password" in (await _refused(default.pg_dsn())).lower()
        await asyncio.to_thread(devstack.stop_postgres, cfg)
        started = time.monotonic()
        with pytest.raises(devstack.StackError, match="TOUCHSTREAM_STACK_PG_PASSWORD"):
            await asyncio.to_thread(devstack.start_postgres, default)
        assert time.monotonic() - started < 30  # not the 60 s readiness timeout
    finally:
        await asyncio.to_thread(devstack.down, cfg, wipe=True)


async def test_a_cluster_made_with_trust_is_moved_to_passwords_and_keeps_its_data(tmp_path):
    """A dev cluster from before passwords (pg_hba.conf `trust`, a superuser without a password):
    the next `stack up` gives the superuser the password and switches pg_hba.conf, data kept."""
    cfg = devstack.StackConfig(root=tmp_path / "stack", kafka_port=free_port(), kafka_controller_port=free_port(),
                               pg_port=free_port())
    try:
        await asyncio.to_thread(devstack.start_postgres, cfg)
        conn = await asyncpg.connect(cfg.pg_dsn())
        try:
            await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before')")
            await conn.execute("ALTER ROLE postgres PASSWORD NULL")
        finally:
            await conn.close()
        await asyncio.to_thread(devstack.stop_postgres, cfg)
        hba = stack_postgres.data_dir(cfg) / "pg_hba.conf"
        hba.write_text("local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n")
        assert stack_postgres.trusting(cfg)

        await asyncio.to_thread(devstack.start_postgres, cfg)
        assert not stack_postgres.trusting(cfg) and "trust" not in hba.read_text()
        assert "password" in (await _refused(_without_password(cfg.pg_dsn()))).lower()
        conn = await asyncpg.connect(cfg.pg_dsn())
        try:
            assert await conn.fetchval("SELECT v FROM kept") == "before"
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(devstack.down, cfg, wipe=True)
