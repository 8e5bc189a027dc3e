"""Shared fixtures: real services for integration and end-to-end tests.

Only tests that ask for them pay for them, so `pytest tests/unit` never touches a service.

Session scope
    services       -> Services: .kafka_bootstrap, .pg_dsn, .source ("env" | "stack" |
                      "testcontainers"), .env() and, on the local stack, fault injection:
                      `await services.stop_kafka(hard=False)`, `await services.start_kafka()`,
                      `await services.stop_postgres(hard=False)`, `await services.start_postgres()`.
                      Resolution: TOUCHSTREAM_KAFKA_BOOTSTRAP / TOUCHSTREAM_PG_DSN when set; else
                      the local stack (`touchstream stack up`, started if needed); else
                      testcontainers when a Docker engine answers; else the session fails.
                      Force one with TOUCHSTREAM_TEST_SERVICES=env|stack|testcontainers.
                      The resolved values are exported to os.environ, so components started
                      by a test (in process or as subprocesses) find them.
    fault_services -> Services of a private broker + PostgreSQL (free ports, wiped afterwards)
                      for tests that stop/start services: stopping the shared stack breaks every
                      other run using it. A fault-test module points all fixtures at it with
                          @pytest.fixture(scope="session")
                          def services(fault_services):
                              return fault_services
    secure_services -> the same with TLS (`stack up --tls`): .secure holds a production-like
                      client's settings (SASL_SSL, SCRAM-SHA-512; a verify-full DSN per login),
                      .tls the material (CA, client certificate, passwords); .kafka_bootstrap
                      and .pg_dsn stay the PLAINTEXT listener and the superuser, for setting up.
    cluster_services -> a private 3-broker KRaft cluster + PostgreSQL:
                      `await services.stop_broker(node_id, hard=True)`, `start_broker(node_id)`.

Function scope (each test gets its own, removed afterwards)
    topic_prefix   -> str like "t1a2b3c4d." whose topics hits/sessions/events/deadletter exist
                      (schemas.topics.create_topics, 8 partitions; `@pytest.mark.topic_partitions(n)`
                      changes that). Every topic whose name starts with the prefix is deleted
                      after the test, including ones the test created itself.
    topics         -> schemas.topics.Topics(topic_prefix): .hits, .sessions, .events, .deadletter
    pg_schema      -> PgSchema: .dsn (database touchstream), .schema (fresh, dropped afterwards),
                      .env() (TOUCHSTREAM_PG_DSN + TOUCHSTREAM_PG_SCHEMA), .search_path_dsn,
                      `await pg_schema.connect()` / `await pg_schema.create_pool()` (asyncpg,
                      search_path = the schema).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import urllib.parse
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

DEFAULT_PARTITIONS = 8


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "topic_partitions(n): partition count of the topics `topic_prefix` creates (default 8)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests under tests/integration and tests/e2e carry their marker (`-m "not e2e"` works)."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts:
            item.add_marker(pytest.mark.integration)
        elif "e2e" in parts:
            item.add_marker(pytest.mark.e2e)


# --- services -------------------------------------------------------------------------


@dataclass
class Services:
    kafka_bootstrap: str
    pg_dsn: str
    source: str  # "env" | "stack" | "testcontainers"
    stack_config: Any = None  # touchstream.devstack.StackConfig when source == "stack"
    private: bool = False  # a stack of this test session alone (fault_services)
    secure: dict[str, str] = field(default_factory=dict, repr=False)  # secure_services: a TLS client's settings
    _cleanup: list[Any] = field(default_factory=list, repr=False)

    def env(self) -> dict[str, str]:
        """The settings a component needs to reach these services."""
        return {"TOUCHSTREAM_KAFKA_BOOTSTRAP": self.kafka_bootstrap, "TOUCHSTREAM_PG_DSN": self.pg_dsn}

    def _require_stack(self, action: str) -> Any:
        if self.source != "stack":
            pytest.fail(f"{action} needs the local stack (`touchstream stack up`); the services of "
                        f"this session come from {self.source}. Unset TOUCHSTREAM_KAFKA_BOOTSTRAP/"
                        "TOUCHSTREAM_PG_DSN or set TOUCHSTREAM_TEST_SERVICES=stack.")
        if not self.private and action.startswith("stop"):
            warnings.warn(f"{action} on the shared local stack disturbs every other test run and "
                          "`make demo` using it; fault tests should use the `fault_services` fixture",
                          stacklevel=3)
        return self.stack_config

    # Fault injection (blocking work runs in a thread, so the test's event loop keeps going).
    async def stop_kafka(self, *, hard: bool = False) -> None:
        from touchstream import devstack

        await asyncio.to_thread(devstack.stop_kafka, self._require_stack("stop_kafka"), hard=hard)

    async def start_kafka(self) -> None:
        from touchstream import devstack

        await asyncio.to_thread(devstack.start_kafka, self._require_stack("start_kafka"))

    async def stop_broker(self, node_id: int, *, hard: bool = False) -> None:
        from touchstream import devstack

        await asyncio.to_thread(devstack.stop_broker, self._require_stack("stop_broker"), node_id, hard=hard)

    async def start_broker(self, node_id: int) -> float:
        from touchstream import devstack

        return await asyncio.to_thread(devstack.start_broker, self._require_stack("start_broker"), node_id)

    async def stop_postgres(self, *, hard: bool = False) -> None:
        from touchstream import devstack

        await asyncio.to_thread(devstack.stop_postgres, self._require_stack("stop_postgres"), hard=hard)

    async def start_postgres(self) -> None:
        from touchstream import devstack

        await asyncio.to_thread(devstack.start_postgres, self._require_stack("start_postgres"))


def _from_stack() -> Services:
    from touchstream.devstack import StackConfig, ensure_up

    cfg = StackConfig.from_env()
    info = ensure_up(cfg)
    return Services(info.kafka_bootstrap, info.pg_dsn, "stack", cfg)


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _from_testcontainers() -> Services:
    from testcontainers.community.kafka import KafkaContainer
    from testcontainers.community.postgres import PostgresContainer

    kafka = (KafkaContainer(os.environ.get("TOUCHSTREAM_TEST_KAFKA_IMAGE", "confluentinc/cp-kafka:7.6.0"))
             .with_kraft()
             .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
             .with_env("KAFKA_NUM_PARTITIONS", str(DEFAULT_PARTITIONS)))
    postgres = PostgresContainer("postgres:15", username="postgres", password="postgres",
                                 dbname="touchstream", driver=None)
    kafka.start(timeout=180)
    try:
        postgres.start()
    except Exception:
        kafka.stop()
        raise
    services = Services(kafka.get_bootstrap_server(), postgres.get_connection_url(), "testcontainers")
    services._cleanup += [postgres.stop, kafka.stop]
    return services


def resolve_services() -> Services:
    forced = os.environ.get("TOUCHSTREAM_TEST_SERVICES", "").strip().lower()
    env_kafka = os.environ.get("TOUCHSTREAM_KAFKA_BOOTSTRAP", "").strip()
    env_pg = os.environ.get("TOUCHSTREAM_PG_DSN", "").strip()
    problems: list[str] = []

    if forced in ("", "env") and env_kafka and env_pg:
        from touchstream.devstack import StackConfig

        cfg = StackConfig.from_env()
        if (env_kafka, env_pg) == (cfg.kafka_bootstrap, cfg.pg_dsn()):
            return _from_stack()  # the settings name the local stack: make sure it runs
        return Services(env_kafka, env_pg, "env")
    if forced == "env":
        pytest.fail("TOUCHSTREAM_TEST_SERVICES=env needs both TOUCHSTREAM_KAFKA_BOOTSTRAP and TOUCHSTREAM_PG_DSN",
                    pytrace=False)

    if forced in ("", "stack"):
        try:
            services = _from_stack()
        except Exception as exc:  # StackError, missing tools, ...
            problems.append(f"local stack (`touchstream stack up`): {exc}")
        else:
            # A single variable set on its own still wins over the stack's value.
            services.kafka_bootstrap = env_kafka or services.kafka_bootstrap
            services.pg_dsn = env_pg or services.pg_dsn
            if env_kafka or env_pg:
                services.source = "env"
            return services

    if forced in ("", "testcontainers"):
        if _docker_answers():
            try:
                return _from_testcontainers()
            except Exception as exc:
                problems.append(f"testcontainers: {exc}")
        else:
            problems.append("testcontainers: no Docker engine answers")

    pytest.fail(
        "integration tests need a Kafka broker and PostgreSQL, and none could be found or started:\n  - "
        + "\n  - ".join(problems or [f"unknown TOUCHSTREAM_TEST_SERVICES={forced!r}"])
        + "\nRun `make stack` (or `touchstream stack up`), or set TOUCHSTREAM_KAFKA_BOOTSTRAP and "
        "TOUCHSTREAM_PG_DSN.",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def services() -> Any:
    resolved = resolve_services()
    saved = {name: os.environ.get(name) for name in resolved.env()}
    os.environ.update(resolved.env())
    yield resolved
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    for stop in resolved._cleanup:
        with contextlib.suppress(Exception):
            stop()


WATCHDOG = """
import os, sys, time
from pathlib import Path
from touchstream.devstack import StackConfig, down
parent, root, kport, cport, pport, libs, brokers, tls = sys.argv[1:]
cfg = StackConfig(root=Path(root), kafka_port=int(kport), kafka_controller_port=int(cport),
                  pg_port=int(pport), kafka_libs=Path(libs), brokers=int(brokers), tls=tls == "1")
