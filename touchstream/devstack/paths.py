"""Where the local stack keeps its files, and which ports it listens on.

Everything lives under one folder, ``<repo>/.stack/`` by default (ignored by git):

    .stack/
      stack.lock                  serialises concurrent `up`/`down` calls
      kafka/libs/                 the broker's jars, copied from Maven Central
      kafka/server.properties     rendered from the template in this package
      kafka/data/                 the KRaft log directory (formatted once)
      kafka/kafka.pid, kafka.log
      kafka-2/, kafka-3/, ...     the other brokers of a cluster (`up --brokers N`), laid out alike
      tls/                        the CA, certificates, keys and generated passwords (`up --tls`; mode 0600)
      postgres/data/              the cluster (owned by the postgres user when run as root); login
                                  postgres, password `ts-dev-password` (PG_PASSWORD, or
                                  TOUCHSTREAM_STACK_PG_PASSWORD), scram-sha-256
      postgres/log
      java/                       small compiled Java helpers used by tests

The repository root is found from this package's location; ``TOUCHSTREAM_STACK_DIR``
points the stack at any other folder. Ports come from ``TOUCHSTREAM_STACK_KAFKA_PORT``
(controller on the next port unless ``TOUCHSTREAM_STACK_KAFKA_CONTROLLER_PORT`` is set)
and ``TOUCHSTREAM_STACK_PG_PORT``. Each broker has a block of ports: its PLAINTEXT listener
(`p`), its controller (`p+1`), and with TLS a SASL_SSL listener (`p+2`) and an SSL listener that
requires a client certificate (`p+3`); broker k (from 0) starts its block at
``KAFKA_PORT + 10·k``. ``TOUCHSTREAM_STACK_KAFKA_BROKERS`` (or `up --brokers N`) sets the
number of brokers, ``TOUCHSTREAM_STACK_TLS=1`` (or `up --tls`) the TLS listeners.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

PACKAGE_DIR = Path(__file__).resolve().parent

DEFAULT_KAFKA_PORT = 19092
NODE_PORT_STRIDE = 10  # broker k's ports start at kafka_port + k * NODE_PORT_STRIDE
DEFAULT_PG_PORT = 15432
DATABASE = "touchstream"
PG_USER = "postgres"
# The dev stack's PostgreSQL asks for a password (scram-sha-256), as a production server does: a
# client that sends none is refused. This one is documented, not secret (the same as
# docker-compose.yml's), so that the default DSN of every component reaches the stack as it is;
# the stack listens on loopback only. Production logins get their own (README, "Production
# connections"). TOUCHSTREAM_STACK_PG_PASSWORD replaces it for a stack on a shared machine: the
# DSNs the stack prints (and the tests' services) then carry it; the settings' default DSN keeps
# the documented one.
PG_PASSWORD = "ts-dev-password"


def repo_root() -> Path:
    """The checkout this package was imported from (falls back to the working directory)."""
    candidate = PACKAGE_DIR.parent.parent
    if (candidate / "pyproject.toml").is_file():
        return candidate
    return Path.cwd()


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise SystemExit(f"{name}={raw!r} is not a port number")
    return port


def _password(name: str) -> str:
    """The stack's PostgreSQL password from `name` (unset or empty: PG_PASSWORD). One line of
    printable characters: initdb reads it from the first line of a file."""
    raw = os.environ.get(name, "")
    if not raw:
        return PG_PASSWORD
    if len(raw) > 100 or not raw.isprintable():
        raise SystemExit(f"{name} must be 1-100 printable characters on one line")
    return raw


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class KafkaNode:
    """One broker of the stack (KRaft: broker and controller in one process)."""

    node_id: int  # from 1
    dir: Path
    host: str
    port: int  # PLAINTEXT (the stack's own probes, and clients of a stack without TLS)
    controller_port: int
    sasl_ssl_port: int  # with TLS: SASL (SCRAM-SHA-256/512, PLAIN) over TLS
    ssl_port: int  # with TLS: TLS with a client certificate required (mutual TLS)

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def properties(self) -> Path:
        return self.dir / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.dir / "kafka.pid"

    @property
    def log(self) -> Path:
        return self.dir / "kafka.log"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def ports(self, tls: bool) -> list[int]:
        return [self.port, self.controller_port] + ([self.sasl_ssl_port, self.ssl_port] if tls else [])


@dataclass(frozen=True)
class StackConfig:
    """One stack instance: its folder and its ports. ``from_env()`` gives the default one."""

    root: Path
    kafka_port: int = DEFAULT_KAFKA_PORT
    kafka_controller_port: int = DEFAULT_KAFKA_PORT + 1
    pg_port: int = DEFAULT_PG_PORT
    pg_password: str = field(default=PG_PASSWORD, repr=False)
    host: str = "127.0.0.1"
    brokers: int = 1
    tls: bool = False
    # The jar folder can be shared between stack instances (tests start a private stack
    # on other ports without downloading the jars again).
    kafka_libs: Path | None = field(default=None)

    @classmethod
    def from_env(cls) -> "StackConfig":
        raw_dir = os.environ.get("TOUCHSTREAM_STACK_DIR", "").strip()
        root = Path(raw_dir).expanduser().resolve() if raw_dir else repo_root() / ".stack"
        kafka_port = _port("TOUCHSTREAM_STACK_KAFKA_PORT", DEFAULT_KAFKA_PORT)
        controller = _port("TOUCHSTREAM_STACK_KAFKA_CONTROLLER_PORT", kafka_port + 1)
        pg_port = _port("TOUCHSTREAM_STACK_PG_PORT", DEFAULT_PG_PORT)
        raw_brokers = os.environ.get("TOUCHSTREAM_STACK_KAFKA_BROKERS", "").strip() or "1"
        if not raw_brokers.isdigit() or not 1 <= int(raw_brokers) <= 9:
            raise SystemExit(f"TOUCHSTREAM_STACK_KAFKA_BROKERS={raw_brokers!r} is not a broker count (1-9)")
        return cls(root=root, kafka_port=kafka_port, kafka_controller_port=controller, pg_port=pg_port,
                   pg_password=_password("TOUCHSTREAM_STACK_PG_PASSWORD"), brokers=int(raw_brokers),
                   tls=_flag("TOUCHSTREAM_STACK_TLS"))

    # --- Kafka nodes -------------------------------------------------------------------
    @property
    def kafka_nodes(self) -> list[KafkaNode]:
        nodes = []
        for k in range(self.brokers):
            base = self.kafka_port + k * NODE_PORT_STRIDE
            nodes.append(KafkaNode(
                node_id=k + 1,
                dir=self.root / ("kafka" if k == 0 else f"kafka-{k + 1}"),
                host=self.host,
                port=base,
                controller_port=self.kafka_controller_port if k == 0 else base + 1,
                sasl_ssl_port=base + 2,
                ssl_port=base + 3,
            ))
        return nodes

    def node(self, node_id: int) -> KafkaNode:
        return self.kafka_nodes[node_id - 1]

    @property
    def kafka_sasl_bootstrap(self) -> str:
        return ",".join(f"{n.host}:{n.sasl_ssl_port}" for n in self.kafka_nodes)

    @property
    def kafka_ssl_bootstrap(self) -> str:
        return ",".join(f"{n.host}:{n.ssl_port}" for n in self.kafka_nodes)

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    # --- Kafka -------------------------------------------------------------------------
    @property
    def kafka_dir(self) -> Path:
        return self.root / "kafka"

    @property
    def kafka_libs_dir(self) -> Path:
        return self.kafka_libs or self.kafka_dir / "libs"

    @property
    def kafka_data_dir(self) -> Path:
        return self.kafka_dir / "data"

    @property
    def kafka_properties(self) -> Path:
        return self.kafka_dir / "server.properties"

    @property
    def kafka_pid_file(self) -> Path:
        return self.kafka_dir / "kafka.pid"

    @property
    def kafka_log(self) -> Path:
        return self.kafka_dir / "kafka.log"

    @property
    def kafka_bootstrap(self) -> str:
        """The PLAINTEXT listeners of every broker."""
        return ",".join(n.bootstrap for n in self.kafka_nodes)

    # --- PostgreSQL --------------------------------------------------------------------
    @property
    def pg_dir(self) -> Path:
        return self.root / "postgres"

    @property
    def pg_data_dir(self) -> Path:
        return self.pg_dir / "data"

    @property
    def pg_log(self) -> Path:
        return self.pg_dir / "log"

    def pg_dsn(self, database: str = DATABASE) -> str:
        return f"postgresql://{PG_USER}:{quote(self.pg_password, safe='')}@{self.host}:{self.pg_port}/{database}"

    # --- misc --------------------------------------------------------------------------
    @property
    def java_dir(self) -> Path:
        return self.root / "java"

    @property
    def lock_file(self) -> Path:
        return self.root / "stack.lock"


@dataclass(frozen=True)
class StackInfo:
    """What a client needs: the settings every component reads."""

    kafka_bootstrap: str
    pg_dsn: str
    # A `--tls` stack: the settings of a production-like client (SASL_SSL, verify-full DSNs per login).
    secure: dict[str, str] = field(default_factory=dict, repr=False)
    secure_exports: dict[str, str] = field(default_factory=dict, repr=False)  # secrets as $(cat FILE)

    def env(self) -> dict[str, str]:
        """The PLAINTEXT listener and the superuser DSN (tests, the stack's own tools)."""
        return {"TOUCHSTREAM_KAFKA_BOOTSTRAP": self.kafka_bootstrap, "TOUCHSTREAM_PG_DSN": self.pg_dsn}

    def export_lines(self) -> str:
        """`export` lines for a shell: a `--tls` stack's secure settings, else the plain ones.
        Secrets are never in them: `$(cat FILE)` reads each one when the shell evaluates it."""
        if self.secure_exports:
            return "\n".join(f'export {k}="{v}"' for k, v in self.secure_exports.items())
        return "\n".join(f"export {k}={v}" for k, v in self.env().items())


def info(cfg: StackConfig) -> StackInfo:
    if not cfg.tls:
        return StackInfo(kafka_bootstrap=cfg.kafka_bootstrap, pg_dsn=cfg.pg_dsn())
    from .tls import client_settings

    def secure(reveal: bool) -> dict[str, str]:
        return client_settings(cfg.root, cfg.kafka_sasl_bootstrap, cfg.pg_port, DATABASE, reveal=reveal)

    return StackInfo(kafka_bootstrap=cfg.kafka_bootstrap, pg_dsn=cfg.pg_dsn(), secure=secure(True),
                     secure_exports=secure(False))
