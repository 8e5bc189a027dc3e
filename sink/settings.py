"""The sink's settings: Kafka + PostgreSQL (shared) and what only the sink reads.

Every field is a `TOUCHSTREAM_<FIELD>` environment variable (e.g. `TOUCHSTREAM_SINK_GROUP`).
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from schemas.settings import DAY_MS, ENV_PREFIX, KafkaSettings, PostgresSettings, RuntimeSettings

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


def _identifier(value: str) -> str:
    # Schema and role names are spliced into DDL (quoted), so refuse anything that is not a plain name.
    if not _IDENTIFIER.match(value):
        raise ValueError(f"{value!r} is not a plain SQL identifier (letters, digits, _ and $; at most 63)")
    return value


class SinkSettings(KafkaSettings, PostgresSettings, RuntimeSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # --- consumer ---------------------------------------------------------------------
    sink_group: str = Field("touchstream-sink", description="Kafka consumer group of the sink workers")
    sink_max_records: int = Field(
        5000, ge=1, description="most records taken from Kafka per batch (one DB transaction)"
    )
    sink_poll_timeout_ms: int = Field(500, ge=0, description="longest wait for records before writing what arrived")
    sink_max_poll_interval_ms: int = Field(
        300_000, ge=10_000, description="Kafka max.poll.interval.ms: a worker stuck longer than this leaves the group"
    )
    sink_session_timeout_ms: int = Field(10_000, ge=1_000, description="Kafka session.timeout.ms of the sink consumer")
    sink_auto_offset_reset: str = Field(
        "earliest", pattern="^(earliest|latest)$", description="where a new consumer group starts"
    )
    # --- PostgreSQL -------------------------------------------------------------------
    pg_writer_role: str = Field("touchstream_writer", description="role the migrations create for the sink's writes")
    sink_set_role: bool = Field(
        True, description="SET ROLE to pg_writer_role after connecting (off: write as the login role of the DSN)"
    )
    pg_analyst_role: str = Field("touchstream_analyst", description="read-only role created by the migrations")
    sink_migrate_on_start: bool = Field(True, description="run the migrations when a sink worker starts")
    attribution_lookback_days: int = Field(
        90, ge=1, le=365, description="attribution lookback (days) the migrations start with (migration 0010); "
        "afterwards `touchstream attribution set --lookback-days N` changes it")
    sink_connect_timeout_s: float = Field(10.0, gt=0, description="PostgreSQL connect timeout")
    sink_command_timeout_s: float = Field(120.0, gt=0, description="longest a single statement may take before the "
                                          "connection is dropped and the batch retried")
    sink_retry_initial_s: float = Field(0.2, gt=0, description="first wait before retrying a batch after a DB failure")
    sink_retry_max_s: float = Field(10.0, gt=0, description="longest wait between retries (exponential backoff)")
    # --- partitions -------------------------------------------------------------------
    sink_partitions_behind_days: int = Field(2, ge=0, description="day partitions kept ready before today (UTC)")
    sink_partitions_ahead_days: int = Field(7, ge=0, description="day partitions created ahead of today (UTC)")
    sink_retention_days: int | None = Field(
        None, ge=1, description="drop pageviews/events day partitions older than this many days (unset: keep all)"
    )
    sink_max_row_age_days: int = Field(
        45, ge=1, description="pageviews/events that occurred more than this many days before today (UTC), or "
        "after the days created ahead, are dead-lettered: no day partition is made outside that window "
        "(keep it above the edge's max hit age plus the hits retention)"
    )
    sink_deadletter_retention_days: int | None = Field(
        30, ge=1, description="delete deadletter rows refused more than this many days ago (off: keep all)"
    )
    sink_late_hits_retention_days: int | None = Field(
        30, ge=1, description="delete late_hits rows received more than this many days ago (off: keep all)"
    )
    sink_sessions_retention_days: int | None = Field(
        None, ge=1, description="delete closed sessions started more than this many days ago, and the devices "
        "row with a device's last session (unset/off: keep all)"
    )
    sink_identities_retention_days: int | None = Field(
        None, ge=0, description="delete identities whose user id was not seen on the device, and device links "
        "whose devices had no session, for this many days; persons are rebuilt from what remains (unset: the "
        "sessions retention, off when that is off; 0: keep all)"
    )
    sink_retractions_retention_days: int | None = Field(
        60, ge=1, description="delete session_retractions rows (merged-away sessions' tombstones) retracted more "
        "than this many days ago; must exceed the `sessions` and `hits` topics' retention (off: keep all; the "
        "default is off when `sessions` is compaction only)"
    )
    sink_retention_batch_rows: int = Field(
        2000, ge=1, description="rows one retention delete takes (one short transaction; more follow between batches)"
    )
    sink_maintenance_interval_s: float = Field(3600.0, gt=0, description="how often partitions/retention are checked")
    # --- the dashboard's rollups (sink/rollups.py) ---------------------------------------
    sink_rollup_interval_s: float = Field(
        5.0, ge=0, description="how often a sink worker folds the queued changes into the dashboard's rollups (one "
        "worker at a time): the most the dashboard's numbers lag the rows, plus one drain; 0: this worker never drains")
    sink_rollup_batch: int = Field(
        20_000, ge=1, description="most devices, and most conversion keys, folded per drain transaction (a backlog "
        "drains in several)")
    # --- metrics ----------------------------------------------------------------------
    sink_metrics_port: int = Field(
        9465, ge=0, lt=65536, description="Prometheus /metrics port of a sink worker (0: off)"
    )

    @field_validator("sink_deadletter_retention_days", "sink_late_hits_retention_days",
                     "sink_sessions_retention_days", "sink_retractions_retention_days", mode="before")
    @classmethod
    def _off(cls, value: object) -> object:
        # On by default, so an environment variable must be able to say "keep everything".
        if isinstance(value, str) and value.strip().lower() in ("", "off", "none"):
            return None
        return value

    @model_validator(mode="after")
    def _window_holds_the_days_kept_ready(self) -> SinkSettings:
        if self.sink_partitions_behind_days > self.sink_max_row_age_days:
            raise ValueError("sink_partitions_behind_days must not exceed sink_max_row_age_days (the days it "
                             "keeps ready would be outside the window of days it writes)")
        return self

    @model_validator(mode="after")
    def _tombstones_outlive_what_they_guard_against(self) -> SinkSettings:
        """A retraction may go only once no lower snapshot of its session can reach the sink: none
        left on `sessions` (its retention) and none a replay of `hits` can make again."""
        days = self.sink_retractions_retention_days
        if days is None:
            return self
        if self.sessions_retention_ms < 0:  # compaction only: an old snapshot may stay for ever
            if "sink_retractions_retention_days" in self.model_fields_set:
                raise ValueError("sink_retractions_retention_days must be off while sessions_retention_ms is -1 "
                                 "(compaction only keeps an older snapshot of a retracted session indefinitely)")
            self.sink_retractions_retention_days = None
            return self
        longest = max(self.sessions_retention_ms, self.hits_retention_ms)
        if days * DAY_MS <= longest:
            raise ValueError(f"sink_retractions_retention_days ({days}) must exceed the retention of the `sessions` "
                             f"and `hits` topics ({longest / DAY_MS:g} days): a snapshot replayed from them would "
                             "write a merged-away session back")
        return self

    @field_validator("pg_schema", "pg_writer_role", "pg_analyst_role")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        return _identifier(value)
