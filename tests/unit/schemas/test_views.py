"""The msgspec views stay in step with the pydantic contract (`schemas.hit`, `schemas.records`)."""

from __future__ import annotations

from datetime import datetime, timezone

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.errors import InvalidInput
from schemas.hit import CloseRecord, ForgetRecord, Hit, HitIn, enrich
from schemas.records import EventRecord, LateHitRecord, PageviewRecord
from schemas.views import (
    RECORD_VIEWS,
    VIEWS,
    CloseView,
    EventView,
    ForgetView,
    HitOut,
    HitView,
    LateHitView,
    PageviewView,
    decode_hit_record,
    encode_view,
)
from schemas.wire import encode, hit_codec

MODELS = {"hit": Hit, "close": CloseRecord, "forget": ForgetRecord,
          "pageview": PageviewRecord, "event": EventRecord, "late_hit": LateHitRecord}
ALL_VIEWS = {**VIEWS, **RECORD_VIEWS}
UTC = timezone.utc


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_view_has_the_models_fields_defaults_and_requiredness(kind):
    model, view = MODELS[kind], ALL_VIEWS[kind]
    fields = {f.name: f for f in msgspec.structs.fields(view)}
    assert set(fields) == set(model.model_fields) - {"kind"}
    for name, info in model.model_fields.items():
        if name == "kind":
            continue
        required = fields[name].required
        assert required == info.is_required(), name
        if not required:
            default = fields[name].default_factory() if fields[name].default is msgspec.NODEFAULT else fields[name].default
            assert default == info.get_default(call_default_factory=True), name


def test_the_edges_positional_hit_has_every_field_of_hit_in_order_and_writes_its_json():
    names = tuple(f for f in Hit.model_fields if f != "kind")
    assert HitOut.__struct_fields__ == names
    assert all(f.required for f in msgspec.structs.fields(HitOut))
    at = datetime(2026, 3, 2, 9, 0, 5, 123456, tzinfo=UTC)
    model = Hit(hit_id="h1", guid="g1", type="event", url="https://a.example/x?y=1", path="/x", site="a.example",
                event_name="lead", event_properties={"n": [1, 2.5, None]}, received_at=at, occurred_at=at)
    out = HitOut(*(getattr(model, name) for name in names))
    assert orjson.loads(encode_view(out)) == orjson.loads(encode(model))


def test_events_views_write_the_json_their_models_write():
    at = datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=UTC)
    common = {"hit_id": "h1", "guid": "g1", "occurred_at": at, "received_at": at}
    views = [
        PageviewView(**common, session_id="s1", site="a.example", url="https://a.example/p?q=1", path="/p",
                     referrer="https://www.google.com/", title="Floor plans – 2B"),
        EventView(**common, session_id="s1", site="a.example", name="lead", module=None, url="https://a.example/",
                  properties={"unit": "2B", "n": 3, "nested": {"ok": True}}),
        EventView(**common, session_id="s1", site="a.example", name="lead", url="https://a.example/"),
        LateHitView(**common, reason="before_last_session", hit={"kind": "hit", "created_at": at, "title": None}),
    ]
    for view in views:
        model = MODELS[view.kind]
        # (the same keys and values, timestamps written alike; msgspec puts the tag first)
        assert orjson.loads(encode_view(view)) == orjson.loads(encode(model.model_validate(view.wire()))), view.kind


def _edge_record(**body) -> dict:
    received = datetime(2026, 3, 2, 9, 0, 0, 123000, tzinfo=UTC)
    record, _ = enrich(HitIn.model_validate(body), received_at=received, ip="203.0.113.9", user_agent="Mozilla/5.0 X")
    return record


texts = st.text(st.characters(blacklist_characters="\x00"), min_size=1, max_size=20)  # (HitIn refuses NUL)


@settings(max_examples=150, deadline=None)
@given(
    path=st.text(alphabet="abc/-_%é", max_size=12),
    query=st.sampled_from(["", "?utm_source=news&utm_medium=email", "?gclid=abc", "?utm_campaign=spring&fbclid=z"]),
    referrer=st.sampled_from(["", "https://www.google.com/search?q=x", "https://t.co/x"]),
    kind=st.sampled_from(["pageview", "event"]),
    title=st.none() | texts,
    properties=st.dictionaries(texts, st.integers(min_value=-(2**63), max_value=2**63 - 1) | texts | st.none(), max_size=3),
    created_ms=st.integers(min_value=0, max_value=10_000),
)
def test_an_edge_record_decodes_to_the_same_values_both_ways(path, query, referrer, kind, title, properties, created_ms):
    body = {
        "guid": "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01",
        "type": kind,
        "url": f"https://www.oakridge-apts.com/{path}{query}",
        "referrer": referrer,
        "title": title,
        "created_at": f"2026-03-02T08:59:5{created_ms // 1000 % 10}.{created_ms % 1000:03d}Z",
    }
    if kind == "event":
        body["event"] = {"name": "lead", "module": "form", "properties": properties}
    raw = encode(_edge_record(**body))
    view = decode_hit_record(raw)
    assert isinstance(view, HitView)
    assert view.wire() == Hit.model_validate_json(raw).model_dump()


def test_close_and_forget_records_decode_to_their_views():
    at = datetime(2026, 3, 2, 9, tzinfo=UTC)
    close = CloseRecord(guid="a", new_guid="b", hit_id="h", occurred_at=at, received_at=at)
    forget = ForgetRecord(guid="a", requested_at=at)
    got_close = decode_hit_record(encode(close))
    got_forget = decode_hit_record(encode(forget))
    assert isinstance(got_close, CloseView) and got_close.new_guid == "b" and got_close.occurred_at == at
    assert isinstance(got_forget, ForgetView) and got_forget.requested_at == at


def test_a_form_only_pydantic_reads_is_still_accepted():
    """msgspec wants RFC 3339 ("T"); pydantic also reads a space. Accepted either way."""
    record = orjson.loads(encode(_edge_record(guid="6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01", url="https://a.example/")))
    record["occurred_at"] = "2026-03-02 09:00:00Z"
    view = decode_hit_record(orjson.dumps(record))
    assert isinstance(view, HitView)
    assert view.occurred_at == datetime(2026, 3, 2, 9, tzinfo=UTC)


def _mutated(**changes) -> bytes:
    record = orjson.loads(encode(_edge_record(guid="6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01", url="https://a.example/")))
    for key, value in changes.items():
        if value is KeyError:
            del record[key]
        else:
            record[key] = value
    return orjson.dumps(record)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"not json", "body"),
        (b"[1, 2]", "body"),
        (_mutated(v=2), "v"),
        (_mutated(kind="nonsense"), "kind"),
        (_mutated(guid=KeyError), "hit.guid"),
        (_mutated(occurred_at="yesterday"), "hit.occurred_at"),
        (_mutated(occurred_at="2026-03-02T09:00:00"), "hit.occurred_at"),  # no offset: refused
        (_mutated(type="click"), "hit.type"),
        (_mutated(url=7), "hit.url"),
    ],
)
def test_a_refused_record_gets_the_codecs_reason_and_field(raw, field):
    with pytest.raises(InvalidInput) as fast:
        decode_hit_record(raw)
    with pytest.raises(InvalidInput) as codec:
        hit_codec.decode(raw)
    assert (fast.value.reason, fast.value.errors) == (codec.value.reason, codec.value.errors)
    assert any(e.field.startswith(field) for e in fast.value.errors), fast.value.errors
