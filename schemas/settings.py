"""Settings every component shares. Each component's own settings class extends these.

All settings come from `TOUCHSTREAM_*` environment variables (pydantic-settings) and are
built once in a component's `__main__`, then passed down: library code never reads
`os.environ` itself.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "TOUCHSTREAM_"


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    kafka_bootstrap: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers, comma separated")
    topic_prefix: str = Field("touchstream.", description="prefix of every topic name")
    partitions: int = Field(8, ge=1, description="partition count of every topic (bounds parallelism)")
    replication_factor: int = Field(1, ge=1, description="replication factor of the topics the project creates")
    hits_retention_ms: int = Field(7 * 24 * 3600 * 1000, description="retention of `hits`: how far back a replay can reach")


class PostgresSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    pg_dsn: str = Field("postgresql://postgres@127.0.0.1:15432/touchstream", description="PostgreSQL DSN")
    pg_schema: str = Field("public", description="schema holding Touchstream's tables")


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
