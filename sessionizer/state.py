"""What the sessionizer keeps per device (the Faust table value, keyed by guid), and its bytes.

Small by design — no list of hits. Per scope key (the empty string under scope "device",
the site under scope "site") a `Slot` holds:

- `open`  the open session, if any;
- `last`  the most recent closed session, kept whole so a late hit can rejoin it and a
          complete snapshot can be published again (SPEC rule 6);
- `count` sessions opened so far (the next session_index is count + 1);
- `floor` the last hit time of the newest session the slot has forgotten: nothing at or
          before it may join `last`, so sessions never overlap.

Per device, `ring` holds the 64-bit fingerprints (sessionizer.identity.hit_fingerprint) of the
most recent hits the device placed — applied to a session or recorded as late — oldest first,
at most `Rules.dedupe_size` of them (default 64, i.e. 512 bytes). That is the duplicate check
of rule 8 without a list of hits: client retries (sendBeacon, tracker queues) repeat *recent*
hits. A duplicate older than the last 64 hits of its device is not caught here; the sink's
primary key `(occurred_at, hit_id)` still stores its row once, but the session's counts would
include it. One ring per device (not per session) covers the open and the last closed session.

Redelivery after a crash is a different matter: the adapter may replay a whole batch, and an
in-order replay of more than 64 hits of one device defeats any bounded memory (each re-applied
hit pushes out the fingerprint of the next). So the adapter can pass each record's `hits`
offset (`on_hit(..., offset=n)`); the state keeps the newest one applied (`offset`) and any
record at or below it is a replay, ignored exactly, however many there are.

Bytes: b"\\x01" (format), the ring's length (uint16 LE), the ring, then orjson of
`[guid, [[key, count, floor, open | null, last | null], ...], offset]` with each session as a
flat list in `Session.FIELDS` order. With typical URLs and user agent: about 0.6 KiB for a
device with one open visit of a few hits, 1.4-1.7 KiB with an open and a closed session and a
full ring, however many hits the sessions hold.
"""

from __future__ import annotations

import struct
from operator import attrgetter
from typing import Any

import orjson

FORMAT = 1
_HEADER = struct.Struct("<BH")


class Session:
    """One session's state: its counters and the attributes of its landing (earliest) hit."""

    FIELDS = (
        "id", "index", "version", "first", "last", "end_reason", "pageviews", "events", "exit_url", "exit_at",
        "url", "path", "site", "referrer", "referrer_host",
        "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "utm_id",
        "click_id", "click_id_type", "ip", "user_agent", "channel",
    )
    # `static`: the snapshot fields that change only with the landing hit, cached in memory by
    # sessionizer.snapshot (never serialised; reset when the landing changes).
    __slots__ = (*FIELDS, "static")

    id: str               # session_id (sessionizer.identity.session_id of the opening hit)
    index: int            # session_index
    version: int          # of the last snapshot published
    first: int            # occurred_at of the earliest hit, epoch ms
    last: int             # occurred_at of the latest hit, epoch ms
    end_reason: str | None  # None while open
    pageviews: int
    events: int
    exit_url: str | None  # url of the latest pageview by occurred_at
    exit_at: int          # its occurred_at (-1 with no pageview yet)
    url: str              # landing attributes: all from the earliest hit
    path: str
    site: str
    referrer: str
    referrer_host: str | None
    utm_source: str | None
    utm_medium: str | None
    utm_campaign: str | None
    utm_term: str | None
    utm_content: str | None
    utm_id: str | None
    click_id: str | None
    click_id_type: str | None
    ip: str | None
    user_agent: str
    channel: str

    def __init__(
        self, id, index, version, first, last, end_reason, pageviews, events, exit_url, exit_at,  # noqa: A002
        url, path, site, referrer, referrer_host,
        utm_source, utm_medium, utm_campaign, utm_term, utm_content, utm_id,
        click_id, click_id_type, ip, user_agent, channel,
    ) -> None:  # positional, in FIELDS order: from_bytes builds sessions with Session(*values)
        self.id = id
        self.index = index
        self.version = version
        self.first = first
        self.last = last
        self.end_reason = end_reason
        self.pageviews = pageviews
        self.events = events
        self.exit_url = exit_url
        self.exit_at = exit_at
        self.url = url
        self.path = path
        self.site = site
        self.referrer = referrer
        self.referrer_host = referrer_host
        self.utm_source = utm_source
        self.utm_medium = utm_medium
        self.utm_campaign = utm_campaign
        self.utm_term = utm_term
        self.utm_content = utm_content
        self.utm_id = utm_id
        self.click_id = click_id
        self.click_id_type = click_id_type
        self.ip = ip
        self.user_agent = user_agent
        self.channel = channel
        self.static: dict[str, Any] | None = None

    @property
    def hits(self) -> int:
        return self.pageviews + self.events

    @property
    def campaign(self) -> tuple[str | None, ...]:
        """The campaign data rule 4's campaign_change compares (all utm fields and the click id)."""
        return (
            self.utm_source, self.utm_medium, self.utm_campaign, self.utm_term, self.utm_content, self.utm_id,
            self.click_id_type, self.click_id,
        )

    def values(self) -> tuple[Any, ...]:
        return _session_values(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Session) and self.values() == other.values()

    def __repr__(self) -> str:
        return f"Session({self.id}, #{self.index} v{self.version} {self.first}..{self.last} {self.hits} hits, end={self.end_reason})"