while True:
    try:
        os.kill(int(parent), 0)
    except ProcessLookupError:
        break
    if not cfg.root.exists():
        sys.exit(0)
    time.sleep(1)
down(cfg, wipe=True)
"""


@contextlib.contextmanager
def private_stack(tmp_path_factory: pytest.TempPathFactory, name: str, *, brokers: int = 1,
                  tls: bool = False) -> Any:
    """A broker (or cluster) and PostgreSQL of this test session alone, on free ports, wiped
    afterwards — or by a watchdog process when pytest dies without cleaning up."""
    from touchstream import devstack
    from touchstream.devstack.paths import NODE_PORT_STRIDE
    from touchstream.devstack.process import free_port, free_port_block, stack_port

    shared = devstack.StackConfig.from_env()
    kafka_port = free_port_block(NODE_PORT_STRIDE * brokers)
    pg_port = free_port()
    while kafka_port <= pg_port < kafka_port + NODE_PORT_STRIDE * brokers or stack_port(pg_port):
        pg_port = free_port()
    cfg = devstack.StackConfig(root=tmp_path_factory.mktemp(name) / "stack", kafka_port=kafka_port,
                               kafka_controller_port=kafka_port + 1, pg_port=pg_port,
                               kafka_libs=shared.kafka_libs_dir, brokers=brokers, tls=tls)
    cfg.root.mkdir(parents=True)
    watchdog = subprocess.Popen(
        [sys.executable, "-c", WATCHDOG, str(os.getpid()), str(cfg.root), str(cfg.kafka_port),
         str(cfg.kafka_controller_port), str(cfg.pg_port), str(cfg.kafka_libs_dir), str(brokers), "1" if tls else "0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        info = devstack.ensure_up(cfg)
    except Exception as exc:
        devstack.down(cfg, wipe=True)
        pytest.fail(f"could not start a private stack ({name}): {exc}", pytrace=False)
    try:
        yield Services(info.kafka_bootstrap, info.pg_dsn, "stack", cfg, private=True, secure=info.secure)
    finally:
        devstack.down(cfg, wipe=True)
        shutil.rmtree(cfg.root, ignore_errors=True)  # tells the watchdog to leave
        with contextlib.suppress(Exception):
            watchdog.wait(timeout=5)


@pytest.fixture(scope="session")
def fault_services(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A Kafka broker and PostgreSQL of this test session alone, for tests that stop and start
    them (`await fault_services.stop_postgres()`, ...): stopping the shared stack would break
    every other test run and demo using it. Started on free ports at first use (about 10 s;
    the jars are shared), wiped at the end of the session. In a fault-test module, make every
    fixture use it with

        @pytest.fixture(scope="session")
        def services(fault_services):
            return fault_services

    (then `topic_prefix`, `pg_schema` and the module's own fixtures live on the private stack).
    Its settings are not exported to os.environ: pass `fault_services.env()` to subprocesses.
    """
    with private_stack(tmp_path_factory, "fault-stack") as services:
        yield services


