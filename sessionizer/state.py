"""What the sessionizer keeps per device (the Faust table value, keyed by guid), and its bytes.

SPEC rule 6 asks for the sessions that the rules give on a device's hits *sorted by time*,
whatever order they arrive in, within the allowed lateness. A late hit can merge sessions,
split one (a campaign hit, a max-length boundary that moves) or open one between others, so
the state keeps the hits themselves while they can still be re-placed, and only those:

Per scope key (the empty string under scope "device", the site under scope "site") a `Slot`:

- `sessions` the *retained* sessions, in time order: every session that a hit not yet too
             late could still change. Each holds its `elements` — one `Mark` per hit (what
             placing the hit again needs: its time, id, type and landing attributes) — in
             (time, hit_id) order, and its aggregate (counts, landing, exit) for publishing;
- `count`    sessions *frozen* before them (the first retained session has index count + 1);
- `floor`    hits at or before this time are too late for the slot (its frozen sessions and
             trimmed hits lie there);
- `closes`   the times of storage-cleared records (rule 12) inside the retained span.

A session freezes — its hits are dropped, only `count` and `floor` remember it — once event
time has passed `its last hit + timeout + allowed lateness`: no hit that is not too late can
reach it any more (a hit later than that is more than the timeout after it). So the state
holds a device's hits of the last `allowed lateness + timeout` of event time (24.5 h by
default), and a device that stays away shrinks back to a few dozen bytes.

Devices that send far more (crawlers) are bounded by `Rules.retained_hits`: beyond it the
oldest hits are *trimmed* into a `Block` — the aggregate of a run of hits, placed as one — and
the floor moves up to them. A block cannot be split again; a hit at or before the floor is too
late. Blocks also carry sessions of states written by the previous format (1), which kept
aggregates only.

Per device, `ring` holds the 64-bit fingerprints (sessionizer.identity.hit_fingerprint) of the
most recent hits the device placed, oldest first, at most `Rules.dedupe_size` (rule 8: client
retries repeat *recent* hits); retained marks catch the older duplicates of late hits.
`offset` is the newest `hits` offset applied (a redelivered record at or below it is a replay,
ignored exactly), and `version` is the device's snapshot counter: every snapshot or retraction
of any of its sessions takes the next value, so a session's versions only grow even when its
id is retracted by a merge and later given again by a split.

Bytes (format 3): b"\\x03", the ring's length (uint16 LE), three int64 LE times (`Times`: what
a partition's recovery and the idle sweep read without decoding the rest), the ring, then JSON:
`[guid, offset, version, [[key, count, floor, closes, [session, ...]], ...]]` with a session as
`[id, index, version, end_reason, channel, [element, ...]]`; its aggregate is recomputed from
the elements when read. A mark is a JSON array in `Mark` order (is_event as 0/1); after a
session's first mark, `t` is the gap to the previous mark, and the visit's fields (site, utm,
click id, IP, user agent, data-centre flag) are left out when they equal the previous mark's
(a mark of 19 values was written before the flag existed: it reads as False): a pageview then
costs about 70 bytes besides its URL, path and referrer. A block is `{"b": [...]}`. Each session keeps its
encoded elements and appends to them, so encoding a state costs its new hits, not all of them.
Format 2 (no times) and format 1 are still read.

`size` is what the state's bytes measured when last read or written, plus what the core added
since (an estimate): `Rules.max_state_bytes` is checked against it (sessionizer.machine).
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from typing import Any, Final, NamedTuple

import orjson

FORMAT = 3
_HEADER = struct.Struct("<BH")
# Format 3 adds, after the format and the ring's length, what a partition's recovery and the
# idle sweep need without decoding the JSON (sessionizer.machine.peek_deadline_ms, idle_since):
# the earliest `last` of an open session, the earliest `last` of a slot's oldest retained
# closed session, and the device's newest hit time (-1: none).
_TIMES = struct.Struct("<qqq")
_PREFIX = struct.Struct("<BHqqq")  # _HEADER + _TIMES in one call
_dumps = orjson.dumps
_Fragment = orjson.Fragment  # JSON already encoded, written as it is by dumps
_EMPTY = orjson.Fragment(b"[]")
_join = b"".join


class Times(NamedTuple):
    """The times in a format-3 state's header (-1: none)."""

    open_last: int     # min over slots of the open session's last hit
    closed_last: int   # min over slots of the oldest retained closed session's last hit
    last_seen: int     # the device's newest hit (retained, or frozen: the slots' floors)


