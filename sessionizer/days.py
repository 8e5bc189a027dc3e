"""Calendar days in a time zone, for the optional midnight split (SPEC rule 4).

`day_number(ms, zone)` is the proleptic ordinal of the local date of an epoch-millisecond
instant. Consecutive hits mostly fall on the same day, so the bounds of the last day seen
per zone are remembered: a lookup is then two integer comparisons. DST days (23 or 25 hours)
are handled because bounds come from local midnights, not from 24 h steps.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from schemas.timefmt import UTC, from_ms, to_ms

# zone name -> (start_ms, end_ms, ordinal) of the last day looked up. A memo, not state:
# any value in it is correct for its range.
_last_day: dict[str, tuple[int, int, int]] = {}


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _local_midnight_ms(day: datetime, zone: ZoneInfo) -> int:
    midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
    return to_ms(midnight.astimezone(UTC))


def day_number(ms: int, zone_name: str) -> int:
    cached = _last_day.get(zone_name)
    if cached is not None and cached[0] <= ms < cached[1]:
        return cached[2]
    zone = _zone(zone_name)
    local = from_ms(ms).astimezone(zone)
    start = _local_midnight_ms(local, zone)
    end = _local_midnight_ms(local + timedelta(days=1), zone)
    ordinal = local.toordinal()
    if start <= ms < end:  # always, except in zones that skip a local midnight
        _last_day[zone_name] = (start, end, ordinal)
    return ordinal
