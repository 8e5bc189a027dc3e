"""Timestamps as the contract accepts them: ISO 8601 with a zone, or epoch milliseconds."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from pydantic_core import PydanticCustomError

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Outside this range a timestamp is a bug on the device, not a time: refuse it rather than store year 50000.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def parse_timestamp(value: object) -> datetime | None:
    """ISO 8601 string with a zone, or epoch milliseconds (int/float), to an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, bool):  # bool is an int to Python; true is not a time
        raise PydanticCustomError("timestamp", "must be an ISO 8601 time with a zone or epoch milliseconds")
    if isinstance(value, (int, float)):
        try:
            parsed = EPOCH + timedelta(milliseconds=value)
        except (OverflowError, ValueError):
            raise PydanticCustomError("timestamp", "epoch milliseconds out of range") from None
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise PydanticCustomError(
                "timestamp", "must be an ISO 8601 time with a zone, e.g. 2026-03-02T09:00:00.000Z, or epoch milliseconds"
            ) from None
        if parsed.tzinfo is None:
            raise PydanticCustomError("timestamp", "must include a time zone (e.g. a trailing Z)")
        parsed = parsed.astimezone(UTC)
    elif isinstance(value, datetime):
        if value.tzinfo is None:
            raise PydanticCustomError("timestamp", "must include a time zone (e.g. a trailing Z)")
        parsed = value.astimezone(UTC)
    else:
        raise PydanticCustomError("timestamp", "must be an ISO 8601 time with a zone or epoch milliseconds")
    if not (EARLIEST <= parsed < LATEST):
        raise PydanticCustomError("timestamp", "must lie between the years 2000 and 2200")
    return parsed


_MS = timedelta(milliseconds=1)  # built once: to_ms runs once per hit in the sessionizer


def to_ms(value: datetime) -> int:
    """Aware datetime to epoch milliseconds (the session core computes in integers)."""
    return (value - EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    """Epoch milliseconds to an aware UTC datetime."""
    return EPOCH + timedelta(0, 0, 0, ms)  # positional: keyword arguments cost more, once per session snapshot


def iso(value: datetime) -> str:
    """UTC with millisecond precision and a trailing Z, the form the tracker sends."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