@pytest.fixture(scope="session")
def secure_services(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A private stack with TLS (`touchstream stack up --tls`): Kafka's SASL_SSL and mutual-TLS
    listeners, PostgreSQL over TLS with an owner, a writer and a reader login."""
    with private_stack(tmp_path_factory, "secure-stack", tls=True) as services:
        yield services


@pytest.fixture(scope="session")
def cluster_services(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A private 3-broker KRaft cluster (and PostgreSQL), for losing a broker under load."""
    with private_stack(tmp_path_factory, "cluster-stack", brokers=3) as services:
        yield services


# --- Kafka topics ---------------------------------------------------------------------


async def _wait_for_leaders(bootstrap: str, names: list[str], partitions: int, timeout: float = 30.0) -> None:
    """Until every partition of `names` has a leader (producers then never see a missing topic)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            described = await admin.describe_topics(names)
            ok = len(described) == len(names) and all(
                t["error_code"] == 0 and len(t["partitions"]) == partitions
                and all(p["leader"] >= 0 for p in t["partitions"]) for t in described)
            if ok:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"topics {names} have no leaders after {timeout:.0f}s: {described}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def delete_topics_with_prefix(bootstrap: str, prefix: str) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        doomed = [name for name in await admin.list_topics() if name.startswith(prefix)]
        if doomed:
            await admin.delete_topics(doomed)
        return doomed
    finally:
        await admin.close()


@pytest_asyncio.fixture
async def topic_prefix(services: Services, request: pytest.FixtureRequest) -> Any:
    from schemas.topics import Topics, create_topics

    marker = request.node.get_closest_marker("topic_partitions")
    partitions = int(marker.args[0]) if marker else DEFAULT_PARTITIONS
    prefix = f"t{uuid.uuid4().hex[:8]}."
    await create_topics(services.kafka_bootstrap, prefix, partitions)
    await _wait_for_leaders(services.kafka_bootstrap, Topics(prefix).all(), partitions)
    yield prefix
    try:
        await asyncio.wait_for(delete_topics_with_prefix(services.kafka_bootstrap, prefix), 30)
    except Exception as exc:  # e.g. a fault test left the broker stopped
        warnings.warn(f"could not delete the topics {prefix}*: {exc!r}", stacklevel=1)


@pytest.fixture
def topics(topic_prefix: str) -> Any:
    from schemas.topics import Topics

    return Topics(topic_prefix)


# --- PostgreSQL schemas ---------------------------------------------------------------


@dataclass(frozen=True)
class PgSchema:
    dsn: str  # the database (touchstream on the local stack); the schema is not in it
    schema: str

    @property
    def search_path_dsn(self) -> str:
        """The DSN with `options=-csearch_path=<schema>`: for tools with no schema setting."""
        parts = urllib.parse.urlsplit(self.dsn)
        query = urllib.parse.parse_qsl(parts.query)
        query.append(("options", f"-csearch_path={self.schema}"))
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    def env(self) -> dict[str, str]:
        return {"TOUCHSTREAM_PG_DSN": self.dsn, "TOUCHSTREAM_PG_SCHEMA": self.schema}

    def _settings(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        settings = dict(kwargs.pop("server_settings", None) or {})
        settings.setdefault("search_path", self.schema)
        return {**kwargs, "server_settings": settings}

    async def connect(self, **kwargs: Any) -> Any:
        import asyncpg

        return await asyncpg.connect(self.dsn, **self._settings(kwargs))

    async def create_pool(self, **kwargs: Any) -> Any:
        import asyncpg

        return await asyncpg.create_pool(self.dsn, **self._settings(kwargs))


@pytest_asyncio.fixture
async def pg_schema(services: Services) -> Any:
    import asyncpg

    schema = f"t_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(services.pg_dsn, timeout=30)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    yield PgSchema(dsn=services.pg_dsn, schema=schema)
    try:
        conn = await asyncpg.connect(services.pg_dsn, timeout=30)
        try:
            await conn.execute("SET lock_timeout = '20s'")
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
    except Exception as exc:  # e.g. a fault test left PostgreSQL stopped
        warnings.warn(f"could not drop schema {schema}: {exc!r}", stacklevel=1)


@pytest_asyncio.fixture
async def migrated(pg_schema: Any) -> Any:
    """pg_schema with every migration of the sink applied."""
    from sink.migrations import migrate

    await migrate(pg_schema.dsn, pg_schema.schema)
    return pg_schema


@pytest_asyncio.fixture
async def db(migrated: Any) -> Any:
    """An asyncpg connection to the migrated schema (superuser, search_path = the schema)."""
    conn = await migrated.connect()
    yield conn
    await conn.close()

