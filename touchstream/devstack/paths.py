"""Where the local stack keeps its files, and which ports it listens on.

Everything lives under one folder, ``<repo>/.stack/`` by default (ignored by git):

    .stack/
      stack.lock                  serialises concurrent `up`/`down` calls
      kafka/libs/                 the broker's jars, copied from Maven Central
      kafka/server.properties     rendered from the template in this package
      kafka/data/                 the KRaft log directory (formatted once)
      kafka/kafka.pid, kafka.log
      postgres/data/              the cluster (owned by the postgres user when run as root)
      postgres/log
      java/                       small compiled Java helpers used by tests

The repository root is found from this package's location; ``TOUCHSTREAM_STACK_DIR``
points the stack at any other folder. Ports come from ``TOUCHSTREAM_STACK_KAFKA_PORT``
(controller on the next port unless ``TOUCHSTREAM_STACK_KAFKA_CONTROLLER_PORT`` is set)
and ``TOUCHSTREAM_STACK_PG_PORT``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent

DEFAULT_KAFKA_PORT = 19092
DEFAULT_PG_PORT = 15432
DATABASE = "touchstream"
PG_USER = "postgres"


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


@dataclass(frozen=True)
class StackConfig:
    """One stack instance: its folder and its ports. ``from_env()`` gives the default one."""

    root: Path
    kafka_port: int = DEFAULT_KAFKA_PORT
    kafka_controller_port: int = DEFAULT_KAFKA_PORT + 1
    pg_port: int = DEFAULT_PG_PORT
    host: str = "127.0.0.1"
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
        return cls(root=root, kafka_port=kafka_port, kafka_controller_port=controller, pg_port=pg_port)

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
        return f"{self.host}:{self.kafka_port}"

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
        return f"postgresql://{PG_USER}@{self.host}:{self.pg_port}/{database}"

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

    def env(self) -> dict[str, str]:
        return {"TOUCHSTREAM_KAFKA_BOOTSTRAP": self.kafka_bootstrap, "TOUCHSTREAM_PG_DSN": self.pg_dsn}

    def export_lines(self) -> str:
        return "\n".join(f"export {k}={v}" for k, v in self.env().items())


def info(cfg: StackConfig) -> StackInfo:
    return StackInfo(kafka_bootstrap=cfg.kafka_bootstrap, pg_dsn=cfg.pg_dsn())
