"""A merge as the pipeline makes it (SPEC rule 6), as Kafka records for the sink: two sessions of
one device and a lead, closed and written; then a late hit that bridges them, whose records
retract the later session (SessionRetraction) and move its hits (HitMoveRecord).

The records are what the pure core publishes for these hits (sessionizer.machine), encoded as on
the topics, to be written through the sink's real write path (decode_batch + Writer). Used by the
sink's merge tests and the dashboard's rollup tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schemas.timefmt import UTC
from schemas.views import encode_view
from schemas.wire import encode
from sessionizer.identity import session_id
from sink.batch import TopicRoles
from sink.testing import RecordStream
from tests.unit.sessionizer.driver import GUID, HOUR, MIN, T0, Partition, hit_id, make_hit

ROLES = TopicRoles.from_prefix("m.")
NOW = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)  # when the sink writes them
A, B = session_id(GUID, hit_id(1)), session_id(GUID, hit_id(2))  # the survivor, the one merged away
T0_DT = datetime.fromtimestamp(T0 / 1000, UTC)


class Recording(Partition):
    """The driver's partition, keeping the record views as published (to encode them as sent)."""

    def __init__(self) -> None:
        super().__init__()
        self.views: list[Any] = []

    def _collect(self, out: Any) -> None:
        self.views += out.records
        super()._collect(out)


def _records(part: Recording, since: tuple[int, int], rs: RecordStream) -> list[Any]:
    """The snapshots/retractions and events records `part` published after `since` (counts)."""
    snaps, recs = since
    out = [rs.record(ROLES.sessions, encode(s), key=s["session_id"].encode()) for s in part.snapshots[snaps:]]
    out += [rs.record(ROLES.events, encode_view(v), key=GUID.encode()) for v in part.views[recs:]]
    return out


def play() -> tuple[list[Any], list[Any]]:
    """(batch 1, batch 2): two closed sessions and a lead; then the bridging hit."""
    rs = RecordStream()
    part = Recording()
    part.hit(make_hit(T0, hid=1, url="https://www.oakridge-apts.com/?utm_source=google&utm_medium=cpc&gclid=Cj0"))
    part.hit(make_hit(T0 + 55 * MIN, hid=2, referrer="https://www.facebook.com/"))
    part.hit(make_hit(T0 + 56 * MIN, hid=3, type="event", event_name="lead"))
    part.advance(T0 + 5 * HOUR)  # both closed before the late hit comes
    first = _records(part, (0, 0), rs)
    mark = (len(part.snapshots), len(part.views))
    part.hit(make_hit(T0 + 28 * MIN, hid=4))  # 28 min after A's last hit, 27 before B's first
    second = _records(part, mark, rs)
    return first, second
