"""The session rules as settings (SPEC section 3). Plain data: the core takes them as an argument.

Defaults are the SPEC's defaults. The adapter builds one `Rules` from its settings at start and
passes it to every call of `sessionizer.machine`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Scope = Literal["device", "site"]

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS


@dataclass(frozen=True, slots=True)
class Rules:
    # Rule 2: a hit more than this after the session's last hit starts a new session;
    # a gap of exactly `timeout_ms` stays in the session.
    timeout_ms: int = 30 * MINUTE_MS
    # Rule 3: a hit more than this after the session's first hit starts a new session
    # (exactly `max_length_ms` stays).
    max_length_ms: int = 24 * HOUR_MS
    # Rule 1: one open session per guid ("device") or per guid and site ("site").
    scope: Scope = "device"
    # Rule 4, `campaign_change`: a hit carrying campaign data (any utm_* or click id) that
    # differs from the session's starts a new session.
    split_on_campaign: bool = False
    # Rule 4, `midnight`: a hit on another calendar day in this IANA zone starts a new
    # session. None turns the split off.
    midnight_tz: str | None = None
    # Rule 11: drop hits whose user agent is a crawler instead of keeping them flagged.
    drop_bots: bool = False
    # With `drop_bots`, still account for each dropped hit with a `late_hit` record
    # (reason "bot"), so SPEC section 6 ("every accepted hit ends up exactly once in
    # Postgres ... with a reason") holds. Turn off to drop crawler hits without a trace.
    record_dropped_bots: bool = True
    # Rule 8: how many recent hit ids a device remembers (as 64-bit hashes, 8 bytes each)
    # to ignore duplicates. Bounded so the state stays small; see sessionizer/state.py.
    dedupe_size: int = 64
    # Rule 6: how far behind the partition's event time a hit may be and still be placed as
    # time order has it (merging, splitting or inserting sessions); older hits are recorded
    # as late (`too_late`). The state keeps each device's hits of this span plus the timeout.
    lateness_ms: int = 24 * HOUR_MS
    # Rule 6, bounded: at most this many retained hits per device and scope key (sessionizer.state).
    # Beyond it the oldest are folded into one block and hits before them are too late.
    retained_hits: int = 256
    # Bounds against client-chosen input (SPEC section 3, "Bounded state"): at most this many
    # scope keys per device (under scope "site" every site a client names adds one) ...
    max_slots: int = 32
    # ... and a device's state at most about this many bytes: beyond it the core first drops
    # the hits it retains for re-placing (as `retained_hits` does), then refuses the hit
    # (sessionizer.machine.StateLimit: dead-lettered). Kept under the broker's default message
    # size (1 MiB) with room for one more hit, since the state is a changelog record.
    max_state_bytes: int = 640 * 1024
    # A device whose newest hit is this much older than its partition's event time, and that
    # retains nothing, leaves the state (its rows stay in PostgreSQL). 0: never. See `idle_after_ms`.
    idle_ttl_ms: int = 400 * 24 * HOUR_MS

    @property
    def idle_after_ms(self) -> int:
        """`idle_ttl_ms`, but never less than timeout + lateness: a device leaves only when no hit
        that is not too late could reach its sessions (0: never)."""
        return max(self.idle_ttl_ms, self.timeout_ms + self.lateness_ms) if self.idle_ttl_ms else 0

    def __post_init__(self) -> None:
        if self.timeout_ms <= 0:
            raise ValueError("timeout_ms must be positive")
        if self.max_length_ms < self.timeout_ms:
            raise ValueError("max_length_ms must be at least timeout_ms")
        if self.scope not in ("device", "site"):
            raise ValueError(f"scope must be 'device' or 'site', not {self.scope!r}")
        if self.lateness_ms < 0:
            raise ValueError("lateness_ms must not be negative")
        if self.retained_hits < 8:
            raise ValueError("retained_hits must be at least 8")
        if not 1 <= self.max_slots <= 4096:
            raise ValueError("max_slots must be between 1 and 4096")
        if not 64 * 1024 <= self.max_state_bytes <= 900 * 1024:
            raise ValueError("max_state_bytes must be between 64 KiB and 900 KiB (a state is one Kafka record)")
        if self.idle_ttl_ms < 0:
            raise ValueError("idle_ttl_ms must not be negative")
        if not 1 <= self.dedupe_size <= 4096:
            raise ValueError("dedupe_size must be between 1 and 4096")
        if self.midnight_tz is not None:
            from zoneinfo import ZoneInfo  # validate the zone name early, at start, not on the first hit

            ZoneInfo(self.midnight_tz)
