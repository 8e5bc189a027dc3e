"""Settings every component shares. Each component's own settings class extends these.

All settings come from `TOUCHSTREAM_*` environment variables (pydantic-settings) and are
built once in a component's `__main__`, then passed down: library code never reads
`os.environ` itself.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.kafka_security import KafkaConnection

ENV_PREFIX = "TOUCHSTREAM_"

# A list setting written as one comma-separated variable (e.g. TOUCHSTREAM_INGEST_TRUSTED_PROXIES);
# a field of this type gets `split_commas` as its "before" validator.
CommaList = Annotated[list[str], NoDecode]


def split_commas(value: object) -> object:
    """A comma-separated variable as a list of its non-empty, stripped parts."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


DAY_MS = 24 * 3600 * 1000

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSettings(BaseSettings):
    """How every component reaches Kafka (brokers, TLS, SASL) and the topics it creates.

    `schemas.kafka_security` turns the connection part into aiokafka's and Faust's arguments,
    in one place; nothing else reads these fields to build a client.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    kafka_bootstrap: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers, comma separated")
    kafka_security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL over TLS: what managed Kafka wants)"
    )
    kafka_sasl_mechanism: SaslMechanism = Field(
        "SCRAM-SHA-512", description="SASL mechanism with SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
    )
    kafka_sasl_username: str = Field("", description="SASL user (SASL_* protocols)")
    kafka_sasl_password: SecretStr = Field(SecretStr(""), description="SASL password (SASL_* protocols); never logged")
    kafka_ssl_cafile: Path | None = Field(
        None, description="PEM file of the CA(s) that signed the brokers' certificates (unset: the system's CAs)"
    )
    kafka_ssl_certfile: Path | None = Field(
        None, description="PEM client certificate (chain) for brokers that ask for one (mutual TLS)"
    )
    kafka_ssl_keyfile: Path | None = Field(None, description="PEM private key of the client certificate")
    kafka_ssl_key_password: SecretStr = Field(
        SecretStr(""), description="password of an encrypted client key; never logged"
    )
    kafka_ssl_check_hostname: bool = Field(
        True, description="check that a broker's certificate names the host connected to (off only for tests)"
    )
    topic_prefix: str = Field("touchstream.", description="prefix of every topic name")
    partitions: int = Field(8, ge=1, description="partition count of every topic (bounds parallelism)")
    replication_factor: int = Field(1, ge=1, description="replication factor of the topics the project creates")
    min_insync_replicas: int = Field(
        2, ge=1, description="min.insync.replicas of the topics the project creates, capped at the replication "
        "factor: with acks=all, a write needs this many replicas"
    )
    hits_retention_ms: int = Field(7 * DAY_MS, ge=-1, description="retention of `hits`: how far back a replay can reach")
    sessions_retention_ms: int = Field(
        30 * DAY_MS, ge=-1, description="retention of `sessions` (compacted, and older snapshots deleted after this; "
        "-1: compaction only)"
    )
    events_retention_ms: int = Field(
        7 * DAY_MS, ge=-1, description="retention of `events`: how long a sink may be away and still catch up"
    )
    deadletter_retention_ms: int = Field(
        14 * DAY_MS, ge=-1, description="retention of `deadletter` (the sink keeps each one in PostgreSQL)"
    )

    @model_validator(mode="after")
    def _credentials(self) -> KafkaSettings:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password.get_secret_value()):
            raise ValueError(f"kafka_security_protocol={self.kafka_security_protocol} needs "
                             "TOUCHSTREAM_KAFKA_SASL_USERNAME and TOUCHSTREAM_KAFKA_SASL_PASSWORD")
        if (self.kafka_ssl_keyfile is None) != (self.kafka_ssl_certfile is None):
            raise ValueError("TOUCHSTREAM_KAFKA_SSL_CERTFILE and TOUCHSTREAM_KAFKA_SSL_KEYFILE go together")
        for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"TOUCHSTREAM_{name.upper()}={path} is not a readable file")
        return self

    def kafka_connection(self) -> KafkaConnection:
        """How a client reaches the brokers (`schemas.kafka_security`)."""
        return KafkaConnection.of(self)


class PostgresSettings(BaseSettings):
    """How to reach PostgreSQL: one DSN per kind of work, each falling back to `pg_dsn`.

    Three logins keep each part of the project to what it needs (SPEC section 7): migrations as
    the schema's owner (DDL), the sink as a login holding only the writer role, and the
    read-only side (report, journey, the dashboard) as a login holding only the analyst role.
    TLS is set in the DSN, as libpq does: `?sslmode=verify-full&sslrootcert=/path/ca.pem`.
    DSNs hold passwords: logs mask them (`schemas.logs`), messages show them without.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    pg_dsn: str = Field("postgresql://postgres:ts-dev-password@127.0.0.1:15432/touchstream", description="PostgreSQL DSN: the default "
                        "of the three below (a single login for everything: development)")
    pg_migrate_dsn: str | None = Field(
        None, description="DSN of the schema owner, for migrations and `forget` (DDL, deletes); unset: TOUCHSTREAM_PG_DSN"
    )
    pg_writer_dsn: str | None = Field(
        None, description="DSN of the sink's login, which should hold only the writer role; unset: TOUCHSTREAM_PG_DSN"
    )
    pg_analyst_dsn: str | None = Field(
        None, description="DSN of the read-only side (report, journey, dashboard), a login holding only the analyst "
        "role; unset: TOUCHSTREAM_PG_DSN"
    )
    pg_schema: str = Field("public", description="schema holding Touchstream's tables")

    @property
    def migrate_dsn(self) -> str:
        return self.pg_migrate_dsn or self.pg_dsn

    @property
    def writer_dsn(self) -> str:
        return self.pg_writer_dsn or self.pg_dsn

    @property
    def analyst_dsn(self) -> str:
        return self.pg_analyst_dsn or self.pg_dsn


class LogSettings(BaseSettings):
    """How every process logs (`schemas.logs`); the command line's own commands read these too."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    log_format: Literal["logfmt", "json"] = Field(
        "logfmt", description="log lines: logfmt (key=value) or json (one object a line), with component, worker and fields"
    )
    log_level: str = Field("INFO", description="log level (DEBUG, INFO, WARNING, ERROR); a command's --log-level wins")

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.strip().upper()
        if not isinstance(logging.getLevelName(value), int):
            raise ValueError(f"{value!r} is not a log level (DEBUG, INFO, WARNING, ERROR, CRITICAL)")
        return value


class RuntimeSettings(LogSettings):
    """How a component's Python process runs (each `__main__` applies them at start-up)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    gc_gen0_threshold: int = Field(
        50_000, ge=0,
        description="allocations between young-generation garbage collections (Python's default 700 "
        "re-walks the long-lived heap every few records); 0 keeps Python's defaults",
    )
