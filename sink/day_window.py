"""The days whose pageviews and events the sink writes: a bounded window around today.

The sink creates a day partition for each day its rows need (`sink.partitions`). Rows outside
this window are dead-lettered with the reason instead, so no input can make it create a
partition for a day far from now (`sink.batch.Decoder` applies it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from schemas.errors import FieldError
from schemas.timefmt import UTC


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class DayWindow:
    """The UTC days whose pageviews and events the sink writes, and so the only days it creates
    partitions for: rows at `start` <= occurred_at < `end` are written, the others dead-lettered
    (`refusal` says why)."""

    start: datetime
    end: datetime
    expired_before: datetime | None = None  # retention's cutoff, when it is what bounds `start`

    @classmethod
    def around(cls, now: datetime, max_age_days: int, ahead_days: int, retention_days: int | None) -> DayWindow:
        """Today (UTC) minus `max_age_days` (or the retention cutoff, when later) to the end of
        the last day created ahead."""
        today = now.astimezone(UTC).date()
        first = today - timedelta(days=max_age_days)
        cutoff = retention_cutoff(retention_days, now)
        if cutoff is not None and cutoff > first:
            return cls(midnight(cutoff), midnight(today + timedelta(days=ahead_days + 1)), midnight(cutoff))
        return cls(midnight(first), midnight(today + timedelta(days=ahead_days + 1)))

    def refusal(self, occurred_at: datetime) -> tuple[str, FieldError]:
        """The dead letter's reason and error for a row outside the window."""
        if self.expired_before is not None and occurred_at < self.expired_before:
            return "expired: occurred before the retention window", FieldError(
                "occurred_at", f"is {occurred_at.isoformat()}; partitions before "
                               f"{self.expired_before.date().isoformat()} are dropped")
        return "outside the sink's day window", FieldError(
            "occurred_at", f"is {occurred_at.isoformat()}; the sink writes days {self.start.date().isoformat()} to "
                           f"{(self.end - timedelta(days=1)).date().isoformat()} (TOUCHSTREAM_SINK_MAX_ROW_AGE_DAYS)")


def retention_cutoff(retention_days: int | None, now: datetime | None = None) -> date | None:
    """The first day kept with `retention_days` (today counts as one), or None without retention."""
    if retention_days is None:
        return None
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    return today - timedelta(days=retention_days - 1)