class Mark(NamedTuple):
    """A retained hit: everything placing it again needs (its session's landing, if it leads one).

    The fields a visit repeats hit after hit (from `site` on: VISIT) come last, so that the
    bytes can leave them out when they equal the previous mark's."""

    t: int                 # occurred_at, epoch ms (what the rules compare)
    us: int                # the microseconds below t (the sink finds the hit's row by occurred_at)
    hit_id: str
    is_event: bool
    url: str               # the landing fields from here on
    path: str
    referrer: str
    referrer_host: str | None
    site: str              # VISIT: from here on
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
    datacenter: bool = False  # from a data-centre address (the edge's flag); marks of older states lack it

    @property
    def campaign(self) -> tuple[str | None, ...]:
        """Rule 4's campaign data: every utm field and the click id."""
        return self[9:17]  # (the campaign fields: see the note after Mark)

    @property
    def key(self) -> tuple[int, str]:
        return (self.t, self.hit_id)


REFERRER_HOST: Final = 7
VISIT: Final = 8
# Mark[9:17] is rule 4's campaign data (the utm fields and the click id). The core writes the slice
# out where it needs it: mypy (and so mypyc) types a literal slice of a NamedTuple, not a named one.
_MARK_FIELDS = len(Mark._fields)
_new_mark = tuple.__new__  # Mark(...) without the NamedTuple constructor's Python-level call


class Block:
    """Hits placed as one: the aggregate of a trimmed run of hits (or of a session of format 1).
    Its `sid` is the session its hits were last written under (the sink re-points them by it)."""

    __slots__ = ("first", "last", "pageviews", "events", "exit_url", "exit_at", "landing", "sid")

    def __init__(self, first: int, last: int, pageviews: int, events: int, exit_url: str | None, exit_at: int,
                 landing: Mark, sid: str) -> None:
        self.first = first
        self.last = last
        self.pageviews = pageviews
        self.events = events
        self.exit_url = exit_url
        self.exit_at = exit_at
        self.landing = landing
        self.sid = sid

    @property
    def key(self) -> tuple[int, str]:
        return (self.first, "")  # before a mark of the same millisecond

    def values(self) -> list[Any]:
        return [self.first, self.last, self.pageviews, self.events, self.exit_url, self.exit_at, self.sid,
                list(self.landing)]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Block) and self.values() == other.values()

    def __repr__(self) -> str:
        return f"Block({self.first}..{self.last}, {self.pageviews + self.events} hits, sid={self.sid})"


Element = Mark | Block


