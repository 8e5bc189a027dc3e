"""The common hit, validated and enriched without pydantic: the edge's hot path.

`schemas.hit.HitIn` + `schemas.hit.enrich` are the definition of what a hit is and what the
edge publishes. Building a pydantic model costs more than everything else a hit needs, so
for the hits real trackers send (canonical UUIDs, plain http(s) URLs, string fields of sane
length) this module computes the same wire record directly, as a Struct (`schemas.views.HitOut`)
that encodes to the same JSON. Anything it is not *sure* about,
it does not judge: it returns None and the caller runs the pydantic path, which also writes
every error message. So this module never refuses a hit, and never accepts one HitIn would
refuse.

Kept honest three ways:
- `tests/unit/ingest/test_ingest_fastpath.py` checks, with hypothesis, that for any input the two
  paths give identical records (or the fast one defers);
- `FIELDS` must equal HitIn's fields and `OUT_FIELDS` Hit's (HitOut is built positionally),
  else the fast path turns itself off at import;
- `self_check()` runs both paths over sample hits when the app starts and turns the fast path
  off (with a warning) if they ever disagree, e.g. after someone changes `enrich`.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
from pydantic_core import PydanticCustomError

from schemas import SCHEMA_VERSION
from ingest.memo import BoundedMemo
from schemas.hit import (
    CURRENCY,
    MAX_PROPERTIES_BYTES,
    MAX_TEXT,
    MAX_URL_LENGTH,
    MAX_USER_ID,
    MAX_VALUE,
    NUL,
    NUL_JSON,
    UTM_KEYS,
    HitIn,
    derive_occurred_at,
    enrich,
    query_campaign_params,
)
from schemas.timefmt import EARLIEST, LATEST, UTC, parse_timestamp
from schemas.views import CloseView, HitOut, encode_view

log = logging.getLogger(__name__)
_fromisoformat = datetime.fromisoformat
_sizeof = sys.getsizeof

FIELDS = frozenset(
    {
        "guid",
        "type",
        "hit_id",
        "url",
        "referrer",
        "title",
        "site",
        "utm",
        "created_at",
        "sent_at",
        "event",
        "previous_guid",
        "user_id",
    }
)
# The order HitOut is built in, positionally: Hit's fields.
OUT_FIELDS = (
    "v", "hit_id", "guid", "type", "url", "path", "site", "referrer", "referrer_host", "title",
    "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "utm_id", "click_id", "click_id_type",
    "event_name", "event_module", "event_properties", "event_value", "event_currency", "previous_guid", "user_id",
    "created_at", "sent_at", "received_at", "occurred_at", "ip", "user_agent", "datacenter",
)  # fmt: skip
ENABLED = FIELDS == frozenset(HitIn.model_fields) and OUT_FIELDS == HitOut.__struct_fields__
if not ENABLED:  # pragma: no cover - only when HitIn or Hit changes without this module
    log.warning(
        "ingest fast path disabled: HitIn's or Hit's fields changed",
        extra={"hit_in": sorted(HitIn.model_fields), "hit": HitOut.__struct_fields__},
    )

# The canonical lower-case UUID spelling; `uuid.UUID` reads more spellings, those go the slow way.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# An http(s) URL that `urlsplit` reads without surprises: ASCII host (no userinfo, no IPv6
# literal), optional numeric port, and no ASCII space or control character anywhere (which
# urlsplit would strip or remove). Other characters, non-ASCII ones included, urlsplit keeps
# as they are in the path, query and fragment. (ASCII-only classes: no Unicode lookups per
# character.) Groups: host, path, query (with its "?").
_URL = re.compile(
    r"https?://([A-Za-z0-9.\-]+)(?::[0-9]{1,5})?(/[^?#\x00-\x20\x7f]*)?(\?[^#\x00-\x20\x7f]*)?(?:#[^\x00-\x20\x7f]*)?"
)


# Memos of the pure string checks above: devices send many hits, sites have a few thousand
# pages, and referrers repeat; a dict lookup costs a small part of the regex match it replaces.
# Their keys are the client's own strings (a URL may hold 4,096 characters), so each memo is
# bounded by the bytes it holds, not only by its entries (`ingest.memo`): 100,000 distinct long
# URLs cost the memos their hit rate, never the worker's memory (tests/e2e/test_abuse.py).
MEMO_BYTES = 8 * 1024 * 1024  # per memo
MEMO_ENTRIES = 65_536
_GUIDS: BoundedMemo[str] = BoundedMemo(MEMO_BYTES, MEMO_ENTRIES)  # as sent -> canonical (only valid ones)
_URLS: BoundedMemo[tuple[str, str, str | None]] = BoundedMemo(MEMO_BYTES, MEMO_ENTRIES)  # url -> (host, path, query)
_REFERRER_HOSTS: BoundedMemo[str] = BoundedMemo(MEMO_BYTES, MEMO_ENTRIES)  # referrer -> lower-case host
_CAMPAIGNS: BoundedMemo[tuple[dict[str, str], tuple[str, str] | None]] = BoundedMemo(
    MEMO_BYTES, MEMO_ENTRIES
)  # "?query" -> (utm, click id)


class _Defer(Exception):
    """Not sure: let HitIn decide."""


_NO_CAMPAIGN: tuple[str | None, ...] = (None,) * 8  # no utm values, no click id (most hits)
_NO_EVENT: tuple[None, ...] = (None,) * 5  # a pageview's event name, module, properties, value, currency


def fast_enrich(
    item: object,
    received_at: datetime,
    ip: str | None,
    user_agent: str,
    new_id: Callable[[], str],
    datacenter: bool = False,
) -> tuple[HitOut, CloseView | None] | None:
    """`enrich(HitIn.model_validate(item), ...)` for the common hit, or None: run that instead.

    The records come as Structs (`schemas.views`), which build and encode (`encode_view`) for a
    fraction of enrich's dict and orjson: the JSON is the same, up to key order. One step per
    field, each raising `_Defer` on whatever is not plainly the common case; optional fields that
    are absent cost no call (runs once per hit).
    """
    if not ENABLED or type(item) is not dict:
        return None
    get = item.get
    try:
        guid = _guid(get("guid"))
        kind = get("type", "pageview")
        if kind != "pageview" and kind != "event":
            raise _Defer
        hit_id = None if (raw_id := get("hit_id")) is None else _uuid(raw_id)
        url = get("url")
        host, path, query = _url(url)
        referrer, referrer_host = _referrer(get("referrer"))
        title = None if (raw_title := get("title")) is None else _text(raw_title, 0, MAX_TEXT)
        site = host if (raw_site := get("site")) is None else _text(raw_site, 1, 253).lower()  # type: ignore[union-attr]
        created_at = _timestamp(get("created_at"))
        sent_at = _timestamp(get("sent_at"))
        raw_utm = get("utm")
        source, medium, campaign, term, content, utm_id, click_id, click_type = (
            _NO_CAMPAIGN if query is None and raw_utm is None else _campaign(query, raw_utm)
        )
        raw_event = get("event")
        event_name, module, properties, value, currency = (
            _NO_EVENT if raw_event is None and kind == "pageview" else _event(raw_event, kind)
        )
        previous_guid = None if (raw_previous := get("previous_guid")) is None else _uuid(raw_previous)
        user_id = None if (raw_user := get("user_id")) is None else _text(raw_user, 1, MAX_USER_ID)
    except (_Defer, PydanticCustomError):
        return None
    occurred_at = derive_occurred_at(received_at, created_at, sent_at)
    hit_id = hit_id or new_id()
    # Positional, in Hit's field order (checked at import: OUT_FIELDS).
    record = HitOut(
        SCHEMA_VERSION, hit_id, guid, kind, url, path, site, referrer, referrer_host, title,
        source, medium, campaign, term, content, utm_id, click_id, click_type, event_name, module, properties,
        value, currency, previous_guid, user_id, created_at, sent_at, received_at, occurred_at, ip,
        user_agent if len(user_agent) <= MAX_TEXT else user_agent[:MAX_TEXT], datacenter,
    )  # fmt: skip
    if previous_guid is None or previous_guid == guid:
        return record, None
    return record, CloseView(
        guid=previous_guid, new_guid=guid, hit_id=hit_id, occurred_at=occurred_at, received_at=received_at
    )


# --- one step per field: the value as the record holds it, or _Defer ----------------------------


def _uuid(value: object) -> str:
    """A UUID in its canonical lower-case spelling (`uuid.UUID` reads more spellings: those defer)."""
    if type(value) is str and len(value) == 36:
        if _UUID.fullmatch(value):  # already canonical, as trackers send it: no lower-cased copy
            return value
        lowered = value.lower()
        if _UUID.fullmatch(lowered):
            return lowered
    raise _Defer


def _guid(value: object) -> str:
    """`guid`: a UUID, remembered as sent (a device sends many hits)."""
    guid = _GUIDS.get(value) if type(value) is str else None
    if guid is None:
        guid = _uuid(value)
        _GUIDS.remember(value, guid, 2 * _sizeof(value))  # type: ignore[arg-type]
    return guid


def _url(value: object) -> tuple[str, str, str | None]:
    """`url`: (its host lower-cased, its path or "/", its "?query" or None), remembered per URL
    (a site has a few thousand pages)."""
    if type(value) is not str:
        raise _Defer
    parts = _URLS.get(value)
    if parts is None:
        host, path, query = _url_match(value).groups()
        parts = (host.lower(), path or "/", query)
        _URLS.remember(value, parts, 2 * _sizeof(value))  # (host, path and query: at most the URL again)
    return parts


def _url_match(value: str) -> re.Match[str]:
    """`value` read by the URL pattern (groups: host, path, "?query"), or _Defer."""
    match = _URL.fullmatch(value) if len(value) <= MAX_URL_LENGTH else None
    if match is None:
        raise _Defer
    return match


def _referrer(value: object) -> tuple[str, str | None]:
    """`referrer`: ("", None) when there is none, else (the URL, its lower-case host)."""
    if not value:
        if value is not None and value != "":
            raise _Defer  # 0, False, [], {}: not a referrer
        return "", None
    if type(value) is not str:
        raise _Defer
    host = _REFERRER_HOSTS.get(value)  # referrers repeat
    if host is None:
        host = _url_match(value).group(1).lower()
        _REFERRER_HOSTS.remember(value, host, _sizeof(value) + _sizeof(host))
    return value, host


def _text(value: object, low: int, high: int) -> str | None:
    """A string field of `low`..`high` characters without NUL, which HitIn refuses (None stays None)."""
    if value is None:
        return None
    if type(value) is str and low <= len(value) <= high and NUL not in value:
        return value
    raise _Defer


def _timestamp(value: object) -> datetime | None:
    """`created_at`/`sent_at` in UTC: a string (what trackers send) read here, epoch ms (or None)
    by `parse_timestamp`, whose refusals defer too."""
    if type(value) is not str:
        return parse_timestamp(value)
    try:
        parsed = _fromisoformat(value)
    except ValueError:
        raise _Defer from None
    tz = parsed.tzinfo
    if tz is not UTC:  # ("Z" and "+00:00" parse to the UTC singleton: nothing to convert)
        if tz is None:
            raise _Defer
        parsed = parsed.astimezone(UTC)
    if not (EARLIEST <= parsed < LATEST):
        raise _Defer
    return parsed


def _campaign(query: str | None, explicit: object) -> tuple[str | None, ...]:
    """utm source, medium, campaign, term, content, id, click id and its type: the URL's utm_*
    parameters, overridden by an explicit `utm` object, and the URL's click id."""
    if query is not None and len(query) > 1:
        found = _CAMPAIGNS.get(query)  # landing URLs of one campaign repeat
        if found is None:
            found = query_campaign_params(query[1:])
            _CAMPAIGNS.remember(query, found, 2 * _sizeof(query))  # (the values: parts of the query)
        utm, click = found  # (shared: read here, never changed; merging below makes a new dict)
    elif explicit is None:
        return _NO_CAMPAIGN  # most hits
    else:
        utm, click = {}, None
    if explicit is not None:
        utm = {**utm, **_utm(explicit)}
    if not utm and click is None:
        return _NO_CAMPAIGN
    get = utm.get
    return (
        get("source"), get("medium"), get("campaign"), get("term"), get("content"), get("id"),
        click[1] if click else None, click[0] if click else None,
    )  # fmt: skip


