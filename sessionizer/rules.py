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
        if not 1 <= self.dedupe_size <= 4096:
            raise ValueError("dedupe_size must be between 1 and 4096")
        if self.midnight_tz is not None:
            from zoneinfo import ZoneInfo  # validate the zone name early, at start, not on the first hit

            ZoneInfo(self.midnight_tz)