class Session:
    """One retained session: its elements in time order and the aggregate it is published with."""

    __slots__ = ("id", "index", "version", "end_reason", "channel", "elements",
                 "first", "last", "pageviews", "events", "exit_url", "exit_at", "landing",
                 "static", "raw", "json", "json_n")

    def __init__(self, id: str, index: int, version: int, end_reason: str | None, channel: str,  # noqa: A002
                 elements: list[Element]) -> None:
        self.id = id
        self.index = index
        self.version = version        # of the last snapshot published
        self.end_reason = end_reason  # None while open
        self.channel = channel        # of the landing (sessionizer.channel, computed when the landing changes)
        self.elements = elements
        # `static`: the snapshot fields that change only with the landing or the index, cached by
        # sessionizer.snapshot; `raw`: the JSON array of elements[:json_n] (never serialised),
        # each element relative to the one before it, and `json` the same as an orjson Fragment.
        self.static: dict[str, Any] | None = None
        self.raw = b"[]"
        self.json, self.json_n = _EMPTY, 0
        self.summarize()

    @classmethod
    def opened(cls, id: str, index: int, channel: str, mark: Mark) -> Session:  # noqa: A002
        """A new open session of one hit."""
        return cls(id, index, 0, None, channel, [mark])

    def summarize(self) -> None:
        """Recompute the aggregate from the elements (after they were re-placed or read)."""
        elements = self.elements
        head = elements[0]
        if len(elements) == 1 and not isinstance(head, Block):  # a session opened by a hit: no loop
            self.landing = head
            self.first = self.last = head[0]
            if head[3]:
                self.pageviews, self.events, self.exit_url, self.exit_at = 0, 1, None, -1
            else:
                self.pageviews, self.events, self.exit_url, self.exit_at = 1, 0, head[4], head[0]
            return
        pageviews = events = 0
        exit_url: str | None = None
        exit_at = -1
        last = -1
        for e in elements:
            if isinstance(e, Block):
                pageviews += e.pageviews
                events += e.events
                if e.exit_url is not None and e.exit_at >= exit_at:
                    exit_url, exit_at = e.exit_url, e.exit_at
                if e.last > last:
                    last = e.last
            else:  # (a mark, by position: is_event, url, t)
                t = e[0]
                if e[3]:
                    events += 1
                else:
                    pageviews += 1
                    exit_url, exit_at = e[4], t
                if t > last:
                    last = t
        self.landing = head.landing if isinstance(head, Block) else head
        self.first = head.first if isinstance(head, Block) else head[0]
        self.last = last
        self.pageviews = pageviews
        self.events = events
        self.exit_url = exit_url
        self.exit_at = exit_at

    def append(self, mark: Mark) -> None:
        """Add a hit later than every element (the in-order path)."""
        self.elements.append(mark)
        t = self.last = mark[0]
        if mark[3]:  # is_event
            self.events += 1
        else:
            self.pageviews += 1
            self.exit_url = mark[4]
            self.exit_at = t

    def insert(self, mark: Mark) -> None:
        """Add a hit inside the session's span, after its first element (a late hit that joins
        it): landing, first and last stay; the session's JSON is encoded again at the next write
        when the hit lands inside its encoded part (its successor's gap changes)."""
        elements = self.elements
        at = bisect_right(elements, (mark[0], mark[2]), key=_mark_key)
        elements.insert(at, mark)
        if mark[3]:  # is_event
            self.events += 1
        else:
            self.pageviews += 1
            # The latest pageview is the exit (elements after a mark are marks: blocks only lead).
            if not any(not e[3] for e in elements[at + 1:]):  # type: ignore[index]
                self.exit_url, self.exit_at = mark[4], mark[0]
        if at < self.json_n:  # (beyond the encoded prefix it is encoded with the rest, later)
            self.json_n = 0  # its successor's gap and omitted fields change too: encode them all again

    @property
    def hits(self) -> int:
        return self.pageviews + self.events

    @property
    def campaign(self) -> tuple[str | None, ...]:
        return self.landing[9:17]  # (Mark's campaign fields)

    def marks(self) -> int:
        return sum(1 for e in self.elements if not isinstance(e, Block))

    # -- bytes ----------------------------------------------------------------------------

    def reset(self, elements: list[Element]) -> None:
        """Take new elements (re-placed by a late hit): the aggregate and caches follow."""
        self.elements = elements
        self.static = None
        self.json_n = 0
        self.summarize()

    def values_json(self) -> tuple[Any, ...]:
        """The session as `DeviceState.to_bytes` writes it: its fields, and its elements as JSON
        already encoded (an orjson Fragment)."""
        # `append` only adds at the end, and `insert` (before the end) and `reset` set json_n to
        # 0, so `raw` is always the JSON of elements[:json_n]: an element is encoded once, and
        # again only when an element is inserted before it. New elements are encoded in one
        # call and spliced onto the array (one copy of the session's bytes per write).
        n = self.json_n
        elements = self.elements
        if n < len(elements):
            previous = elements[n - 1] if n else None
            new: list[Any] = []
            for e in elements[n:]:
                new.append(_element_values(e, previous))
                previous = e
            added = _dumps(new)
            # (a copy either way: a kept orjson result holds ~4 KiB of the heap, see _owned;
            # joined through memoryviews, the session's bytes are copied once, not three times)
            self.raw = _owned(added) if n == 0 else _join((memoryview(self.raw)[:-1], b",", memoryview(added)[1:]))
            self.json = _Fragment(self.raw)
            self.json_n = len(elements)
        return (self.id, self.index, self.version, self.end_reason, self.channel, self.json)

    def values(self) -> tuple[Any, ...]:
        return (self.id, self.index, self.version, self.end_reason, self.channel, list(self.elements))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Session) and self.values() == other.values()

    def __repr__(self) -> str:
        return (f"Session({self.id}, #{self.index} v{self.version} {self.first}..{self.last} {self.hits} hits, "
                f"end={self.end_reason})")


def _mark_key(e: Element) -> tuple[int, str]:
    return e[0], e[2]  # type: ignore[index]  # Mark.key without the property (callers pass marks only)