def _utm(value: object) -> dict[str, str]:
    """`utm`: its string values of the known keys (None and other keys ignored, as HitIn does)."""
    if type(value) is not dict:
        raise _Defer
    explicit: dict[str, str] = {}
    for key in UTM_KEYS:
        item = _text(value.get(key), 0, MAX_TEXT)
        if item is not None:
            explicit[key] = item
    return explicit


def _event(value: object, kind: str) -> tuple[Any, ...]:
    """`event`: (name, module, properties, value, currency) of an event hit. A pageview's event is checked (HitIn
    would refuse a bad one) and not kept; an event hit without one defers (HitIn says why)."""
    if value is None:
        if kind == "event":
            raise _Defer
        return _NO_EVENT
    if type(value) is not dict:
        raise _Defer
    name = _text(value.get("name"), 1, 64)
    if name is None:
        raise _Defer
    module = _text(value.get("module"), 1, 64)
    properties = value.get("properties", {})
    if type(properties) is not dict:
        raise _Defer
    if properties:
        try:
            dumped = orjson.dumps(properties)
        except orjson.JSONEncodeError:
            raise _Defer from None
        if len(dumped) > MAX_PROPERTIES_BYTES or NUL_JSON in dumped:  # (NUL: HitIn refuses it)
            raise _Defer
    amount, currency = _money(value.get("value"), value.get("currency"))
    return (name, module, properties, amount, currency) if kind == "event" else _NO_EVENT


