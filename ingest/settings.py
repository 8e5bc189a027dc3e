"""The edge's settings: `TOUCHSTREAM_*` environment variables, read once in `__main__`.

Lists (`TOUCHSTREAM_INGEST_CORS_ORIGINS`, `..._TRUSTED_PROXIES`, `..._ALLOWED_SITES`) are
comma separated. Every field documents its default; `touchstream ingest --help-settings`
prints them.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from ingest.datacentre import parse_ranges, read_ranges
from schemas.settings import CommaList, KafkaSettings, RuntimeSettings, split_commas

MiB = 1024 * 1024
IpMode = Literal["full", "truncate", "hash", "drop"]
Compression = Literal["none", "lz4", "gzip", "snappy", "zstd"]


class IngestSettings(KafkaSettings, RuntimeSettings):
    """Settings of the HTTP ingest edge (SPEC section 2). Extends the shared Kafka settings."""

    # --- serving ----------------------------------------------------------------------
    ingest_host: str = Field("127.0.0.1", description="address the edge listens on")
    ingest_port: int = Field(8080, ge=0, le=65535, description="port the edge listens on")
    ingest_workers: int = Field(1, ge=1, description="uvicorn worker processes")
    ingest_admin_host: str = Field("127.0.0.1", description="address of the admin listener (keep it off the internet)")
    ingest_admin_port: int = Field(
        0, ge=0, le=65535, description="admin listener: /metrics, and /readyz with the reason (0: none; the public "
        "port serves neither /metrics nor error details)"
    )

    # --- what a client may hold (ingest.connection) ------------------------------------
    ingest_read_timeout_s: float = Field(
        10.0, gt=0, description="a request (line, headers, body) must arrive within this from its first byte; "
        "else 408 and the connection closed (slow clients)"
    )
    ingest_read_timeout_spread: float = Field(
        0.2, ge=0, lt=1, description="each request's read deadline is drawn between (1 - this) and 1 times "
        "ingest_read_timeout_s, so that slow connections opened together are not all closed (and reopened) together"
    )
    ingest_max_header_bytes: int = Field(
        64 * 1024, ge=4096, description="request line and headers, at most; beyond it 431 and the connection closed"
    )
    ingest_max_connections: int = Field(
        1000, ge=1, description="open connections (and requests in progress) per worker, at most; beyond it "
        "new requests get 503 at once (keep it under the open-files limit)"
    )

    # --- what a request may hold ------------------------------------------------------
    ingest_max_body_bytes: int = Field(MiB, ge=1024, description="request body limit; beyond it 413")
    ingest_max_items: int = Field(500, ge=1, description="hits per request (array or NDJSON); beyond it 400")
    ingest_allowed_sites: CommaList = Field(
        default_factory=list, description="site allow-list (lower-case hosts); empty accepts every site"
    )
    ingest_max_hit_age_days: float = Field(
        31.0, gt=0, description="hits whose occurred_at lies more than this before received_at are refused "
        "(field created_at); raise it for a backfill"
    )
    ingest_cors_origins: CommaList = Field(
        default_factory=lambda: ["*"], description="browser origins allowed to post; `*` is any (no credentials)"
    )

    # --- client address ---------------------------------------------------------------
    ingest_trusted_proxies: CommaList = Field(
        default_factory=list,
        description="CIDRs of proxies whose X-Forwarded-For is believed (e.g. 10.0.0.0/8); empty: use the socket peer",
    )
    ingest_ip_mode: IpMode = Field(
        "truncate", description="stored IP: full | truncate (IPv4 /24, IPv6 /48) | hash | drop"
    )
    ingest_ip_hash_salt: SecretStr = Field(SecretStr(""), description="key of the blake2b hash when ip_mode = hash")
    ingest_datacenter_ranges: CommaList = Field(
        default_factory=list,
        description="CIDRs of data-centre networks: hits from them are marked datacenter (their session is_bot)",
    )
    ingest_datacenter_file: Path | None = Field(
        None, description="file of data-centre CIDRs, one a line (# comments), added to ingest_datacenter_ranges"
    )
    ingest_ip_hash_rotate_hours: int = Field(
        24, ge=0, le=8784,
        description="the hash key changes every this many hours (aligned to UTC midnight; 0: one key forever)",
    )

    # --- Kafka producer ---------------------------------------------------------------
    ingest_publish_timeout_s: float = Field(
        5.0, gt=0, description="longest a request waits for Kafka's acknowledgement before 503"
    )
    ingest_retry_after_s: int = Field(5, ge=1, description="Retry-After of a 503")
    ingest_linger_ms: float = Field(2.0, ge=0, description="how long a partition's batch waits for more hits when idle")
    ingest_max_batch_bytes: int = Field(256 * 1024, ge=1024, description="largest Kafka record batch (uncompressed)")
    ingest_buffer_bytes: int = Field(
        32 * MiB, ge=MiB, description="hits waiting for Kafka, at most; beyond it requests get 503 at once"
    )
    # zstd: on batches of hits it gives the smallest batches for little edge CPU; snappy and lz4
    # compress less, and aiokafka's lz4 (LZ4-HC level 9) is the slowest (`bench/micro_bench.py`
    # measures sizes and times; `bench/ingest_bench.py --compression` the whole edge).
    ingest_compression: Compression = Field(
        "zstd", description="Kafka batch compression (zstd: the smallest batches of hits, for little CPU)"
    )
    ingest_request_timeout_ms: int = Field(10_000, ge=1000, description="Kafka produce/metadata request timeout")
    ingest_ready_cache_s: float = Field(1.0, ge=0, description="how long /readyz reuses its Kafka metadata check")
    ingest_deadletter_payload_bytes: int = Field(
        64 * 1024, ge=1024, description="original bytes kept in a dead letter, at most (the rest is cut)"
    )
    ingest_deadletter_bytes_per_minute: int = Field(
        MiB, ge=0, description="original bytes kept in dead letters per client address (IPv6: /64) and minute; "
        "beyond it refusals still answer and dead-letter their reason, without the bytes"
    )

    # --- static -----------------------------------------------------------------------
    ingest_tracker_file: Path = Field(
        Path(__file__).resolve().parent / "static" / "tracker.js", description="file served as GET /v1/tracker.js"
    )
    ingest_tracker_max_age_s: int = Field(300, ge=0, description="Cache-Control max-age of the tracker")

    @model_validator(mode="after")
    def _admin_apart(self) -> IngestSettings:
        if self.ingest_admin_port and self.ingest_admin_port == self.ingest_port:
            raise ValueError("TOUCHSTREAM_INGEST_ADMIN_PORT must differ from TOUCHSTREAM_INGEST_PORT: "
                             "the admin routes are not for the public")
        return self

    @field_validator(
        "ingest_allowed_sites", "ingest_cors_origins", "ingest_trusted_proxies", "ingest_datacenter_ranges", mode="before"
    )
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return split_commas(value)

    @field_validator("ingest_allowed_sites")
    @classmethod
    def _lower_sites(cls, value: list[str]) -> list[str]:
        return [site.lower() for site in value]

    @field_validator("ingest_cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        return [origin.rstrip("/") for origin in value]

    @field_validator("ingest_trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an IP network (e.g. 10.0.0.0/8 or 2001:db8::/32)") from None
        return value

    @field_validator("ingest_datacenter_ranges")
    @classmethod
    def _datacenter_cidrs(cls, value: list[str]) -> list[str]:
        parse_ranges(value, "TOUCHSTREAM_INGEST_DATACENTER_RANGES")
        return value

    @field_validator("ingest_datacenter_file")
    @classmethod
    def _datacenter_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            read_ranges(value)  # a bad file fails at start-up, naming the line
        return value

    @model_validator(mode="after")
    def _salt_for_hash(self) -> IngestSettings:
        if self.ingest_ip_mode == "hash" and len(self.ingest_ip_hash_salt.get_secret_value()) < 16:
            raise ValueError("ingest_ip_mode=hash needs TOUCHSTREAM_INGEST_IP_HASH_SALT of at least 16 characters")
        return self