def _owned(data: bytes) -> bytes:
    """A copy of exactly its size, for JSON that is kept. orjson writes into a buffer of a few
    KiB and shrinks it in place, and glibc cannot reuse what the shrinking frees for the next
    such buffer: each kept result would hold ~4 KiB of the heap (measured: 200,000 kept
    `orjson.dumps` results of ~100 bytes take about 800 MB of RSS, their copies 31 MB), which a
    worker pays in page faults and memory."""
    return bytes(memoryview(data))


def _element_values(e: Element, previous: Element | None) -> Any:
    """An element as written: a block as {"b": [...]}, a mark as an array (see the module doc)."""
    if isinstance(e, Block):
        return {"b": e.values()}
    if previous is None or isinstance(previous, Block):
        return _mark_values(e, e[0])
    # (elements are in time order: t as the gap to the previous mark is a small number)
    # Field by field, not `e[VISIT:] == previous[VISIT:]`: compiled, the two slices cost more
    # than the comparisons (about 1.3 against 0.9 µs an element with the rest of this function).
    if (e[18] == previous[18] and e[17] == previous[17] and e[8] == previous[8] and e[9] == previous[9]
            and e[10] == previous[10] and e[11] == previous[11] and e[12] == previous[12]
            and e[13] == previous[13] and e[14] == previous[14] and e[15] == previous[15]
            and e[16] == previous[16] and e[19] == previous[19]):  # (user agent, IP, site, source first)
        return (e[0] - previous[0], e[1], e[2], 1 if e[3] else 0, e[4], e[5], e[6], e[7])
    return _mark_values(e, e[0] - previous[0])


def _mark_values(e: Mark, t: int) -> tuple[Any, ...]:
    """A mark as written in full, with `t` for its time (absolute, or the gap to the previous)."""
    return (t, e[1], e[2], 1 if e[3] else 0, e[4], e[5], e[6], e[7], e[8], e[9], e[10], e[11], e[12], e[13],
            e[14], e[15], e[16], e[17], e[18], e[19])


def _decode_elements(raw: list[Any]) -> list[Element]:
    elements: list[Element] = []
    previous: Mark | None = None
    for item in raw:
        if type(item) is dict:
            first, last, pageviews, events, exit_url, exit_at, sid, landing = item["b"]
            elements.append(Block(first, last, pageviews, events, exit_url, exit_at, Mark(*landing), sid))
            previous = None
            continue
        item[3] = bool(item[3])
        if previous is not None:
            item[0] += previous[0]
            if len(item) == VISIT:
                item.extend(previous[VISIT:])
        if len(item) == _MARK_FIELDS - 1:
            item.append(False)  # a mark written before `datacenter` existed
        previous = _new_mark(Mark, item)
        elements.append(previous)
    return elements


class Slot:
    """The sessions of one scope key: see the module docstring."""

    __slots__ = ("count", "floor", "sessions", "closes")

    def __init__(self, count: int = 0, floor: int = -1, sessions: list[Session] | None = None,
                 closes: list[int] | None = None) -> None:
        self.count = count
        self.floor = floor
        self.sessions: list[Session] = [] if sessions is None else sessions
        self.closes: list[int] = [] if closes is None else closes

    @property
    def latest(self) -> Session | None:
        return self.sessions[-1] if self.sessions else None

    @property
    def open(self) -> Session | None:
        """The open session (only the latest can be open)."""
        latest = self.sessions[-1] if self.sessions else None
        return latest if latest is not None and latest.end_reason is None else None

    def marks(self) -> int:
        return sum(s.marks() for s in self.sessions)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Slot)
            and (self.count, self.floor, self.sessions, self.closes)
            == (other.count, other.floor, other.sessions, other.closes)
        )

    def __repr__(self) -> str:
        return f"Slot(count={self.count}, floor={self.floor}, sessions={self.sessions!r}, closes={self.closes})"


