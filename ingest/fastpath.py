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
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
from pydantic_core import PydanticCustomError

from schemas import SCHEMA_VERSION
from schemas.hit import (
    MAX_PROPERTIES_BYTES,
    MAX_TEXT,
    MAX_URL_LENGTH,
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
    }
)
# The order HitOut is built in, positionally: Hit's fields.
OUT_FIELDS = (
    "v", "hit_id", "guid", "type", "url", "path", "site", "referrer", "referrer_host", "title",
    "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "utm_id", "click_id", "click_id_type",
    "event_name", "event_module", "event_properties", "previous_guid",
    "created_at", "sent_at", "received_at", "occurred_at", "ip", "user_agent",
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


# Bounded memos of the pure string checks above (cleared when full): devices send many hits,
# sites have a few thousand pages, and referrers repeat; a dict lookup is ~20x cheaper than
# the regex match it replaces.
_MEMO_SIZE = 65_536
_GUIDS: dict[str, str] = {}  # as sent -> canonical (only valid ones)
_URLS: dict[str, tuple[str, str | None, str | None]] = {}  # url -> (host, path, "?query")
_REFERRER_HOSTS: dict[str, str] = {}  # referrer -> lower-case host
_CAMPAIGNS: dict[str, tuple[dict[str, str], tuple[str, str] | None]] = {}  # "?query" -> (utm, click id)


def _remember(memo: dict[str, Any], key: str, value: Any) -> None:
    if len(memo) >= _MEMO_SIZE:
        memo.clear()
    memo[key] = value


class _Defer(Exception):
    """Not sure: let HitIn decide."""


def _uuid(value: object) -> str:
    if type(value) is str and len(value) == 36:
        lowered = value.lower()
        if _UUID.fullmatch(lowered):
            return lowered
    raise _Defer


def _text(value: object, low: int, high: int) -> str | None:
    if value is None:
        return None
    if type(value) is str and low <= len(value) <= high:
        return value
    raise _Defer


def _iso_utc(value: str) -> datetime:
    """`parse_timestamp` for a string (what trackers send), without its type dispatch."""
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


def _event(value: object) -> tuple[str, str | None, dict[str, Any]] | None:
    if value is None:
        return None
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
            if len(orjson.dumps(properties)) > MAX_PROPERTIES_BYTES:
                raise _Defer
        except orjson.JSONEncodeError:
            raise _Defer from None
    return name, module, properties


def _utm(value: object) -> dict[str, str] | None:
    if value is None:
        return None
    if type(value) is not dict:
        raise _Defer
    explicit: dict[str, str] = {}
    for key in UTM_KEYS:
        item = _text(value.get(key), 0, MAX_TEXT)
        if item is not None:
            explicit[key] = item
    return explicit


def fast_enrich(
    item: object,
    received_at: datetime,
    ip: str | None,
    user_agent: str,
    new_id: Callable[[], str],
) -> tuple[HitOut, CloseView | None] | None:
    """`enrich(HitIn.model_validate(item), ...)` for the common hit, or None: run that instead.

    The records come as Structs (`schemas.views`), which build and encode (`encode_view`) in
    2 µs where enrich's dict and orjson take 5: the JSON is the same, up to key order.

    Written flat (few calls, None tested first) because it runs once per hit: every branch
    that is not plainly the common case ends in `return None`.
    """
    if not ENABLED or type(item) is not dict:
        return None
    get = item.get
    raw_guid = get("guid")
    guid = _GUIDS.get(raw_guid) if type(raw_guid) is str else None  # a device sends many hits
    if guid is None:
        if type(raw_guid) is not str or len(raw_guid) != 36:
            return None
        guid = raw_guid.lower()
        if _UUID.fullmatch(guid) is None:
            return None
        _remember(_GUIDS, raw_guid, guid)
    kind = get("type", "pageview")
    if kind != "pageview" and kind != "event":
        return None
    hit_id = get("hit_id")
    if hit_id is not None:
        if type(hit_id) is not str or len(hit_id) != 36:
            return None
        hit_id = hit_id.lower()
        if _UUID.fullmatch(hit_id) is None:
            return None
    url = get("url")
    if type(url) is not str:
        return None
    parts = _URLS.get(url)  # pages repeat: their parts are remembered
    if parts is None:
        if len(url) > MAX_URL_LENGTH:
            return None
        match = _URL.fullmatch(url)
        if match is None:
            return None
        parts = match.groups()
        _remember(_URLS, url, parts)
    host, path, query = parts
    referrer = get("referrer")
    referrer_host = None
    if not referrer:
        if referrer is not None and referrer != "":
            return None  # 0, False, [], {}: not a referrer
        referrer = ""
    else:
        if type(referrer) is not str:
            return None
        referrer_host = _REFERRER_HOSTS.get(referrer)
        if referrer_host is None:
            if len(referrer) > MAX_URL_LENGTH:
                return None
            ref_match = _URL.fullmatch(referrer)
            if ref_match is None:
                return None
            referrer_host = ref_match.group(1).lower()
            _remember(_REFERRER_HOSTS, referrer, referrer_host)
    title = get("title")
    if title is not None and (type(title) is not str or len(title) > MAX_TEXT):
        return None
    site = get("site")
    if site is not None and (type(site) is not str or not 1 <= len(site) <= 253):
        return None
    try:
        created_at = get("created_at")
        if created_at is not None:
            created_at = _iso_utc(created_at) if type(created_at) is str else parse_timestamp(created_at)
        sent_at = get("sent_at")
        if sent_at is not None:
            sent_at = _iso_utc(sent_at) if type(sent_at) is str else parse_timestamp(sent_at)
        utm_in = get("utm")
        explicit_utm = None if utm_in is None else _utm(utm_in)
        event_in = get("event")
        event = None if event_in is None else _event(event_in)
        previous_guid = get("previous_guid")
        if previous_guid is not None:
            previous_guid = _uuid(previous_guid)
    except (_Defer, PydanticCustomError):
        return None
    if kind == "event" and event is None:
        return None

    utm: dict[str, str]
    click: tuple[str, str] | None
    if query is not None and len(query) > 1:
        campaign = _CAMPAIGNS.get(query)  # landing URLs of one campaign repeat
        if campaign is None:
            campaign = query_campaign_params(query[1:])
            _remember(_CAMPAIGNS, query, campaign)
        utm, click = campaign  # (shared: read here, never changed; merging below makes a new dict)
    else:
        utm, click = {}, None
    if explicit_utm is not None:
        utm = {**utm, **explicit_utm}
    if utm:
        get_utm = utm.get
        source, medium, campaign = get_utm("source"), get_utm("medium"), get_utm("campaign")
        term, content, utm_id = get_utm("term"), get_utm("content"), get_utm("id")
    else:  # most hits
        source = medium = campaign = term = content = utm_id = None
    occurred_at = derive_occurred_at(received_at, created_at, sent_at)
    hit_id = hit_id or new_id()
    is_event = kind == "event"
    # Positional, in Hit's field order (checked at import: OUT_FIELDS).
    record = HitOut(
        SCHEMA_VERSION,
        hit_id,
        guid,
        kind,
        url,
        path or "/",
        (site or host).lower(),
        referrer,
        referrer_host,
        title,
        source,
        medium,
        campaign,
        term,
        content,
        utm_id,
        click[1] if click else None,
        click[0] if click else None,
        event[0] if is_event else None,  # type: ignore[index]
        event[1] if is_event else None,  # type: ignore[index]
        event[2] if is_event else None,  # type: ignore[index]
        previous_guid,
        created_at,
        sent_at,
        received_at,
        occurred_at,
        ip,
        user_agent if len(user_agent) <= MAX_TEXT else user_agent[:MAX_TEXT],
    )
    close = None
    if previous_guid is not None and previous_guid != guid:
        close = CloseView(
            guid=previous_guid, new_guid=guid, hit_id=hit_id, occurred_at=occurred_at, received_at=received_at
        )
    return record, close


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
    },
    {
        "guid": "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01",
        "type": "event",
        "url": "http://example.com",
        "site": "Example.COM",
        "event": {"name": "lead", "module": "contact_form", "properties": {"plan": "b", "n": [1, 2.5, None]}},
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
