"""The pure step: Kafka records -> rows per table (decode, route, coalesce)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest

from schemas.timefmt import UTC
from schemas.wire import dead_letter, encode, events_codec
from sink.batch import COLUMNS, TABLES, Batch, Decoder, TopicRoles, _amount, decode_batch, fast_events_row, utc_day
from sink.day_window import DayWindow
from sink.testing import T0, RecordStream, event, late_hit, move, new_id, pageview, range_move, retraction, session

ROLES = TopicRoles.from_prefix("p.")
NOW = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)


def as_dicts(batch: Batch, table: str) -> list[dict]:
    return [dict(zip(COLUMNS[table], row, strict=True)) for row in batch.rows[table]]


def decode(records, **kwargs) -> Batch:
    return decode_batch(records, ROLES, now=NOW, **kwargs)


def test_routes_each_kind_to_its_table_in_column_order():
    rs = RecordStream()
    pv, ev, late, snap = pageview(), event(name="lead", module="contact_form"), late_hit(), session()
    batch = decode([rs.record(ROLES.events, pv), rs.record(ROLES.events, ev), rs.record(ROLES.events, late),
                    rs.record(ROLES.sessions, snap)])
    assert batch.counts() == {"sessions": 1, "pageviews": 1, "events": 1, "late_hits": 1, "deadletter": 0,
                              "session_retractions": 0, "moves": 0, "move_ranges": 0, "identities": 0,
                              "device_links": 0}
    assert batch.consumed == 4
    [p] = as_dicts(batch, "pageviews")
    assert p == {c: getattr(pv, c) for c in COLUMNS["pageviews"]}
    [e] = as_dicts(batch, "events")
    assert (e["hit_id"], e["name"], e["module"]) == (ev.hit_id, "lead", "contact_form")
    assert orjson.loads(e["properties"]) == ev.properties  # jsonb goes as JSON text
    [lh] = as_dicts(batch, "late_hits")
    assert lh["reason"] == late.reason and orjson.loads(lh["hit"]) == late.hit
    [s] = as_dicts(batch, "sessions")
    assert s == {c: getattr(snap, c) for c in COLUMNS["sessions"]}


def test_origins_follow_rows():
    rs = RecordStream()
    records = [rs.record(ROLES.events, pageview(), partition=3, key=b"k") for _ in range(3)]
    batch = decode(records)
    assert [(o.topic, o.partition, o.offset, o.key) for o in batch.origins["pageviews"]] == [
        (ROLES.events, 3, n, b"k") for n in range(3)]
    assert [o.value for o in batch.origins["pageviews"]] == [r.value for r in records]


@pytest.mark.parametrize("order", [[1, 3, 2], [3, 2, 1], [2, 1, 3]])
def test_sessions_coalesce_to_the_highest_version(order):
    rs = RecordStream()
    sid, guid = new_id(), new_id()
    records = [rs.record(ROLES.sessions, session(session_id=sid, guid=guid, version=v, pageviews=v)) for v in order]
    other = session()
    records.append(rs.record(ROLES.sessions, other))
    batch = decode(records)
    rows = {r["session_id"]: r for r in as_dicts(batch, "sessions")}
    assert set(rows) == {sid, other.session_id}
    assert rows[sid]["version"] == 3 and rows[sid]["pageviews"] == 3
    assert batch.superseded == 2
    # the origin is the record that carried version 3
    origin = batch.origins["sessions"][list(rows).index(sid)]
    assert origin.offset == order.index(3)


def test_an_equal_version_resent_keeps_one_row_from_the_later_record():
    rs = RecordStream()
    snap = session(version=5)
    batch = decode([rs.record(ROLES.sessions, snap), rs.record(ROLES.sessions, snap)])
    assert len(batch.rows["sessions"]) == 1
    assert batch.origins["sessions"][0].offset == 1


@pytest.mark.parametrize(
    ("topic", "raw", "reason"),
    [
        (ROLES.events, b"\xff not json", "not valid JSON"),
        (ROLES.events, b"[1, 2]", "not a JSON object"),
        (ROLES.sessions, orjson.dumps({"v": 2, "session_id": "x"}), "unsupported schema version"),
        (ROLES.events, orjson.dumps({"v": 1, "kind": "pageview", "hit_id": "h-1"}), "record does not match the schema"),
        (ROLES.events, orjson.dumps({"v": 1, "kind": "click", "hit_id": "h-2"}), "record does not match the schema"),
        (ROLES.deadletter, b"{}", "unsupported schema version"),
    ],
)
def test_unreadable_records_become_dead_letters_with_reason_and_bytes(topic, raw, reason):
    rs = RecordStream()
    good = pageview()
    batch = decode([rs.record(topic, raw, partition=2, key=b"guid-1"), rs.record(ROLES.events, good)])
    assert len(batch.rows["pageviews"]) == 1  # the batch goes on
    [dl] = as_dicts(batch, "deadletter")
    assert dl["reason"] == reason
    assert dl["source"] == "sink"
    assert dl["payload"] == raw
    assert (dl["consumed_topic"], dl["consumed_partition"], dl["consumed_offset"]) == (topic, 2, 0)
    assert dl["consumed_timestamp"] == T0  # the Kafka record's timestamp
    assert (dl["record_topic"], dl["record_partition"], dl["record_offset"]) == (topic, 2, 0)
    assert dl["record_key"] == "guid-1"
    assert dl["refused_at"] == NOW
    assert isinstance(orjson.loads(dl["errors"]), list) and orjson.loads(dl["errors"])


def test_a_refused_records_hit_id_is_kept_when_it_can_be_read():
    rs = RecordStream()
    raw = orjson.dumps({"v": 1, "kind": "pageview", "hit_id": "abc"})
    [dl] = as_dicts(decode([rs.record(ROLES.events, raw)]), "deadletter")
    assert dl["hit_id"] == "abc"
    errors = orjson.loads(dl["errors"])
    assert {"field": "pageview.session_id", "message": "is required"} in errors


def test_dead_letters_from_the_topic_keep_their_source_reason_and_original_bytes():
    rs = RecordStream()
    original = b"\x00\x01 not utf-8 \xff"
    letter = dead_letter("ingest", "invalid hit", original, topic="p.hits", partition=1, offset=77,
                         key=b"6f1c", hit_id="h-9", at=T0)
    batch = decode([rs.record(ROLES.deadletter, encode(letter), partition=5)])
    [dl] = as_dicts(batch, "deadletter")
    assert dl["payload"] == original
    assert (dl["source"], dl["reason"], dl["hit_id"], dl["record_key"]) == ("ingest", "invalid hit", "h-9", "6f1c")
    assert (dl["record_topic"], dl["record_partition"], dl["record_offset"]) == ("p.hits", 1, 77)
    assert (dl["consumed_topic"], dl["consumed_partition"], dl["consumed_offset"]) == (ROLES.deadletter, 5, 0)
    assert dl["refused_at"] == T0


def test_a_dead_letter_with_bad_base64_keeps_the_whole_record_as_payload():
    rs = RecordStream()
    letter = encode(dead_letter("sessionizer", "boom", b"x", at=T0)).replace(b'"eA=="', b'"***"')
    [dl] = as_dicts(decode([rs.record(ROLES.deadletter, letter)]), "deadletter")
    assert dl["payload"] == letter
    assert any(e["field"] == "payload_b64" for e in orjson.loads(dl["errors"]))


def test_nul_characters_never_reach_dead_letter_text():
    rs = RecordStream()
    letter = dead_letter("ingest", "bad\x00reason", b"x", key="k\x00", hit_id="h\x00", at=T0,
                         errors=None)
    raw = encode(letter)
    [dl] = as_dicts(decode([rs.record(ROLES.deadletter, raw)]), "deadletter")
    for column in ("reason", "record_key", "hit_id", "errors"):
        assert "\x00" not in dl[column] and "\\u0000" not in dl[column]


def test_tombstones_are_counted_not_written():
    rs = RecordStream()
    batch = decode([rs.record(ROLES.sessions, None)])
    assert len(batch) == 0 and batch.tombstones == 1 and batch.consumed == 1


def test_a_record_from_an_unexpected_topic_is_dead_lettered():
    rs = RecordStream()
    [dl] = as_dicts(decode([rs.record("elsewhere", b"{}")]), "deadletter")
    assert "elsewhere" in dl["reason"]


def test_rows_before_the_retention_window_are_dead_lettered_as_expired():
    rs = RecordStream()
    now = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
    window = DayWindow.around(now, max_age_days=45, ahead_days=7, retention_days=10)
    keep_from = datetime(2026, 3, 1, tzinfo=UTC)
    assert window.start == window.expired_before == keep_from
    old, new = pageview(occurred_at=keep_from - timedelta(seconds=1)), event(occurred_at=keep_from)
    late = late_hit(occurred_at=keep_from - timedelta(days=30))
    batch = decode([rs.record(ROLES.events, old), rs.record(ROLES.events, new), rs.record(ROLES.events, late)],
                   window=window)
    assert batch.counts() == {"sessions": 0, "pageviews": 0, "events": 1, "late_hits": 1, "deadletter": 1,
                              "session_retractions": 0, "moves": 0, "move_ranges": 0, "identities": 0,
                              "device_links": 0}
    [dl] = as_dicts(batch, "deadletter")
    assert dl["reason"].startswith("expired") and dl["hit_id"] == old.hit_id


@pytest.mark.parametrize("fast", [True, False], ids=["fast path", "codec"])
def test_rows_outside_the_day_window_are_dead_lettered_and_need_no_partition(fast):
    """Hits dated decades back (or days ahead) would each create a day partition: dead letters instead."""
    rs = RecordStream()
    now = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)
    window = DayWindow.around(now, max_age_days=45, ahead_days=7, retention_days=None)
    assert (window.start, window.end) == (datetime(2026, 10, 20, tzinfo=UTC), datetime(2026, 12, 12, tzinfo=UTC))
    inside = [window.start, now, window.end - timedelta(microseconds=1)]
    outside = [datetime(1827, 5, 1, tzinfo=UTC), window.start - timedelta(microseconds=1), window.end,
               datetime(2199, 1, 1, tzinfo=UTC)]
    def value(at: datetime) -> bytes:
        record = orjson.loads(pageview(occurred_at=at).model_dump_json())
        if not fast:  # a numeric time: the fast path defers to the codec
            record["received_at"] = int(at.timestamp() * 1000)
        return orjson.dumps(record)
    batch = decode([rs.record(ROLES.events, value(at)) for at in inside + outside], window=window)
    assert batch.counts()["pageviews"] == len(inside)
    assert batch.days("pageviews") <= {window.start.date() + timedelta(days=n) for n in range(53)}
    letters = as_dicts(batch, "deadletter")
    assert len(letters) == len(outside)
    assert {dl["reason"] for dl in letters} == {"outside the sink's day window"}
    assert all("2026-10-20 to 2026-12-11" in dl["errors"] for dl in letters), letters[0]["errors"]


def test_split_keeps_every_row_with_its_origin_once():
    rs = RecordStream()
    records = [rs.record(ROLES.events, pageview()) for _ in range(3)] + [
        rs.record(ROLES.sessions, session()) for _ in range(2)] + [rs.record(ROLES.events, b"x")]
    batch = decode(records)
    left, right = batch.split()
    assert (len(left), len(right)) == (3, 3)
    assert sorted(left.items() + right.items(), key=repr) == sorted(batch.items(), key=repr)
    single = Batch()
    single.add("events", ("r",), batch.origins["pageviews"][0])
    a, b = single.split()
    assert len(a) + len(b) == 1


def test_days_span_first_to_last_in_a_week_and_are_exact_beyond():
    rs = RecordStream()
    near = decode([rs.record(ROLES.events, pageview(occurred_at=datetime(2026, 3, d, 12, tzinfo=UTC)))
                   for d in (2, 5)])
    assert sorted(d.day for d in near.days("pageviews")) == [2, 3, 4, 5]
    far = decode([rs.record(ROLES.events, pageview(occurred_at=datetime(y, 3, 2, 12, tzinfo=UTC)))
                  for y in (2019, 2026)])
    assert sorted(d.isoformat() for d in far.days("pageviews")) == ["2019-03-02", "2026-03-02"]
    assert Batch().days("events") == set()


def test_days_are_utc_days():
    plus_two = timezone(timedelta(hours=2))
    assert utc_day(datetime(2026, 3, 2, 1, 0, tzinfo=plus_two)).isoformat() == "2026-03-01"
    rs = RecordStream()
    batch = decode([rs.record(ROLES.events, pageview(occurred_at=datetime(2026, 3, 2, 23, 59, tzinfo=UTC))),
                    rs.record(ROLES.events, pageview(occurred_at=datetime(2026, 3, 3, 0, 0, tzinfo=UTC)))])
    assert sorted(d.isoformat() for d in batch.days("pageviews")) == ["2026-03-02", "2026-03-03"]


def test_every_table_is_known():
    assert TABLES == ("sessions", "pageviews", "events", "late_hits", "deadletter", "session_retractions", "moves",
                      "move_ranges", "identities", "device_links")


def test_feeding_in_chunks_gives_the_same_batch_as_all_at_once():
    rs = RecordStream()
    sid, guid = new_id(), new_id()
    records = [rs.record(ROLES.sessions, session(session_id=sid, guid=guid, version=v)) for v in (2, 5, 1, 4)]
    records += [rs.record(ROLES.events, pageview()) for _ in range(3)] + [rs.record(ROLES.events, b"?")]
    whole = decode(records)
    decoder = Decoder(ROLES, now=NOW)
    for start in range(0, len(records), 3):
        decoder.feed(records[start:start + 3])
    assert decoder.batch.items() == whole.items()
    assert (decoder.batch.consumed, decoder.batch.superseded) == (whole.consumed, whole.superseded) == (8, 3)


# --- the fast path for pageviews and events gives what the full codec gives ---------------------


def codec_row(raw: bytes):
    """The row the full (pydantic) path makes of `raw`."""
    item = events_codec.decode(raw)
    if item.kind == "pageview":
        return "pageviews", tuple(getattr(item, c) for c in COLUMNS["pageviews"])
    return "events", tuple(getattr(item, c) for c in COLUMNS["events"][:-3]) + (
        _amount(item.value), item.currency, orjson.dumps(item.properties).decode(),)


@pytest.mark.parametrize("record", [
    pageview(),
    pageview(title=None, referrer=""),
    pageview(occurred_at=datetime(2026, 3, 2, 23, 30, 0, 123456, tzinfo=timezone(timedelta(hours=-5)))),
    event(),
    event(module=None, properties={}),
    event(properties={"nested": {"list": [1, 2.5, None, "x"]}, "é": "ü"}),
    event(name="lead", value=19.99, currency="EUR"),
    event(name="lead", value=-5, currency="USD"),
])
def test_the_fast_path_gives_the_codec_row(record):
    raw = encode(record)
    fast = fast_events_row(raw)
    assert fast is not None
    assert fast[:2] == codec_row(raw)


def mutate(record, **changes) -> bytes:
    obj = orjson.loads(encode(record))
    for key, value in changes.items():
        if value is KeyError:
            obj.pop(key)
        else:
            obj[key] = value
    return orjson.dumps(obj)


@pytest.mark.parametrize("raw", [
    b"not json",
    b"[]",
    mutate(pageview(), v=2),
    mutate(pageview(), kind="late_hit"),
    mutate(pageview(), hit_id=12),
    mutate(pageview(), session_id=KeyError),
    mutate(pageview(), occurred_at="2026-03-02T09:00:00"),  # no zone
    mutate(pageview(), occurred_at=1772442000000),  # epoch ms: the codec decides
    mutate(pageview(), occurred_at="yesterday"),
    mutate(pageview(), referrer=None),
    mutate(pageview(), title=5),
    mutate(event(), properties=[1, 2]),
    mutate(event(), module=3),
    mutate(event(), name=KeyError),
])
def test_anything_unusual_goes_to_the_codec(raw):
    assert fast_events_row(raw) is None
    batch = decode([RecordStream().record(ROLES.events, raw)])
    assert len(batch) == 1  # the codec either accepts it or dead-letters it: never lost


def test_a_record_the_codec_accepts_but_the_fast_path_does_not_still_lands():
    raw = mutate(pageview(), occurred_at=1772442000000)  # pydantic reads numbers as epoch times
    batch = decode([RecordStream().record(ROLES.events, raw)])
    assert len(batch.rows["pageviews"]) == 1
    assert batch.rows["pageviews"][0] == codec_row(raw)[1]


# -- SPEC rule 6: retractions and moves --------------------------------------------------------


@pytest.mark.parametrize("retraction_last", [True, False])
def test_a_session_keeps_its_newest_word_snapshot_or_retraction(retraction_last):
    rs = RecordStream()
    sid, into, guid = new_id(), new_id(), new_id()
    snap = rs.record(ROLES.sessions, session(session_id=sid, guid=guid, version=4))
    gone = rs.record(ROLES.sessions, retraction(session_id=sid, guid=guid, merged_into=into, version=5))
    other = session()
    records = [snap, gone] if retraction_last else [gone, snap]
    batch = decode([rs.record(ROLES.sessions, other), *records])
    # The retraction has the higher version whatever the order it came in.
    assert [r["session_id"] for r in as_dicts(batch, "sessions")] == [other.session_id]
    assert as_dicts(batch, "session_retractions") == [
        {"session_id": sid, "guid": guid, "merged_into": into, "version": 5}]
    assert batch.origins["session_retractions"][0].offset == gone.offset
    assert batch.session_guids() == sorted({guid, other.guid})


def test_a_snapshot_newer_than_a_retraction_wins():
    rs = RecordStream()
    sid, guid = new_id(), new_id()
    batch = decode([rs.record(ROLES.sessions, retraction(session_id=sid, guid=guid, merged_into=new_id(), version=5)),
                    rs.record(ROLES.sessions, session(session_id=sid, guid=guid, version=9))])
    assert batch.rows["session_retractions"] == [] and [r["version"] for r in as_dicts(batch, "sessions")] == [9]


def test_moves_keep_each_hits_last_and_ranges_keep_their_order():
    rs = RecordStream()
    pv, ev = pageview(), event()
    a, b = new_id(), new_id()
    first_at, last_at = T0, T0 + timedelta(minutes=5)
    batch = decode([rs.record(ROLES.events, pv), rs.record(ROLES.events, move(pv, a)), rs.record(ROLES.events, move(ev, a)),
                    rs.record(ROLES.events, move(pv, b)),
                    rs.record(ROLES.events, range_move(pv.guid, a, first_at, last_at, b)),
                    rs.record(ROLES.events, range_move(pv.guid, b, first_at, last_at, a))])
    assert as_dicts(batch, "moves") == [
        {"hit_id": pv.hit_id, "occurred_at": pv.occurred_at, "session_id": b, "is_event": False},
        {"hit_id": ev.hit_id, "occurred_at": ev.occurred_at, "session_id": a, "is_event": True},
    ]
    assert [(r["from_session_id"], r["session_id"]) for r in as_dicts(batch, "move_ranges")] == [(a, b), (b, a)]
    assert len(batch.rows["pageviews"]) == 1


# -- identity stitching (migration 0009) ---------------------------------------------------------


def test_identities_and_links_coalesce_per_key_to_the_earliest_and_latest():
    rs = RecordStream()
    guid, old, other = new_id(), new_id(), new_id()
    h = timedelta(hours=1)
    records = [
        rs.record(ROLES.events, pageview(guid=guid, occurred_at=T0 + 2 * h, user_id="u1", previous_guid=old)),
        rs.record(ROLES.events, event(guid=guid, occurred_at=T0, user_id="u1", previous_guid=old)),
        rs.record(ROLES.events, pageview(guid=guid, occurred_at=T0 + 5 * h, user_id="u1")),
        rs.record(ROLES.events, pageview(guid=guid, occurred_at=T0 + h, user_id="u2")),
        rs.record(ROLES.events, pageview(guid=other, occurred_at=T0 + 3 * h)),  # nobody: no row
    ]
    batch = decode(records)
    assert sorted(batch.rows["identities"]) == sorted([(guid, "u1", T0, T0 + 5 * h), (guid, "u2", T0 + h, T0 + h)])
    assert batch.rows["device_links"] == [(guid, old, T0)]
    assert batch.origins["identities"][0].offset == 0  # the first record that named it


def test_the_codec_path_and_late_hits_name_identities_too():
    rs = RecordStream()
    guid = new_id()
    raw = orjson.loads(encode(pageview(guid=guid, user_id="u9")))
    raw["occurred_at"] = int(T0.timestamp() * 1000)  # epoch ms: the fast path defers to the codec
    late = late_hit(guid=guid, occurred_at=T0 - timedelta(days=2))
    late.hit["user_id"] = "u9"
    batch = decode([rs.record(ROLES.events, orjson.dumps(raw)), rs.record(ROLES.events, late)])
    assert len(batch.rows["pageviews"]) == 1 and len(batch.rows["late_hits"]) == 1
    assert batch.rows["identities"] == [(guid, "u9", T0 - timedelta(days=2), T0)]


@pytest.mark.parametrize(("user_id", "previous_guid", "usable"), [
    ("", None, 0), ("x" * 257, None, 0), ("a\x00b", None, 0),
    (None, "not-a-uuid", 0), (None, "6F1C2B0E-4A57-4C3E-9D61-0B8F3F1E7A01", 0),
    ("x" * 256, None, 1), (None, "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01", 1),
])
def test_unusable_identities_are_counted_and_the_hit_still_lands(user_id, previous_guid, usable):
    rs = RecordStream()
    raw = orjson.loads(encode(pageview()))
    raw.update(user_id=user_id, previous_guid=previous_guid)
    batch = decode([rs.record(ROLES.events, orjson.dumps(raw))])
    assert len(batch.rows["pageviews"]) == 1
    assert len(batch.rows["identities"]) + len(batch.rows["device_links"]) == usable
    assert batch.unusable_identities == 1 - usable


def test_a_user_id_of_another_type_is_the_codecs_to_refuse():
    raw = mutate(pageview(), user_id=42)
    assert fast_events_row(raw) is None
    batch = decode([RecordStream().record(ROLES.events, raw)])
    [dl] = as_dicts(batch, "deadletter")
    assert "user_id" in dl["errors"] and batch.rows["pageviews"] == []


def test_a_link_to_itself_is_no_link():
    rs = RecordStream()
    guid = new_id()
    batch = decode([rs.record(ROLES.events, pageview(guid=guid, previous_guid=guid))])
    assert batch.rows["device_links"] == [] and batch.unusable_identities == 0


# -- conversion value (migration 0010) -----------------------------------------------------------


@pytest.mark.parametrize("value, stored", [(19.99, "19.99"), (120, "120"), (1e-7, "1E-7"), (None, None)])
def test_an_events_value_is_the_number_the_hit_held(value, stored):
    """numeric from a float's shortest repr (19.99, not 19.989999...), on the fast path and the codec's."""
    from decimal import Decimal

    money = {} if value is None else {"value": value, "currency": "EUR"}
    ev = event(name="lead", **money)
    raw = encode(ev)
    [row] = as_dicts(decode([RecordStream().record(ROLES.events, raw)]), "events")
    want = None if stored is None else Decimal(stored)
    assert (row["value"], row["currency"]) == (want, None if value is None else "EUR")
    assert fast_events_row(raw) is not None  # (the common case took the fast path)
    slow = mutate(ev, occurred_at=int(ev.occurred_at.timestamp() * 1000))  # epoch ms: the codec's path
    assert fast_events_row(slow) is None
    [row] = as_dicts(decode([RecordStream().record(ROLES.events, slow)]), "events")
    assert row["value"] == want


def test_an_events_bad_value_is_dead_lettered_with_its_field():
    raw = orjson.loads(encode(event(name="lead")))
    raw.update(value=True, currency="EUR")
    batch = decode([RecordStream().record(ROLES.events, orjson.dumps(raw))])
    assert batch.counts()["events"] == 0 and batch.counts()["deadletter"] == 1
    assert "value" in batch.rows["deadletter"][0][6]