class DeviceState:
    __slots__ = ("guid", "ring", "slots", "offset", "version", "size")

    def __init__(self, guid: str, ring: bytes = b"", slots: dict[str, Slot] | None = None, offset: int = -1,
                 version: int = 0) -> None:
        self.guid = guid
        self.ring = ring
        self.slots: dict[str, Slot] = {} if slots is None else slots
        # The `hits` offset of the newest record applied, when the adapter passes offsets
        # (machine.on_hit(..., offset=)): a redelivered record at or below it is a replay.
        self.offset = offset
        self.version = version
        self.size = 0

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
        """Every retained session, per slot in time order."""
        return [s for slot in self.slots.values() for s in slot.sessions]

    def marks(self) -> int:
        return sum(slot.marks() for slot in self.slots.values())

    # -- bytes ----------------------------------------------------------------------------

    def times(self) -> Times:
        return Times._make(self._times())

    def _times(self) -> tuple[int, int, int]:
        open_last = closed_last = last_seen = -1
        for slot in self.slots.values():
            sessions = slot.sessions
            if not sessions:
                if slot.floor > last_seen:
                    last_seen = slot.floor
                continue
            latest = sessions[-1]
            if latest.last > last_seen:
                last_seen = latest.last
            if latest.end_reason is None and (open_last == -1 or latest.last < open_last):
                open_last = latest.last
            oldest = sessions[0]
            if oldest.end_reason is not None and (closed_last == -1 or oldest.last < closed_last):
                closed_last = oldest.last
        return open_last, closed_last, last_seen

    def to_bytes(self) -> bytes:
        body = _dumps((self.guid, self.offset, self.version, [
            (key, slot.count, slot.floor, slot.closes, [s.values_json() for s in slot.sessions])
            for key, slot in self.slots.items()
        ]))
        return _join((_PREFIX.pack(FORMAT, len(self.ring), *self._times()), self.ring, body))  # (one copy of body)

    @classmethod
    def from_bytes(cls, data: bytes) -> DeviceState:
        fmt, ring_len = _HEADER.unpack_from(data)
        start = _HEADER.size + (_TIMES.size if fmt >= 3 else 0)
        ring = bytes(data[start:start + ring_len])
        body = orjson.loads(data[start + ring_len:])
        if fmt == 1:
            return _from_format_1(ring, body)
        if fmt not in (2, FORMAT):  # (format 2 is format 3 without the times)
            raise ValueError(f"unknown DeviceState format {fmt}")
        guid, offset, version, raw_slots = body
        slots = {}
        for key, count, floor, closes, raw_sessions in raw_slots:
            sessions = [
                Session(sid, index, s_version, end_reason, channel, _decode_elements(elements))
                for sid, index, s_version, end_reason, channel, elements in raw_sessions
            ]
            slots[key] = Slot(count, floor, sessions, closes)
        state = cls(guid, ring, slots, offset, version)
        state.size = len(data)
        return state

    @staticmethod
    def peek(data: bytes) -> Times | None:
        """The header's times of stored bytes without decoding them (None: a format before 3)."""
        if data[0] < 3:
            return None
        return Times._make(_TIMES.unpack_from(data, _HEADER.size))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, DeviceState)
            and (self.guid, self.ring, self.slots, self.offset, self.version)
            == (other.guid, other.ring, other.slots, other.offset, other.version)
        )

    def __repr__(self) -> str:
        return f"DeviceState({self.guid}, {len(self.ring) // 8} fingerprints, v{self.version}, {self.slots!r})"


# -- format 1 (aggregates only): each session becomes one block ------------------------------

_FORMAT_1_FIELDS = (
    "id", "index", "version", "first", "last", "end_reason", "pageviews", "events", "exit_url", "exit_at",
    "url", "path", "site", "referrer", "referrer_host",
    "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "utm_id",
    "click_id", "click_id_type", "ip", "user_agent", "channel",
)


def _from_format_1(ring: bytes, body: list[Any]) -> DeviceState:
    guid, raw_slots, offset = body
    version = 0
    slots = {}
    for key, count, floor, open_, last in raw_slots:
        sessions = []
        for values in (last, open_):
            if values is None:
                continue
            old = dict(zip(_FORMAT_1_FIELDS, values))
            landing = Mark(
                t=old["first"], us=0, hit_id=old["id"], is_event=False,
                **{f: old[f] for f in Mark._fields[4:] if f in old},
            )
            block = Block(old["first"], old["last"], old["pageviews"], old["events"], old["exit_url"],
                          old["exit_at"], landing, old["id"])
            sessions.append(Session(old["id"], old["index"], old["version"], old["end_reason"], old["channel"],
                                    [block]))
            version = max(version, old["version"])
        # Format 1 counted every session opened; the retained ones are the last of them.
        slots[key] = Slot(count - len(sessions), floor, sessions, [])
    return DeviceState(guid, ring, slots, offset, version)
