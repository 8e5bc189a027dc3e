"""The fast path must agree with HitIn + enrich on every input it does not defer (pure)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ingest import fastpath
from ingest.fastpath import fast_enrich
from schemas.hit import Hit, HitIn, enrich
from schemas.views import encode_view
from schemas.wire import encode

RECEIVED = datetime(2026, 3, 2, 9, 0, 5, 123456, tzinfo=timezone.utc)
FIXED_ID = "00000000-0000-4000-8000-000000000000"
EDGE: dict[str, Any] = {"received_at": RECEIVED, "ip": "198.51.100.0", "user_agent": "Mozilla/5.0 (X11) Firefox/127"}
MISSING = object()

guids = (
    st.sampled_from(
        [
            "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01",
            "6F1C2B0E-4A57-4C3E-9D61-0B8F3F1E7A01",
            "{6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01}",
            "6f1c2b0e4a574c3e9d610b8f3f1e7a01",
            "urn:uuid:6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01",
            "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a0",
            "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a0g",
            "not-a-uuid",
            "",
            "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01 ",
            "11111111-2222-4333-8444-555555555555",
        ]
    )
    | st.uuids().map(str)
    | st.integers()
    | st.none()
)
urls = (
    st.sampled_from(
        [
            "https://example.com",
            "https://example.com/",
            "http://Example.COM/Path?x=1#frag",
            "HTTP://example.com/",
            "https://user:pw@example.com/",
            "https://[2001:db8::1]/x",
            "https://example.com:8443/a?b",
            "https://example.com:/a",
            "https://ex.com/p q",
            "https://ex.com/\tp",
            "ftp://example.com/",
            "https://",
            "https:///path",
            "example.com/x",
            "https://ex.com/ü?utm_source=ä",
            "https://ex.com/?utm_source=google&utm_medium=cpc&gclid=G1&fbclid=F",
            "https://ex.com/#?utm_source=x",
            "https://ex.com?UTM_SOURCE=Up&utm_campaign=a+b%20c",
            "https://ex.com/?",
            "https://-/",
            "https://a..b/",
            "https://ex.com/" + "a" * 4080,
            "https://ex.com/" + "a" * 4090,
            " https://ex.com/",
            "https://ex.com/\x7f",
            "https://ex.com/?li_fat_id=L&twclid=T&utm_id=7",
            "https://ex.com\u3000/x",
        ]
    )
    | st.builds(lambda s: "https://ex.com/" + s, st.text(max_size=30))
    | st.integers()
    | st.none()
)
referrers = (
    st.sampled_from(
        [
            "",
            "https://www.google.com/",
            "http://Ref.Example.org/a?b=c",
            "android-app://com.google.android.gm/",
            "notaurl",
            "https://",
            "//ex.com/x",
            "https://ex.com/" + "r" * 4090,
            "HTTPS://x.com/",
        ]
    )
    | st.none()
    | st.integers()
)
texts = (
    st.text(max_size=6)
    | st.sampled_from(["a" * 2048, "a" * 2049, "b" * 253, "b" * 254, "", "Ünïcødé"])
    | st.none()
    | st.integers()
)
times = (
    st.sampled_from(
        [
            "2026-03-02T09:00:00.000Z",
            "2026-03-02T10:00:00+01:00",
            "2026-03-02T09:00:00",
            "2026-03-02",
            "garbage",
            "1999-12-31T23:59:59Z",
            "2026-03-02T09:00:06Z",
        ]
    )
    | st.integers(-(10**15), 10**16)
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.none()
)
utms = (
    st.none()
    | st.just({})
    | st.dictionaries(
        st.sampled_from(["source", "medium", "campaign", "term", "content", "id", "other"]),
        st.none() | st.text(max_size=4) | st.just("c" * 2049) | st.integers(),
        max_size=4,
    )
    | st.sampled_from([[], "utm", 3])
)
properties = (
    st.none()
    | st.just(MISSING)
    | st.dictionaries(st.text(max_size=3), st.integers() | st.text(max_size=5), max_size=3)
    | st.just({"big": "x" * 9000})
    | st.just([1])
    | st.just({"n": [1, 2.5, None, {"deep": True}]})
)
events = (
    st.none()
    | st.sampled_from(["click", 1, []])
    | st.fixed_dictionaries(
        {"name": st.sampled_from(["lead", "", "x" * 64, "x" * 65, None, 7])},
        optional={"module": st.sampled_from(["chat", "", "m" * 65, None, 3]), "properties": properties,
                  # a conversion's value and currency: both, one, odd types, out of range, NaN-free floats
                  "value": st.none() | st.sampled_from(["12", True, 10**12, 10**12 + 1, -(10**13), 1e12, 0])
                  | st.integers(-100, 100) | st.floats(allow_nan=False),
                  "currency": st.sampled_from(["EUR", "eur", "EU", "EURO", "", None, 978, "USD"])},
    )
)


# Mostly-valid values, so most draws reach the fast path's acceptance (and the comparison).
hosts = st.from_regex(r"[a-zA-Z0-9](?:[a-zA-Z0-9.\-]{0,20}[a-zA-Z0-9])?", fullmatch=True)
paths = st.lists(st.text(alphabet="abcXYZ019-_.~%é", min_size=1, max_size=6), max_size=3).map(
    lambda p: "/" + "/".join(p)
)
queries = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "utm_source",
                "UTM_Medium",
                "utm_campaign",
                "utm_term",
                "utm_content",
                "utm_id",
                "gclid",
                "fbclid",
                "msclkid",
                "q",
                "page",
            ]
        ),
        st.text(alphabet="ab%2B+Z9é", max_size=5),
    ),
    max_size=4,
).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs))
valid_urls = st.builds(
    lambda scheme, host, port, path, query, frag: f"{scheme}://{host}{port}{path}{'?' + query if query else ''}{frag}",
    st.sampled_from(["http", "https"]),
    hosts,
    st.sampled_from(["", ":8080", ":443"]),
    paths | st.just(""),
    queries,
    st.sampled_from(["", "#top", "#a?utm_source=x"]),
)
valid = {
    "guid": st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()),
    "type": st.just("pageview"),
    "hit_id": st.uuids().map(str) | st.none(),
    "url": valid_urls,
    "referrer": st.just("") | valid_urls | st.none(),
    "title": st.text(max_size=20) | st.none(),
    "site": st.text(min_size=1, max_size=12) | st.none(),
    "utm": st.dictionaries(
        st.sampled_from(["source", "medium", "campaign", "term", "content", "id", "x"]),
        st.text(max_size=6) | st.none(),
        max_size=4,
    )
    | st.none(),
    "created_at": st.integers(946_684_800_000, 7_258_118_400_000)
    | st.sampled_from(["2026-03-02T09:00:00.000Z", "2026-03-02T10:00:00+01:00", "2026-03-02T09:00:04.5-03:30"])
    | st.none(),
    "sent_at": st.integers(946_684_800_000, 7_258_118_400_000)
    | st.sampled_from(["2026-03-02T09:00:01.000Z", "2026-03-02T09:00:09Z"])
    | st.none(),
    "event": st.none()
    | st.fixed_dictionaries(
        {"name": st.text(min_size=1, max_size=10)},
        optional={
            "module": st.text(min_size=1, max_size=5) | st.none(),
            "properties": st.dictionaries(
                st.text(max_size=3), st.integers() | st.text(max_size=5) | st.none(), max_size=3
            ),
            "value": st.integers(0, 10**6) | st.floats(0, 1e6) | st.none(),
            "currency": st.sampled_from(["EUR", "USD", "GBP"]) | st.none(),
        },
    ),
    "previous_guid": st.uuids().map(str) | st.none(),
    "user_id": st.text(min_size=1, max_size=12) | st.none(),
    "extra": st.integers(),
}
tricky = {
    "guid": guids,
    "type": st.sampled_from(["event", "Event", None, 1]),
    "hit_id": guids,
    "url": urls,
    "referrer": referrers,
    "title": texts,
    "site": texts,
    "utm": utms,
    "created_at": times,
    "sent_at": times,
    "event": events,
    "previous_guid": guids,
    "user_id": st.sampled_from(["", "a\x00b", "x" * 256, "x" * 257, 42, ["u"], {"id": "u"}, "\u00e9l\u00e8ve"]),
    "extra": st.integers(),
}


@st.composite
def hits(draw: st.DrawFn) -> Any:
    hit: dict[str, Any] = {}
    for name in valid:
        roll = draw(st.sampled_from(range(40)))
        if roll < 8 and name not in ("guid", "url"):
            continue  # absent
        if roll == 0:
            continue  # a required field missing, now and then
        value = draw(tricky[name] if roll >= 38 else valid[name])
        if value is not MISSING:
            hit[name] = value
    if hit.get("type") == "pageview" and isinstance(hit.get("event"), dict) and draw(st.booleans()):
        hit["type"] = "event"
    if isinstance(hit.get("event"), dict) and hit["event"].get("properties", 0) is MISSING:
        del hit["event"]["properties"]
    return hit


def slow(item: Any) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    try:
        model = HitIn.model_validate(item)
    except ValidationError:
        return None
    return enrich(model, new_id=lambda: FIXED_ID, **EDGE)


def fast(item: Any) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    return fast_enrich(item, new_id=lambda: FIXED_ID, **EDGE)


def wire(record: Any) -> Any:
    """A record as the topic carries it: the fast path's Struct and enrich's dict alike."""
    return orjson.loads(encode(record) if isinstance(record, dict) else encode_view(record))


def assert_same(got: tuple, want: tuple) -> None:
    # Same JSON: every key, value and type (only the key order may differ).
    assert wire(got[0]) == wire(want[0])
    assert (got[1] is None) == (want[1] is None)
    if got[1] is not None:
        assert wire(got[1]) == wire(want[1])


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hits())
def test_fast_path_agrees_with_the_model_or_defers(item: dict[str, Any]) -> None:
    got = fast(item)
    if got is None:
        return  # deferred: the pydantic path decides (and words any error)
    want = slow(item)
    assert want is not None, f"fast path accepted what HitIn refuses: {item!r}"
    assert_same(got, want)
    Hit.model_validate_json(encode_view(got[0]))  # and it is a valid wire record


TYPICAL = [
    {"guid": "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01", "url": "https://www.example.com/"},
    {
        "guid": "6F1C2B0E-4A57-4C3E-9D61-0B8F3F1E7A01",
        "hit_id": "0b8f3f1e-7a01-4c3e-9d61-6f1c2b0e4a57",
        "url": "https://www.example.com/floorplans?utm_source=google&utm_medium=cpc&gclid=abc",
        "referrer": "https://www.google.com/",
        "title": "Floorplans",
        "created_at": "2026-03-02T09:00:00.000Z",
        "sent_at": "2026-03-02T09:00:01.000Z",
    },
    {
        "guid": "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01",
        "type": "event",
        "url": "https://www.example.com/contact",
        "event": {"name": "lead", "module": "contact_form", "properties": {"unit": "2B"}},
        "created_at": 1772442000000,
    },
    {
        "guid": "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01",
        "url": "https://www.example.com/",
        "site": "Example.com",
        "previous_guid": "11111111-2222-4333-8444-555555555555",
        "utm": {"campaign": "spring"},
    },
]


@pytest.mark.parametrize("item", TYPICAL)
def test_typical_hits_take_the_fast_path_and_match(item: dict[str, Any]) -> None:
    got = fast(item)
    assert got is not None, "a typical tracker hit should not need pydantic"
    want = slow(item)
    assert want is not None
    assert_same(got, want)


def test_close_record_for_previous_guid() -> None:
    got = fast(TYPICAL[3])
    assert got is not None and got[1] is not None
    assert got[1].guid == "11111111-2222-4333-8444-555555555555"
    assert got[1].new_guid == TYPICAL[3]["guid"]
    same_guid = {**TYPICAL[0], "previous_guid": TYPICAL[0]["guid"]}
    assert fast(same_guid)[1] is None  # type: ignore[index]


def test_self_check_passes_and_detects_disagreement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastpath, "ENABLED", fastpath.ENABLED)  # put back after the test
    assert fastpath.self_check(RECEIVED) is True
    assert fastpath.ENABLED

    def wrong(hit: Any, **kwargs: Any) -> Any:
        record, close = enrich(hit, **kwargs)
        return {**record, "path": "/elsewhere"}, close

    monkeypatch.setattr(fastpath, "enrich", wrong)
    assert fastpath.self_check(RECEIVED) is False
    assert not fastpath.ENABLED
    assert fast(TYPICAL[0]) is None  # off: everything goes the pydantic way


def test_fields_match_hitin() -> None:
    assert fastpath.FIELDS == frozenset(HitIn.model_fields)


def test_the_positional_record_is_built_in_hits_field_order() -> None:
    """HitOut is built positionally: a swapped pair of fields must show here (and at start-up)."""
    assert fastpath.OUT_FIELDS == tuple(f for f in Hit.model_fields if f != "kind")
    got = fast(TYPICAL[1])
    assert got is not None
    record = wire(got[0])
    assert (record["guid"], record["path"], record["referrer_host"], record["utm_medium"], record["click_id_type"]) == (
        "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01",
        "/floorplans",
        "www.google.com",
        "cpc",
        "gclid",
    )
    assert record["received_at"] == "2026-03-02T09:00:05.123456Z" and record["ip"] == EDGE["ip"]


def test_a_remembered_campaign_query_gives_each_hit_its_own_values() -> None:
    """The campaign params of a query are remembered; explicit `utm` of one hit must not leak
    into the next hit with the same URL."""
    url = "https://www.example.com/spring?utm_source=news&utm_medium=email&fbclid=x1"
    guid = "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01"
    plain = {"guid": guid, "url": url}
    explicit = {"guid": guid, "url": url, "utm": {"source": "override", "campaign": "spring"}}
    for item in (plain, explicit, plain, explicit):
        got, want = fast(item), slow(item)
        assert got is not None and want is not None
        assert_same(got, want)
    assert fast(plain)[0].utm_source == "news" and fast(plain)[0].utm_campaign is None
