"""The event-time clock of one `hits` partition (SPEC rule 7). Pure: `now` is an argument.

Event time of a partition is the newest `occurred_at` seen there, moved forward by the
wall-clock time that has passed since that hit arrived — but only while the partition has
nothing left to consume (consumer lag 0). So:

- live traffic: the newest hit arrived moments ago, so event time tracks the wall clock and a
  quiet device's session closes about `timeout` after its last hit, in real time;
- replay or catch-up after an outage: while records are still waiting, event time is only
  the newest `occurred_at` read so far, so nothing closes earlier than the data says; once
  the partition is caught up, sessions that really are idle close.

"Arrived" is the hit's `received_at`, the edge's clock when the hit reached Touchstream. It is
part of the record, so the clock is a function of the data and `now` alone: it survives a
restart (the clock is saved with the table, see `sessionizer.store`) and a replayed hit
counts as having arrived when it first did, not when it was read again. Because
`occurred_at <= received_at` (SPEC section 2), event time never runs ahead of the wall clock.

Event time never goes backwards: a late hit (older `occurred_at`) leaves it where it is.
"""

from __future__ import annotations

import struct

_FORMAT = struct.Struct("<Bqqq")
_VERSION = 1
_NONE = -(2**63)


class PartitionClock:
    __slots__ = ("newest_ms", "arrived_ms", "time_ms")

    def __init__(self, newest_ms: int | None = None, arrived_ms: int | None = None, time_ms: int | None = None) -> None:
        self.newest_ms = newest_ms    # newest occurred_at seen on the partition, epoch ms
        self.arrived_ms = arrived_ms  # received_at of that hit, epoch ms
        self.time_ms = time_ms        # the event time last given out (monotone)

    def observe(self, occurred_ms: int, received_ms: int) -> int:
        """A hit (or close record) was read from the partition; returns the event time after it."""
        if self.newest_ms is None or occurred_ms > self.newest_ms:
            self.newest_ms = occurred_ms
            self.arrived_ms = max(received_ms, occurred_ms)
        if self.time_ms is None or occurred_ms > self.time_ms:
            self.time_ms = occurred_ms
        return self.time_ms

    def now(self, wall_ms: int, caught_up: bool) -> int | None:
        """Event time at wall-clock `wall_ms`; `caught_up`: the partition has nothing left to consume.

        None until the partition has seen a hit (then nothing can be due anyway)."""
        if self.newest_ms is None:
            return self.time_ms
        if caught_up:
            assert self.arrived_ms is not None
            idle = wall_ms - self.arrived_ms
            if idle > 0:
                candidate = self.newest_ms + idle
                if self.time_ms is None or candidate > self.time_ms:
                    self.time_ms = candidate
        return self.time_ms

    # -- persistence (saved beside the device states, so a restart keeps closing on time) --

    def to_bytes(self) -> bytes:
        def enc(v: int | None) -> int:
            return _NONE if v is None else v

        return _FORMAT.pack(_VERSION, enc(self.newest_ms), enc(self.arrived_ms), enc(self.time_ms))

    @classmethod
    def from_bytes(cls, data: bytes | None) -> PartitionClock:
        if not data:
            return cls()
        version, newest, arrived, time_ms = _FORMAT.unpack(data)
        if version != _VERSION:
            raise ValueError(f"unknown clock format {version}")

        def dec(v: int) -> int | None:
            return None if v == _NONE else v

        return cls(dec(newest), dec(arrived), dec(time_ms))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PartitionClock) and (self.newest_ms, self.arrived_ms, self.time_ms) == (
            other.newest_ms, other.arrived_ms, other.time_ms)

    def __repr__(self) -> str:
        return f"PartitionClock(newest={self.newest_ms}, arrived={self.arrived_ms}, time={self.time_ms})"
