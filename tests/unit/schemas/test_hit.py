"""SPEC section 2, rule by rule, on the shared models (no services)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest
from pydantic import ValidationError

from schemas.hit import CLICK_ID_PARAMS, CloseRecord, Hit, HitIn, derive_occurred_at, enrich
from schemas.wire import encode, field_errors, hit_codec

UTC = timezone.utc
GUID = "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01"
RECEIVED = datetime(2026, 3, 2, 9, 0, 10, tzinfo=UTC)


def errors_of(data: dict) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        HitIn.model_validate(data)
    return {e.field: e.message for e in field_errors(info.value)}


def enriched(data: dict, **kw) -> dict:
    record, _ = enrich(HitIn.model_validate(data), received_at=kw.get("received_at", RECEIVED), ip="203.0.113.0", user_agent="UA")
    return record


# --- occurred_at -------------------------------------------------------------------------------


def test_occurred_at_with_both_device_times_cancels_clock_skew():
    # The device clock is 1 h fast; it created the hit 4 s before sending it.
    created = datetime(2026, 3, 2, 10, 0, 0, tzinfo=UTC)
    sent = created + timedelta(seconds=4)
    assert derive_occurred_at(RECEIVED, created, sent) == RECEIVED - timedelta(seconds=4)


def test_occurred_at_with_created_only_is_created():
    created = RECEIVED - timedelta(minutes=5)
    assert derive_occurred_at(RECEIVED, created, None) == created


def test_occurred_at_with_neither_is_received():
    assert derive_occurred_at(RECEIVED, None, None) == RECEIVED
    # sent_at alone says nothing about when the hit happened
    assert derive_occurred_at(RECEIVED, None, RECEIVED - timedelta(hours=1)) == RECEIVED


def test_occurred_at_is_never_later_than_received():
    future = RECEIVED + timedelta(days=1)
    assert derive_occurred_at(RECEIVED, future, None) == RECEIVED
    # sent before created (a broken device) would otherwise push occurred_at past received_at
    assert derive_occurred_at(RECEIVED, RECEIVED, RECEIVED - timedelta(minutes=1)) == RECEIVED


def test_timestamps_accept_iso_with_zone_and_epoch_ms():
    hit = HitIn.model_validate({"guid": GUID, "url": "https://a.example/", "created_at": "2026-03-02T10:00:00+01:00", "sent_at": 1772445600000})
    assert hit.created_at == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert hit.sent_at == datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "value, message",
    [
        ("2026-03-02T09:00:00", "must include a time zone"),
        ("yesterday", "ISO 8601"),
        (True, "ISO 8601"),
        (99999999999999999, "out of range"),
        (99999999999999, "between the years"),
        ("1970-01-01T00:00:00Z", "between the years"),
    ],
)
def test_bad_timestamps_name_the_field_and_why(value, message):
    errs = errors_of({"guid": GUID, "url": "https://a.example/", "created_at": value})
    assert message in errs["created_at"]


# --- guid and ids ------------------------------------------------------------------------------


def test_guid_is_normalised_to_lower_case():
    hit = HitIn.model_validate({"guid": GUID.upper(), "url": "https://a.example/"})
    assert hit.guid == GUID


def test_guid_without_hyphens_is_normalised():
    hit = HitIn.model_validate({"guid": GUID.replace("-", ""), "url": "https://a.example/"})
    assert hit.guid == GUID


@pytest.mark.parametrize("field", ["guid", "hit_id", "previous_guid"])
def test_bad_uuid_is_refused_with_the_field_named(field):
    data = {"guid": GUID, "url": "https://a.example/", field: "not-a-uuid"}
    errs = errors_of(data)
    assert "must be a UUID" in errs[field]


def test_guid_must_be_a_string():
    assert "UUID string" in errors_of({"guid": 12345, "url": "https://a.example/"})["guid"]


def test_missing_guid_and_url_are_both_reported():
    errs = errors_of({})
    assert errs == {"guid": "is required", "url": "is required"}


def test_edge_assigns_hit_id_when_absent_and_keeps_given_one():
    assert enriched({"guid": GUID, "url": "https://a.example/"})["hit_id"]
    given = "00000000-0000-4000-8000-0000000000AA"
    assert enriched({"guid": GUID, "url": "https://a.example/", "hit_id": given})["hit_id"] == given.lower()


# --- url, referrer, site -----------------------------------------------------------------------


@pytest.mark.parametrize("url", ["ftp://a.example/", "/relative/path", "https://", "javascript:alert(1)", "https://[::1"])
def test_url_must_be_absolute_http(url):
    assert "url" in errors_of({"guid": GUID, "url": url})


def test_url_length_limit():
    long_url = "https://a.example/" + "x" * 4096
    assert "longer than 4096" in errors_of({"guid": GUID, "url": long_url})["url"]


def test_referrer_may_be_empty_or_any_absolute_url():
    assert enriched({"guid": GUID, "url": "https://a.example/", "referrer": ""})["referrer_host"] is None
    r = enriched({"guid": GUID, "url": "https://a.example/", "referrer": "android-app://com.google.android.gm/"})
    assert r["referrer_host"] == "com.google.android.gm"
    assert "absolute URL" in errors_of({"guid": GUID, "url": "https://a.example/", "referrer": "nope"})["referrer"]


def test_site_defaults_to_url_host_and_path_is_derived():
    r = enriched({"guid": GUID, "url": "https://WWW.Oakridge-Apts.com/floorplans?x=1"})
    assert r["site"] == "www.oakridge-apts.com"
    assert r["path"] == "/floorplans"
    assert enriched({"guid": GUID, "url": "https://a.example", "site": "Brand"})["site"] == "brand"
    assert enriched({"guid": GUID, "url": "https://a.example"})["path"] == "/"


# --- utm and click ids -------------------------------------------------------------------------


def test_utm_is_read_from_the_url():
    r = enriched({"guid": GUID, "url": "https://a.example/?utm_source=google&utm_medium=cpc&utm_campaign=spring%20sale&utm_term=t&utm_content=c&utm_id=42"})
    assert (r["utm_source"], r["utm_medium"], r["utm_campaign"], r["utm_term"], r["utm_content"], r["utm_id"]) == (
        "google", "cpc", "spring sale", "t", "c", "42"
    )


def test_explicit_utm_wins_over_the_url_per_key():
    r = enriched({"guid": GUID, "url": "https://a.example/?utm_source=url&utm_medium=url", "utm": {"source": "explicit"}})
    assert r["utm_source"] == "explicit"
    assert r["utm_medium"] == "url"


def test_absent_utm_is_null():
    r = enriched({"guid": GUID, "url": "https://a.example/?q=1"})
    assert all(r[f"utm_{k}"] is None for k in ("source", "medium", "campaign", "term", "content", "id"))


@pytest.mark.parametrize("param", CLICK_ID_PARAMS)
def test_each_of_the_nine_click_ids_is_kept(param):
    r = enriched({"guid": GUID, "url": f"https://a.example/?{param}=XYZ123&x=1"})
    assert (r["click_id_type"], r["click_id"]) == (param, "XYZ123")


def test_nine_click_ids_exactly():
    assert set(CLICK_ID_PARAMS) == {"gclid", "gbraid", "wbraid", "dclid", "msclkid", "fbclid", "ttclid", "li_fat_id", "twclid"}


def test_click_id_precedence_when_several():
    r = enriched({"guid": GUID, "url": "https://a.example/?fbclid=F&gclid=G"})
    assert (r["click_id_type"], r["click_id"]) == ("gclid", "G")


# --- events and size limits --------------------------------------------------------------------


def test_event_requires_event_object():
    assert "is required when type is" in errors_of({"guid": GUID, "url": "https://a.example/", "type": "event"})["event"]


def test_event_name_length():
    assert "event.name" in errors_of({"guid": GUID, "url": "https://a.example/", "type": "event", "event": {"name": ""}})
    assert "event.name" in errors_of({"guid": GUID, "url": "https://a.example/", "type": "event", "event": {"name": "x" * 65}})


def test_properties_limit_is_8_kib_as_json():
    ok = {"k": "x" * (8192 - len(orjson.dumps({"k": ""})))}
    HitIn.model_validate({"guid": GUID, "url": "https://a.example/", "type": "event", "event": {"name": "lead", "properties": ok}})
    too_big = {"k": "x" * 8192}
    msg = errors_of({"guid": GUID, "url": "https://a.example/", "type": "event", "event": {"name": "lead", "properties": too_big}})
    assert "limit is 8192" in msg["event.properties"]


def test_unknown_type_is_refused():
    assert "type" in errors_of({"guid": GUID, "url": "https://a.example/", "type": "click"})


def test_event_fields_are_flattened_onto_the_hit():
    r = enriched({"guid": GUID, "url": "https://a.example/", "type": "event", "event": {"name": "lead", "module": "chat", "properties": {"a": 1}}})
    assert (r["event_name"], r["event_module"], r["event_properties"]) == ("lead", "chat", {"a": 1})


# --- previous guid / close records and the wire ---------------------------------------------------


def test_previous_guid_yields_a_close_record_for_the_old_device():
    old = "11111111-1111-4111-8111-111111111111"
    record, close = enrich(HitIn.model_validate({"guid": GUID, "url": "https://a.example/", "previous_guid": old}), received_at=RECEIVED, ip=None, user_agent="")
    assert close is not None and close["guid"] == old and close["new_guid"] == GUID and close["hit_id"] == record["hit_id"]
    CloseRecord.model_validate(close)


def test_no_close_record_without_previous_guid():
    _, close = enrich(HitIn.model_validate({"guid": GUID, "url": "https://a.example/"}), received_at=RECEIVED, ip=None, user_agent="")
    assert close is None


# --- user_id (identify) ----------------------------------------------------------------------


def test_user_id_is_carried_as_sent():
    assert enriched({"guid": GUID, "url": "https://a.example/", "user_id": "CRM-4711 é"})["user_id"] == "CRM-4711 é"
    assert enriched({"guid": GUID, "url": "https://a.example/"})["user_id"] is None
    assert enriched({"guid": GUID, "url": "https://a.example/", "user_id": None})["user_id"] is None


@pytest.mark.parametrize(
    ("value", "message"),
    [("", "1 to 256 characters"), ("x" * 257, "1 to 256 characters"), ("a\x00b", "NUL"),
     (4711, "must be a string"), (["u"], "must be a string"), ({"id": "u"}, "must be a string")],
)
def test_bad_user_id_is_refused_with_the_field_named(value, message):
    assert message in errors_of({"guid": GUID, "url": "https://a.example/", "user_id": value})["user_id"]


def test_longest_user_id_is_accepted():
    assert enriched({"guid": GUID, "url": "https://a.example/", "user_id": "x" * 256})["user_id"] == "x" * 256


def test_enriched_hit_round_trips_through_the_wire():
    record = enriched({"guid": GUID, "url": "https://a.example/?utm_source=x", "created_at": "2026-03-02T09:00:00Z"})
    raw = encode(record)
    assert orjson.loads(raw)["v"] == 1
    decoded = hit_codec.decode(raw)
    assert isinstance(decoded, Hit)
    assert decoded.occurred_at == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert decoded.utm_source == "x" and decoded.guid == GUID


# --- a conversion's value and currency (issue 18) ----------------------------------------------------

LEAD = {"guid": GUID, "url": "https://a.example/", "type": "event"}


def test_value_and_currency_ride_on_the_event_as_sent():
    r = enriched({**LEAD, "event": {"name": "lead", "value": 49.9, "currency": "EUR"}})
    assert (r["event_value"], r["event_currency"]) == (49.9, "EUR")
    r = enriched({**LEAD, "event": {"name": "lead", "value": -120, "currency": "USD"}})  # a refund, an int kept int
    assert (r["event_value"], type(r["event_value"]), r["event_currency"]) == (-120, int, "USD")
    assert enriched({**LEAD, "event": {"name": "lead"}})["event_value"] is None
    # a pageview's event is checked, not kept
    r = enriched({"guid": GUID, "url": "https://a.example/", "event": {"name": "lead", "value": 1, "currency": "EUR"}})
    assert (r["event_value"], r["event_currency"]) == (None, None)


@pytest.mark.parametrize("event, field, words", [
    ({"value": "49.9", "currency": "EUR"}, "event.value", "must be a number"),
    ({"value": True, "currency": "EUR"}, "event.value", "must be a number"),
    ({"value": 10**12 + 1, "currency": "EUR"}, "event.value", "at most"),
    ({"value": float("inf"), "currency": "EUR"}, "event.value", "finite"),
    ({"value": 1, "currency": "eur"}, "event.currency", "ISO 4217"),
    ({"value": 1, "currency": "EURO"}, "event.currency", "ISO 4217"),
    ({"value": 1, "currency": 978}, "event.currency", "ISO 4217"),
    ({"value": 1}, "event.currency", "is required with event.value"),
    ({"currency": "EUR"}, "event.value", "is required with event.currency"),
])
def test_bad_value_or_currency_names_the_field(event, field, words):
    errors = errors_of({**LEAD, "event": {"name": "lead", **event}})
    assert field in errors and words in errors[field], errors


def test_value_survives_the_wire():
    record = enriched({**LEAD, "event": {"name": "lead", "value": 19.99, "currency": "GBP"}})
    decoded = hit_codec.decode(encode(record))
    assert (decoded.event_value, decoded.event_currency) == (19.99, "GBP")
