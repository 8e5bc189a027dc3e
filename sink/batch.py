"""The sink's pure step: a batch of Kafka records -> rows per table.

    decode  each record with its topic's codec (schemas.wire); a record that cannot be read
            (not JSON, wrong schema version, wrong shape) becomes a `deadletter` row with the
            reason and its original bytes: the batch goes on;
    route   sessions -> `sessions` (snapshots) | `session_retractions` (SPEC rule 6: merged
            away); events -> `pageviews` | `events` | `late_hits` | `moves` | `move_ranges` by
            `kind`; deadletter -> `deadletter` (payload base64-decoded back to the original bytes);
    identity a pageview's, event's or late hit's `user_id` and `previous_guid` -> `identities` and
            `device_links` (migration 0009), coalesced to one row per key with the earliest and
            latest times; a value that cannot be stored is counted (`unusable_identities`), and
            its hit still lands
    coalesce a session's snapshots and retraction to the one of highest `version` per session_id
            (the upsert may touch a row only once per statement, and older ones would lose
            anyway); a hit's moves to its last (records of a device arrive in log order).

`moves` and `move_ranges` are not tables: the writer re-points `pageviews`/`events` rows with
them, after the batch's own rows are in.

No I/O here: `writer.py` takes a `Batch` to PostgreSQL, `consumer.py` feeds it from Kafka.
Every row keeps the `Origin` (topic, partition, offset, key, bytes) of the record it came
from, so a row PostgreSQL refuses can be dead-lettered with its original bytes.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from operator import attrgetter, itemgetter
from typing import Any, NamedTuple, Protocol

import orjson

from schemas.errors import FieldError, InvalidInput
from schemas.hit import MAX_USER_ID, NUL
from schemas.records import DeadLetter, EventRecord, HitMoveRecord, LateHitRecord, PageviewRecord, RangeMoveRecord
from schemas.session import SessionRetraction, SessionSnapshot
from schemas.timefmt import EPOCH, UTC
from schemas.topics import Topics
from schemas.wire import deadletter_codec, events_codec, session_codec
from sink.day_window import DayWindow

# --- tables and their columns, in the order rows are built -------------------------------

SESSION_COLUMNS = (
    "session_id", "guid", "session_index", "site", "status", "started_at", "last_seen_at", "ended_at",
    "end_reason", "duration_s", "landing_url", "landing_path", "exit_url", "referrer", "referrer_host",
    "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "utm_id", "click_id",
    "click_id_type", "channel", "ip", "user_agent", "browser", "os", "device_type", "is_bot", "pageviews",
    "events", "hits", "is_bounce", "version",
)
PAGEVIEW_COLUMNS = (
    "hit_id", "session_id", "guid", "site", "occurred_at", "received_at", "url", "path", "referrer", "title",
)
EVENT_COLUMNS = (
    "hit_id", "session_id", "guid", "site", "occurred_at", "received_at", "name", "module", "url", "value", "currency",
    "properties",
)
LATE_HIT_COLUMNS = ("hit_id", "guid", "occurred_at", "received_at", "reason", "hit")
RETRACTION_COLUMNS = ("session_id", "guid", "merged_into", "version")
MOVE_COLUMNS = ("hit_id", "occurred_at", "session_id", "is_event")
MOVE_RANGE_COLUMNS = ("guid", "from_session_id", "first_at", "last_at", "session_id")
IDENTITY_COLUMNS = ("guid", "user_id", "first_seen", "last_seen")
DEVICE_LINK_COLUMNS = ("guid", "previous_guid", "linked_at")
DEADLETTER_COLUMNS = (
    "consumed_topic", "consumed_partition", "consumed_offset", "consumed_timestamp", "source", "reason", "errors",
    "record_topic", "record_partition", "record_offset", "record_key", "hit_id", "refused_at", "payload",
)

COLUMNS: dict[str, tuple[str, ...]] = {
    "sessions": SESSION_COLUMNS,
    "pageviews": PAGEVIEW_COLUMNS,
    "events": EVENT_COLUMNS,
    "late_hits": LATE_HIT_COLUMNS,
    "deadletter": DEADLETTER_COLUMNS,
    "session_retractions": RETRACTION_COLUMNS,
    # re-pointing, applied after the rows above (in this order: a range covers a block of hits
    # whose single moves, if any, came before it)
    "moves": MOVE_COLUMNS,
    "move_ranges": MOVE_RANGE_COLUMNS,
    # identity stitching (migration 0009), coalesced per batch: one row per key
    "identities": IDENTITY_COLUMNS,
    "device_links": DEVICE_LINK_COLUMNS,
}
TABLES = tuple(COLUMNS)
# Staged with these column types (they have no table of their own to copy the shape of).
STAGED_ONLY = {
    "moves": "hit_id uuid, occurred_at timestamptz, session_id uuid, is_event bool",
    "move_ranges": "guid uuid, from_session_id uuid, first_at timestamptz, last_at timestamptz, session_id uuid",
    # (staged by shape, not LIKE: a schema migrated only up to 0008 has no such tables)
    "identities": "guid uuid, user_id text, first_seen timestamptz, last_seen timestamptz",
    "device_links": "guid uuid, previous_guid uuid, linked_at timestamptz",
}
IDENTITY_TABLES = ("identities", "device_links")
DAY_PARTITIONED = ("pageviews", "events")
OCCURRED_AT = {"pageviews": PAGEVIEW_COLUMNS.index("occurred_at"), "events": EVENT_COLUMNS.index("occurred_at")}
SESSION_VERSION = SESSION_COLUMNS.index("version")
SESSION_GUID = SESSION_COLUMNS.index("guid")

_session_values = attrgetter(*SESSION_COLUMNS)
_pageview_values = attrgetter(*PAGEVIEW_COLUMNS)
_event_values = attrgetter(*EVENT_COLUMNS[:-3])  # value is made exact, properties serialised, separately

Row = tuple[Any, ...]


class KafkaRecord(Protocol):
    """What the sink needs of a consumed record (aiokafka's ConsumerRecord has it)."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # epoch ms
    key: bytes | None
    value: bytes | None


class Origin(NamedTuple):
    """Where a row came from. A tuple: one is made per record, and a frozen dataclass costs 4x more."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # the Kafka record's, epoch ms
    key: bytes | None
    value: bytes

    @property
    def moment(self) -> datetime:
        return EPOCH + timedelta(milliseconds=self.timestamp)


@dataclass
class Batch:
    """Rows per table, each with the origin of the record it came from (parallel lists)."""

    rows: dict[str, list[Row]] = field(default_factory=lambda: {t: [] for t in TABLES})
    origins: dict[str, list[Origin]] = field(default_factory=lambda: {t: [] for t in TABLES})
    consumed: int = 0  # Kafka records this batch was made from
    tombstones: int = 0  # records with no value (compaction tombstones): nothing to write
    superseded: int = 0  # session snapshots replaced by a newer version of the same batch
    unusable_identities: int = 0  # a user_id or previous_guid that cannot be stored (never from the edge)

    def add(self, table: str, row: Row, origin: Origin) -> None:
        self.rows[table].append(row)
        self.origins[table].append(origin)

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.rows.values())

    def counts(self) -> dict[str, int]:
        return {t: len(self.rows[t]) for t in TABLES}

    def items(self) -> list[tuple[str, Row, Origin]]:
        return [(t, row, origin) for t in TABLES for row, origin in zip(self.rows[t], self.origins[t], strict=True)]

    def split(self) -> tuple[Batch, Batch]:
        """Two halves (by row), for isolating a row PostgreSQL refuses."""
        items = self.items()
        half = len(items) // 2
        left, right = Batch(), Batch()
        for n, (table, row, origin) in enumerate(items):
            (left if n < half else right).add(table, row, origin)
        return left, right

    def days(self, table: str) -> set[date]:
        """The UTC days a day-partitioned table's rows need a partition for.

        A batch nearly always spans a day or two: then every day from the first to the last is
        returned (min/max run in C; a per-row set costs a tenth of a batch's write). Rows spread
        over more than a week get exactly their days, so a stray old hit does not create years.
        """
        rows = self.rows[table]
        if not rows:
            return set()
        index = OCCURRED_AT[table]
        get = itemgetter(index)
        first, last = utc_day(get(min(rows, key=get))), utc_day(get(max(rows, key=get)))
        span = (last - first).days
        if span <= 7:
            return {first + timedelta(days=n) for n in range(span + 1)}
        return {utc_day(row[index]) for row in rows}

    def session_guids(self) -> list[str]:
        return sorted({row[SESSION_GUID] for row in self.rows["sessions"]}
                      | {row[1] for row in self.rows["session_retractions"]})


def utc_day(moment: datetime) -> date:
    if moment.utcoffset():
        moment = moment.astimezone(UTC)
    return moment.date()


# --- dead letters -------------------------------------------------------------------------


def _clean(text: str | None, limit: int = 8192) -> str | None:
    """PostgreSQL text cannot hold NUL; dead letters must never fail to be written."""
    if text is None:
        return None
    return text[:limit].replace("\x00", "\ufffd")


def _errors_json(errors: Iterable[dict[str, str]]) -> str:
    # jsonb refuses \u0000 as well.
    return orjson.dumps([{k: _clean(str(v)) for k, v in e.items()} for e in errors]).decode()


def _hit_id_of(value: bytes) -> str | None:
    """The hit_id of an unreadable record, when it can still be found (helps tracing)."""
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    hit_id = obj.get("hit_id") if isinstance(obj, dict) else None
    return _clean(hit_id, 64) if isinstance(hit_id, str) else None


def refusal_row(
    origin: Origin,
    reason: str,
    errors: Sequence[FieldError | dict[str, str]] = (),
    *,
    now: datetime,
    hit_id: str | None = None,
) -> Row:
    """A `deadletter` row for a record the sink itself refuses (source `sink`)."""
    key = origin.key.decode("utf-8", "replace") if origin.key is not None else None
    return (
        origin.topic, origin.partition, origin.offset, origin.moment,
        "sink", _clean(reason),
        _errors_json(e.as_dict() if isinstance(e, FieldError) else e for e in errors),
        origin.topic, origin.partition, origin.offset,
        _clean(key, 1024), hit_id if hit_id is not None else _hit_id_of(origin.value),
        now, origin.value,
    )


def _deadletter_row(letter: DeadLetter, origin: Origin) -> Row:
    errors = list(letter.errors)
    try:
        payload = base64.b64decode(letter.payload_b64, validate=True)
    except (binascii.Error, ValueError):
        payload = origin.value
        errors.append({"field": "payload_b64", "message": "is not base64; payload holds the whole dead letter"})
    return (
        origin.topic, origin.partition, origin.offset, origin.moment,
        letter.source, _clean(letter.reason), _errors_json(errors),
        _clean(letter.topic, 1024), letter.partition, letter.offset, _clean(letter.key, 1024),
        _clean(letter.hit_id, 64), letter.at, payload,
    )


# --- fast path for pageviews and events -----------------------------------------------------
#
# pydantic is most of the decoding cost. A well-formed pageview or event (nearly all of them) is
# read here with plain type checks instead; anything unusual (a missing or mistyped field, a
# naive or numeric time, another version) returns None and the record goes through the full
# codec, which accepts it the same way or refuses it with the reasons. So this path accepts a
# subset of what the codec accepts and gives the same row (tests/unit/sink compare the two).


class _Slow(Exception):
    """The fast path cannot vouch for this record."""


def _text(value: Any) -> str:
    if type(value) is str:
        return value
    raise _Slow


def _text_or_none(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    raise _Slow


def _amount(value: Any) -> Decimal | None:
    """A conversion's value as numeric: a float by its shortest repr (19.99, not the binary
    19.989999...), which is the number the hit's JSON held."""
    kind = type(value)
    if value is None:
        return None
    if kind is float:
        return Decimal(repr(value))
    if kind is int:
        return Decimal(value)
    raise _Slow  # the codec refuses it (or reads it as a number: then this runs again on that)


def _moment(value: Any) -> datetime:
    if type(value) is str:
        moment = datetime.fromisoformat(value)  # ValueError: the codec decides
        if moment.tzinfo is not None:
            return moment
    raise _Slow


def fast_events_row(raw: bytes) -> tuple[str, Row, Any, Any] | None:
    """("pageviews" | "events", row, user_id, previous_guid) for a plainly well-formed record (the
    last two strings or None, as the codec reads them; `Decoder._identity` checks they can be
    stored); None: ask the codec."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict or obj.get("v") != 1:
        return None
    kind = obj.get("kind")
    try:
        if kind == "pageview":
            return "pageviews", (
                _text(obj["hit_id"]), _text(obj["session_id"]), _text(obj["guid"]), _text(obj["site"]),
                _moment(obj["occurred_at"]), _moment(obj["received_at"]), _text(obj["url"]), _text(obj["path"]),
                _text(obj.get("referrer", "")), _text_or_none(obj.get("title")),
            ), _text_or_none(obj.get("user_id")), _text_or_none(obj.get("previous_guid"))
        if kind == "event":
            properties = obj.get("properties", {})
            if type(properties) is not dict:
                return None
            return "events", (
                _text(obj["hit_id"]), _text(obj["session_id"]), _text(obj["guid"]), _text(obj["site"]),
                _moment(obj["occurred_at"]), _moment(obj["received_at"]), _text(obj["name"]),
                _text_or_none(obj.get("module")), _text(obj["url"]), _amount(obj.get("value")),
                _text_or_none(obj.get("currency")), orjson.dumps(properties).decode(),
            ), _text_or_none(obj.get("user_id")), _text_or_none(obj.get("previous_guid"))
    except (KeyError, ValueError, _Slow):
        return None
    return None


# --- decode, route, coalesce ----------------------------------------------------------------


@dataclass(frozen=True)
class TopicRoles:
    """Which consumed topic feeds which part of the sink."""

    sessions: str
    events: str
    deadletter: str

    @classmethod
    def from_prefix(cls, prefix: str) -> TopicRoles:
        topics = Topics(prefix)
        return cls(topics.sessions, topics.events, topics.deadletter)

    def all(self) -> list[str]:
        return [self.sessions, self.events, self.deadletter]


class Decoder:
    """Decodes records into one `Batch`, a chunk at a time (`feed`), so a caller can yield to its
    event loop between chunks. Sessions are coalesced across every chunk fed."""

    def __init__(self, roles: TopicRoles, *, now: datetime, window: DayWindow | None = None) -> None:
        self.roles = roles
        self.now = now
        self.window = window
        self.batch = Batch()
        # session_id -> (table, index) of its newest snapshot or retraction in the batch
        self._latest: dict[str, tuple[str, int]] = {}
        self._moved: dict[str, int] = {}  # hit_id -> index into batch.rows["moves"]
        self._keys: dict[tuple[str, str, str], int] = {}  # (table, guid, other) -> index of its identity row

    def feed(self, records: Iterable[KafkaRecord]) -> Batch:
        batch, roles, now, window = self.batch, self.roles, self.now, self.window
        start, end = (window.start, window.end) if window is not None else (_BEGINNING, _END)
        for record in records:
            batch.consumed += 1
            value = record.value
            if value is None:
                batch.tombstones += 1
                continue
            origin = Origin(record.topic, record.partition, record.offset, record.timestamp, record.key, value)
            topic = record.topic
            try:
                if topic == roles.events:
                    fast = fast_events_row(value)
                    if fast is not None:
                        table, row, user_id, previous = fast
                        if start <= row[_FAST_OCCURRED_AT] < end:  # the common case, kept short
                            batch.rows[table].append(row)
                            batch.origins[table].append(origin)
                            if user_id is not None or previous is not None:
                                self._identity(row[2], user_id, previous, row[_FAST_OCCURRED_AT], origin)
                            continue
                        user_id = previous = None  # (dead-lettered below: it names nobody)
                    else:
                        user_id = previous = None
                        item = events_codec.decode(value)
                        kind = item.kind
                        if kind == "pageview":
                            table, row = "pageviews", _pageview_values(item)
                            user_id, previous = item.user_id, item.previous_guid
                        elif kind == "event":
                            table, row = "events", (*_event_values(item), _amount(item.value), item.currency,
                                                    orjson.dumps(item.properties).decode())
                            user_id, previous = item.user_id, item.previous_guid
                        elif kind == "late_hit":
                            row = (item.hit_id, item.guid, item.occurred_at, item.received_at, item.reason,
                                   orjson.dumps(item.hit).decode())
                            batch.add("late_hits", row, origin)
                            # a late or dropped hit still says who the device belongs to
                            user_id, previous = item.hit.get("user_id"), item.hit.get("previous_guid")
                            if user_id is not None or previous is not None:
                                self._identity(item.guid, user_id, previous, _aware(item.occurred_at), origin)
                            continue
                        else:
                            self._add_move(item, origin)
                            continue
                    occurred_at = row[OCCURRED_AT[table]]
                    if occurred_at.tzinfo is None:  # (the codec reads a naive time; the database takes it as UTC)
                        occurred_at = occurred_at.replace(tzinfo=UTC)
                    if not start <= occurred_at < end:  # its day has no partition, and gets none
                        reason, error = window.refusal(occurred_at)  # type: ignore[union-attr]
                        batch.add("deadletter", refusal_row(origin, reason, [error], now=now, hit_id=row[0]), origin)
                        continue
                    batch.add(table, row, origin)
                    if user_id is not None or previous is not None:
                        self._identity(row[2], user_id, previous, occurred_at, origin)
                elif topic == roles.sessions:
                    self._add_session(session_codec.decode(value), origin)
                elif topic == roles.deadletter:
                    batch.add("deadletter", _deadletter_row(deadletter_codec.decode(value), origin), origin)
                else:
                    batch.add("deadletter", refusal_row(origin, f"not a topic the sink reads: {topic}", now=now),
                              origin)
            except InvalidInput as exc:
                batch.add("deadletter", refusal_row(origin, exc.reason, exc.errors, now=now), origin)
        return batch


    def _identity(self, guid: str, user_id: Any, previous: Any, at: datetime, origin: Origin) -> None:
        """The identity row (guid, user_id) and the link row (guid, previous_guid) a hit gives,
        coalesced with the batch's others: first_seen/linked_at the earliest, last_seen the latest."""
        batch = self.batch
        if user_id is not None:
            if usable_user_id(user_id):
                self._coalesce("identities", (guid, user_id, at, at), origin)
            else:
                batch.unusable_identities += 1
        if previous is not None:
            if type(previous) is str and _CANONICAL_UUID.fullmatch(previous) and previous != guid:
                self._coalesce("device_links", (guid, previous, at), origin)
            elif previous != guid:
                batch.unusable_identities += 1

    def _coalesce(self, table: str, row: Row, origin: Origin) -> None:
        rows = self.batch.rows[table]
        key = (table, row[0], row[1])
        at = self._keys.get(key)
        if at is None:
            self._keys[key] = len(rows)
            self.batch.add(table, row, origin)
            return
        old = rows[at]
        if table == "identities":
            rows[at] = (old[0], old[1], min(old[2], row[2]), max(old[3], row[3]))
        else:
            rows[at] = (old[0], old[1], min(old[2], row[2]))

    def _add_session(self, item: SessionSnapshot | SessionRetraction, origin: Origin) -> None:
        """Keep the highest version per session_id, snapshot or retraction."""
        batch = self.batch
        if type(item) is SessionRetraction:
            table, row = "session_retractions", (item.session_id, item.guid, item.merged_into, item.version)
        else:
            table, row = "sessions", _session_values(item)
        seen = self._latest.get(item.session_id)
        if seen is None:
            self._latest[item.session_id] = (table, len(batch.rows[table]))
            batch.add(table, row, origin)
            return
        batch.superseded += 1
        seen_table, at = seen
        # Equal versions are the same record re-sent: the later copy is as good.
        if item.version < batch.rows[seen_table][at][_VERSION[seen_table]]:
            return
        if seen_table == table:
            batch.rows[table][at] = row
            batch.origins[table][at] = origin
            return
        # A retraction replaces a snapshot or the reverse: drop the older from its list.
        del batch.rows[seen_table][at]
        del batch.origins[seen_table][at]
        for sid, (t, i) in self._latest.items():
            if t == seen_table and i > at:
                self._latest[sid] = (t, i - 1)
        self._latest[item.session_id] = (table, len(batch.rows[table]))
        batch.add(table, row, origin)

    def _add_move(self, item: HitMoveRecord | RangeMoveRecord, origin: Origin) -> None:
        batch = self.batch
        if type(item) is RangeMoveRecord:
            batch.add("move_ranges", (item.guid, item.from_session_id, item.first_at, item.last_at, item.session_id),
                      origin)
            return
        row = (item.hit_id, item.occurred_at, item.session_id, item.type == "event")
        at = self._moved.get(item.hit_id)
        if at is None:
            self._moved[item.hit_id] = len(batch.rows["moves"])
            batch.add("moves", row, origin)
        else:  # a later move of the same hit (log order) wins
            batch.rows["moves"][at] = row
            batch.origins["moves"][at] = origin


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def usable_user_id(value: Any) -> bool:
    """What `identities.user_id` holds: the edge's rule (schemas.hit.UserId), checked again because
    a row PostgreSQL refuses would dead-letter the record whose pageview was written."""
    return type(value) is str and 1 <= len(value) <= MAX_USER_ID and NUL not in value


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


_VERSION = {"sessions": SESSION_VERSION, "session_retractions": RETRACTION_COLUMNS.index("version")}
# No window: every row is inside.
_BEGINNING = datetime.min.replace(tzinfo=UTC)
_END = datetime.max.replace(tzinfo=UTC)
_FAST_OCCURRED_AT = OCCURRED_AT["pageviews"]
assert _FAST_OCCURRED_AT == OCCURRED_AT["events"]  # fast_events_row's rows of both tables


def decode_batch(
    records: Iterable[KafkaRecord],
    roles: TopicRoles,
    *,
    now: datetime,
    window: DayWindow | None = None,
) -> Batch:
    """Kafka records -> a `Batch`. Never raises for bad input: bad records become dead letters.

    `window`: pageviews/events outside it (older than the sink's row age or its retention,
    or beyond the days created ahead) would create a day partition of their own; they are
    dead-lettered with the reason instead.
    """
    return Decoder(roles, now=now, window=window).feed(records)


# Re-exported for tests and the benchmark, which build records from these models.
__all__ = [
    "COLUMNS", "DAY_PARTITIONED", "STAGED_ONLY", "TABLES", "Batch", "DeadLetter", "Decoder", "EventRecord",
    "KafkaRecord", "LateHitRecord",
    "Origin", "PageviewRecord", "SessionSnapshot", "TopicRoles", "decode_batch", "refusal_row", "utc_day",
]