_session_values = attrgetter(*Session.FIELDS)


class Slot:
    """The sessions of one scope key: see the module docstring."""

    __slots__ = ("count", "floor", "open", "last")

    def __init__(self, count: int = 0, floor: int = -1, open: Session | None = None, last: Session | None = None) -> None:  # noqa: A002
        self.count = count
        self.floor = floor
        self.open = open
        self.last = last

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Slot)
            and (self.count, self.floor, self.open, self.last) == (other.count, other.floor, other.open, other.last)
        )

    def __repr__(self) -> str:
        return f"Slot(count={self.count}, floor={self.floor}, open={self.open!r}, last={self.last!r})"


class DeviceState:
    __slots__ = ("guid", "ring", "slots", "offset")

    def __init__(self, guid: str, ring: bytes = b"", slots: dict[str, Slot] | None = None, offset: int = -1) -> None:
        self.guid = guid
        self.ring = ring
        self.slots: dict[str, Slot] = {} if slots is None else slots
        # The `hits` offset of the newest record applied, when the adapter passes offsets
        # (machine.on_hit(..., offset=)): a redelivered record at or below it is a replay.
        self.offset = offset

    # -- duplicates (rule 8) --------------------------------------------------------------

    def has_seen(self, fingerprint: bytes) -> bool:
        ring = self.ring
        width = len(fingerprint)
        at = ring.find(fingerprint)
        while at != -1:
            if at % width == 0:
                return True
            at = ring.find(fingerprint, at + 1)
        return False

    def remember(self, fingerprint: bytes, size: int) -> None:
        ring = self.ring + fingerprint
        limit = size * len(fingerprint)
        self.ring = ring[-limit:] if len(ring) > limit else ring

    # -- reading --------------------------------------------------------------------------

    def open_sessions(self) -> int:
        return sum(1 for slot in self.slots.values() if slot.open is not None)

    def sessions(self) -> list[Session]:
        """Every session the state still holds, open and last closed, in no particular order."""
        return [s for slot in self.slots.values() for s in (slot.last, slot.open) if s is not None]

    # -- bytes ----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        slots = [
            [key, slot.count, slot.floor,
             None if slot.open is None else _session_values(slot.open),
             None if slot.last is None else _session_values(slot.last)]
            for key, slot in self.slots.items()
        ]
        return _HEADER.pack(FORMAT, len(self.ring)) + self.ring + orjson.dumps([self.guid, slots, self.offset])

    @classmethod
    def from_bytes(cls, data: bytes) -> DeviceState:
        fmt, ring_len = _HEADER.unpack_from(data)
        if fmt != FORMAT:
            raise ValueError(f"unknown DeviceState format {fmt}")
        start = _HEADER.size
        ring = bytes(data[start:start + ring_len])
        guid, raw_slots, offset = orjson.loads(data[start + ring_len:])
        slots = {
            key: Slot(count, floor,
                      None if open_ is None else Session(*open_),
                      None if last is None else Session(*last))
            for key, count, floor, open_, last in raw_slots
        }
        return cls(guid, ring, slots, offset)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, DeviceState)
            and (self.guid, self.ring, self.slots, self.offset) == (other.guid, other.ring, other.slots, other.offset)
        )

    def __repr__(self) -> str:
        return f"DeviceState({self.guid}, {len(self.ring) // 8} fingerprints, {self.slots!r})"