def _money(value: object, currency: object) -> tuple[int | float | None, str | None]:
    """`event.value` and `event.currency`: both absent, or a plain finite number with an ISO 4217 code."""
    if value is None and currency is None:
        return None, None  # most events
    kind = type(value)
    if ((kind is not int and kind is not float) or not -MAX_VALUE <= value <= MAX_VALUE  # type: ignore[operator]
            or type(currency) is not str or CURRENCY.fullmatch(currency) is None):
        raise _Defer  # (NaN fails the comparison too)
    return value, currency  # type: ignore[return-value]


SAMPLES: tuple[dict[str, Any], ...] = (
    {"guid": "6F1C2B0E-4A57-4C3E-9D61-0B8F3F1E7A01", "url": "https://Shop.Example.com/a/b?x=1#top"},
    {
        "guid": "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01",
        "hit_id": "0b8f3f1e-7a01-4c3e-9d61-6f1c2b0e4a57",
        "url": "https://example.com/landing?utm_source=google&utm_medium=cpc&gclid=abc&UTM_campaign=Spring%20Sale",
        "referrer": "https://www.google.com/search?q=x",
        "title": "Landing",
        "utm": {"campaign": "explicit", "term": None, "other": 1},
        "created_at": "2026-03-02T09:00:00.000+01:00",
        "sent_at": 1772438405000,
        "previous_guid": "11111111-2222-4333-8444-555555555555",
        "user_id": "crm-4711",
    },
    {
        "guid": "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01",
        "type": "event",
        "url": "http://example.com",
        "site": "Example.COM",
        "event": {"name": "lead", "module": "contact_form", "properties": {"plan": "b", "n": [1, 2.5, None]},
                  "value": 49.9, "currency": "EUR"},
        "created_at": 1772438400000,
        "unknown": "ignored",
    },
)


def self_check(received_at: datetime) -> bool:
    """Both paths over SAMPLES; False (and the fast path off) if they disagree."""
    global ENABLED
    if not ENABLED:
        return False
    from schemas.wire import encode

    def wire(record: Any) -> Any:
        return orjson.loads(encode(record) if isinstance(record, dict) else encode_view(record))

    for sample in SAMPLES:
        kwargs: dict[str, Any] = {"received_at": received_at, "ip": "192.0.2.0", "user_agent": "self-check"}
        fast = fast_enrich(sample, new_id=lambda: "00000000-0000-4000-8000-000000000000", **kwargs)
        slow = enrich(HitIn.model_validate(sample), new_id=lambda: "00000000-0000-4000-8000-000000000000", **kwargs)
        same = fast is not None and all(
            (a is None and b is None) or (a is not None and b is not None and wire(a) == wire(b))
            for a, b in zip(fast, slow, strict=True)
        )
        if not same:
            ENABLED = False
            log.warning("ingest fast path disabled: it disagrees with schemas.hit.enrich", extra={"sample": sample})
            return False
    return True
