"""The sessionizer's settings: Kafka (shared), the session rules, and the worker's own knobs.

Every field is a `TOUCHSTREAM_<FIELD>` environment variable, e.g. `TOUCHSTREAM_SESSION_TIMEOUT_MS`
or `TOUCHSTREAM_SESSIONIZER_DATA_DIR`. Two workers on one machine need distinct
`sessionizer_web_port`s and `sessionizer_data_dir`s (the command line has `--web-port` and
`--data-dir` for that).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from schemas.settings import ENV_PREFIX, KafkaSettings, RuntimeSettings
from sessionizer.rules import HOUR_MS, MINUTE_MS, Rules


class SessionizerSettings(KafkaSettings, RuntimeSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # --- the session rules (SPEC section 3) -------------------------------------------------
    session_timeout_ms: int = Field(30 * MINUTE_MS, gt=0, description="rule 2: inactivity that ends a session")
    session_max_length_ms: int = Field(24 * HOUR_MS, gt=0, description="rule 3: longest a session may run")
    session_scope: Literal["device", "site"] = Field("device", description="rule 1: one session per guid, or per guid and site")
    session_split_on_campaign: bool = Field(False, description="rule 4: new campaign data starts a new session")
    session_midnight_tz: str | None = Field(None, description="rule 4: IANA zone whose midnight starts a new session (unset: off)")
    session_drop_bots: bool = Field(False, description="rule 11: drop crawler hits instead of flagging their sessions")
    session_record_dropped_bots: bool = Field(True, description="with drop_bots, account for each dropped hit as a late hit 'bot'")
    session_dedupe_size: int = Field(64, ge=1, le=4096, description="rule 8: recent hit ids remembered per device")
    session_allowed_lateness_ms: int = Field(
        24 * HOUR_MS, ge=0,
        description="rule 6: how far behind the partition's event time a hit is still placed in time order (older: late_hits, too_late)",
    )
    session_retained_hits: int = Field(
        256, ge=8, description="rule 6: most hits a device keeps for re-placing late hits (beyond it, older ones are too late)"
    )
    session_max_slots: int = Field(
        32, ge=1, le=4096, description="most scope keys (sites, under scope site) per device; a hit naming one more is dead-lettered"
    )
    session_max_state_bytes: int = Field(
        640 * 1024, ge=64 * 1024, le=900 * 1024,
        description="bytes of one device's state: beyond it retained hits are dropped (later late hits too late), then hits dead-lettered",
    )
    session_idle_ttl_days: float = Field(
        400.0, ge=0, description="a device idle this long (event time) leaves the sessionizer's state; its rows stay (0: never)"
    )

    # --- the worker -------------------------------------------------------------------------
    sessionizer_app_id: str = Field(
        "touchstream-sessionizer", description="Faust app id: consumer group, and prefix of the table's changelog topic"
    )
    sessionizer_data_dir: Path = Field(Path(".data/sessionizer"), description="RocksDB table files (one folder per worker)")
    sessionizer_web_port: int = Field(6066, ge=1, lt=65536, description="Faust web port: /metrics, /healthz (one per worker)")
    sessionizer_web_host: str = Field("127.0.0.1", description="address the web port binds")
    sessionizer_table: str = Field("devices", description="name of the Faust table (changelog: <app id>-<table>-changelog)")
    sessionizer_standby_replicas: int = Field(1, ge=0, description="Faust table standby replicas kept by other workers")
    sessionizer_batch_max: int = Field(20_000, ge=1, description="most hits processed in one batch (one changelog write per device)")
    sessionizer_fetch_max: int = Field(10_000, ge=1, description="most records one fetch hands over (max.poll.records)")
    sessionizer_inbox_max: int = Field(40_000, ge=1, description="fetched hits buffered before fetching pauses")
    sessionizer_tick_ms: int = Field(1_000, ge=10, description="how often an idle worker advances event time and closes sessions")
    sessionizer_sweep_max: int = Field(20_000, ge=1, description="most devices closed by time in one batch")
    sessionizer_idle_scan_max: int = Field(
        500, ge=1, description="stored devices looked at per batch for the idle TTL (a cursor goes round each partition)"
    )
    sessionizer_state_cache: int = Field(
        200_000, ge=0, description="decoded device states kept in memory (at least two rounds' worth, whatever is set)"
    )
    sessionizer_session_timeout_s: float = Field(
        10.0, ge=3.0, description="Kafka group session timeout: how soon a dead worker's partitions move on"
    )
    sessionizer_commit_interval_s: float = Field(2.0, gt=0, description="how often processed offsets are committed")
    sessionizer_linger_ms: int = Field(5, ge=0, description="producer linger")
    sessionizer_producer_batch_bytes: int = Field(1_000_000, ge=16_384, description="producer batch size (<= broker message.max.bytes)")
    sessionizer_compression: Literal["none", "gzip", "lz4", "zstd"] = Field("none", description="producer compression")
    sessionizer_event_loop: Literal["asyncio", "uvloop"] = Field(
        "asyncio", description="event loop of the worker (and of Faust's consumer thread)"
    )
    sessionizer_stats_file: Path | None = Field(None, description="write counters as JSON here every second (benchmarks, tests)")

    def rules(self) -> Rules:
        return Rules(
            timeout_ms=self.session_timeout_ms,
            max_length_ms=self.session_max_length_ms,
            scope=self.session_scope,
            split_on_campaign=self.session_split_on_campaign,
            midnight_tz=self.session_midnight_tz,
            drop_bots=self.session_drop_bots,
            record_dropped_bots=self.session_record_dropped_bots,
            dedupe_size=self.session_dedupe_size,
            lateness_ms=self.session_allowed_lateness_ms,
            retained_hits=self.session_retained_hits,
            max_slots=self.session_max_slots,
            max_state_bytes=self.session_max_state_bytes,
            idle_ttl_ms=round(self.session_idle_ttl_days * 86_400_000),
        )
