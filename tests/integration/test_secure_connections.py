"""Production connections against a stack started with TLS (`touchstream stack up --tls`):

- Kafka over SASL_SSL with each mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and over SSL
  with a client certificate whose key is encrypted, all through `schemas.kafka_security`; a
  wrong password, a missing client certificate or another CA are refused;
- PostgreSQL with `sslmode=verify-full`: the connection is encrypted and checked against the
  CA and the host name (the server's certificate names `localhost`, so 127.0.0.1 fails); plain
  connections of the logins are refused;
- the three logins hold one role each: the writer cannot do DDL or delete, the reader cannot
  write; `touchstream migrate` and `touchstream topics` work as the owner and over SASL_SSL
  and print no secret.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from schemas.kafka_security import KafkaConnection
from schemas.settings import KafkaSettings
from schemas.topics import Topics
from touchstream.devstack.tls import SECRETS, TlsMaterial
from touchstream.devstack.tls import material as tls_material

DAY_MS = 24 * 3600 * 1000


@pytest.fixture(scope="module")
def tls(secure_services: Any) -> TlsMaterial:
    return tls_material(secure_services.stack_config.root)


@pytest.fixture(scope="module")
def secrets(tls: TlsMaterial) -> list[str]:
    return [tls.secret(name) for name in SECRETS]


def sasl(secure_services: Any, tls: TlsMaterial, mechanism: str = "SCRAM-SHA-512", password: str | None = None,
         cafile: Path | None = None) -> KafkaConnection:
    return KafkaConnection(secure_services.stack_config.kafka_sasl_bootstrap, "SASL_SSL", mechanism, "touchstream",
                           password or tls.secret("sasl"), cafile=cafile or tls.ca_cert)


def mutual(secure_services: Any, tls: TlsMaterial, *, certificate: bool = True) -> KafkaConnection:
    files = {"certfile": tls.client_cert, "keyfile": tls.client_key,
             "key_password": tls.secret("client-key")} if certificate else {}
    return KafkaConnection(secure_services.stack_config.kafka_ssl_bootstrap, "SSL", cafile=tls.ca_cert, **files)


async def round_trip(conn: KafkaConnection, topic: str) -> bytes:
    """Produce one record (acks=all, idempotent) and read it back."""
    value = uuid.uuid4().bytes
    producer = AIOKafkaProducer(**conn.client_args(), acks="all", enable_idempotence=True, request_timeout_ms=15000)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(**conn.client_args(), enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        got = await consumer.getmany(tp, timeout_ms=10000, max_records=1)
        return got[tp][0].value
    finally:
        await consumer.stop()


async def make_topic(secure_services: Any) -> str:
    name = f"sec-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=secure_services.kafka_bootstrap)
    await admin.start()
    try:
        from aiokafka.admin import NewTopic

        await admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        await admin.close()
    return name


# --- Kafka ------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
async def test_sasl_ssl_with_each_mechanism(secure_services: Any, tls: TlsMaterial, mechanism: str) -> None:
    topic = await make_topic(secure_services)
    conn = sasl(secure_services, tls, mechanism)
    value = await asyncio.wait_for(round_trip(conn, topic), 60)
    assert len(value) == 16


async def test_ssl_with_a_client_certificate_whose_key_is_encrypted(secure_services: Any, tls: TlsMaterial) -> None:
    topic = await make_topic(secure_services)
    assert len(await asyncio.wait_for(round_trip(mutual(secure_services, tls), topic), 60)) == 16


async def _refused(conn: KafkaConnection) -> BaseException:
    producer = AIOKafkaProducer(**conn.client_args(), request_timeout_ms=5000, metadata_max_age_ms=5000)
    try:
        await asyncio.wait_for(producer.start(), 30)
    except BaseException as exc:  # noqa: BLE001 - any refusal will do; success is the failure
        return exc
    finally:
        await producer.stop()
    raise AssertionError(f"the broker accepted {conn!r}")


async def test_wrong_credentials_a_missing_certificate_and_another_ca_are_refused(
        secure_services: Any, tls: TlsMaterial, tmp_path: Path) -> None:
    other_ca = TlsMaterial(tmp_path / "other")
    other_ca.ensure()
    await _refused(sasl(secure_services, tls, password="not-the-password"))
    await _refused(mutual(secure_services, tls, certificate=False))
    exc = await _refused(sasl(secure_services, tls, cafile=other_ca.ca_cert))
    assert "certificate" in repr(exc).lower() or "bootstrap" in repr(exc).lower()


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHSTREAM_")}
    return subprocess.run([sys.executable, "-m", "touchstream.cli", *args], env={**base, **env},
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


async def test_topics_command_over_sasl_ssl_sets_retention_and_prints_no_secret(
        secure_services: Any, secrets: list[str]) -> None:
    prefix = f"s{uuid.uuid4().hex[:6]}."
    env = {**secure_services.secure, "TOUCHSTREAM_TOPIC_PREFIX": prefix, "TOUCHSTREAM_LOG_LEVEL": "DEBUG",
           "TOUCHSTREAM_DEADLETTER_RETENTION_MS": str(3 * DAY_MS)}
    result = await asyncio.to_thread(_cli, ["topics"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert not [s for s in secrets if s in output]
    assert "SASL" in output or "sasl" in output  # DEBUG lines of the handshake were there to leak
    settings = KafkaSettings(**{k.removeprefix("TOUCHSTREAM_").lower(): v for k, v in env.items()})
    admin = AIOKafkaAdminClient(**settings.kafka_connection().client_args())
    await admin.start()
    try:
        topics = Topics(prefix)
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in topics.all()])
        configs = {r[3]: {c[0]: c[1] for c in r[4]} for resp in described for r in resp.resources}
    finally:
        await admin.close()
    assert {name: configs[name]["retention.ms"] for name in topics.all()} == {
        topics.hits: str(7 * DAY_MS), topics.sessions: str(30 * DAY_MS), topics.events: str(7 * DAY_MS),
        topics.deadletter: str(3 * DAY_MS)}
    assert configs[topics.sessions]["cleanup.policy"] == "compact,delete"


# --- PostgreSQL -------------------------------------------------------------------------


async def test_verify_full_checks_the_ca_and_the_host_name(secure_services: Any, tmp_path: Path) -> None:
    dsn = secure_services.secure["TOUCHSTREAM_PG_WRITER_DSN"]
    assert "sslmode=verify-full" in dsn and "@localhost:" in dsn
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        row = await conn.fetchrow("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert row["ssl"] and row["version"] in ("TLSv1.2", "TLSv1.3")
        assert await conn.fetchval("SELECT current_user") == "touchstream_sink"
    finally:
        await conn.close()
    # The certificate names localhost, not 127.0.0.1: verify-full refuses, verify-ca (CA only) accepts.
    by_address = dsn.replace("@localhost:", "@127.0.0.1:")
    with pytest.raises(ssl.SSLCertVerificationError, match="(?i)hostname|IP address mismatch"):
        await asyncpg.connect(by_address, timeout=10)
    conn = await asyncpg.connect(by_address.replace("verify-full", "verify-ca"), timeout=10)
    await conn.close()
    other = TlsMaterial(tmp_path / "other")
    other.ensure()
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncpg.connect(dsn.split("sslrootcert=")[0] + f"sslrootcert={other.ca_cert}", timeout=10)
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
        await asyncpg.connect(dsn.split("?")[0] + "?sslmode=disable", timeout=10)


@pytest.fixture
async def secure_schema(secure_services: Any) -> Any:
    """A schema made by the owner login and migrated by `touchstream migrate` (as the owner)."""
    schema = f"s_{uuid.uuid4().hex[:8]}"
    owner = secure_services.secure["TOUCHSTREAM_PG_MIGRATE_DSN"]
    conn = await asyncpg.connect(owner, timeout=10)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.close()
    yield schema
    conn = await asyncpg.connect(owner, timeout=10)
    await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    await conn.close()


async def test_each_login_holds_one_role_and_can_do_only_its_part(
        secure_services: Any, secure_schema: str, secrets: list[str]) -> None:
    env = {**secure_services.secure, "TOUCHSTREAM_PG_SCHEMA": secure_schema}
    result = await asyncio.to_thread(_cli, ["migrate"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not [s for s in secrets if s in result.stdout + result.stderr]
    search = {"search_path": secure_schema}
    writer = await asyncpg.connect(env["TOUCHSTREAM_PG_WRITER_DSN"], timeout=10, server_settings=search)
    reader = await asyncpg.connect(env["TOUCHSTREAM_PG_ANALYST_DSN"], timeout=10, server_settings=search)
    try:
        member_of = "SELECT array_agg(r.rolname::text) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid " \
                    "WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = current_user)"
        assert await writer.fetchval(member_of) == ["touchstream_writer"]
        assert await reader.fetchval(member_of) == ["touchstream_analyst"]
        await writer.execute("SET ROLE touchstream_writer")
        assert await writer.fetchval("SELECT has_table_privilege('pageviews', 'INSERT')")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await writer.execute("CREATE TABLE stolen (x int)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await writer.execute("DELETE FROM pageviews")
        await reader.execute("SET ROLE touchstream_analyst")
        assert await reader.fetchval("SELECT count(*) FROM sessions") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.execute("INSERT INTO conversion_events (name) VALUES ('x')")
    finally:
        await writer.close()
        await reader.close()
