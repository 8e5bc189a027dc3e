"""The hit: as a site posts it (`HitIn`), and as the edge publishes it to `hits` (`Hit`).

`enrich` is the pure step between the two: it adds what only the edge knows (receive
time, IP, user agent), derives `occurred_at`, and resolves the URL's campaign data once,
so the sessionizer never parses a URL again.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import unquote_plus, urlsplit

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from schemas import SCHEMA_VERSION
from schemas.timefmt import parse_timestamp

MAX_URL_LENGTH = 4096
MAX_PROPERTIES_BYTES = 8 * 1024
MAX_TEXT = 2048  # title, user agent, utm values: longer is garbage, not data
MAX_USER_ID = 256  # a site's own account id (or a hash of it): longer is not an id
UTM_KEYS = ("source", "medium", "campaign", "term", "content", "id")
# Kept from the URL, in this order of precedence when a URL carries several.
CLICK_ID_PARAMS = ("gclid", "gbraid", "wbraid", "dclid", "msclkid", "fbclid", "ttclid", "li_fat_id", "twclid")
_INTERESTING_PARAMS = frozenset({f"utm_{k}" for k in UTM_KEYS} | set(CLICK_ID_PARAMS))
_QUERY_MARKERS = ("utm_", "UTM_", *CLICK_ID_PARAMS)
_QUERY_MARKER = re.compile("|".join(re.escape(marker) for marker in _QUERY_MARKERS))  # any of them, as a substring
# PostgreSQL's text and jsonb cannot hold U+0000 (its only refusal in a UTF-8 database; orjson
# already refuses lone surrogates). A value holding one would be accepted here and refused by
# the sink after the 202, so the edge refuses it with a field error instead (SPEC section 2).
NUL = "\x00"
NUL_MESSAGE = "must not contain the NUL character (\\u0000): PostgreSQL cannot store it"
NUL_JSON = b"\\u0000"  # how orjson writes NUL inside a JSON string (a key's or a value's)
# A conversion's value: a JSON number (negative for a refund) up to this size; beyond it is a mistake
# (an order number in the wrong field), not money. Currency: an ISO 4217 code as written, e.g. EUR.
MAX_VALUE = 10**12
CURRENCY = re.compile(r"[A-Z]{3}")


def normalise_uuid(value: object) -> str:
    """Any spelling `uuid.UUID` reads, to the canonical lower-case hyphenated form."""
    if not isinstance(value, str):
        raise PydanticCustomError("uuid", "must be a UUID string, e.g. 6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise PydanticCustomError(
            "uuid", "must be a UUID, e.g. 6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01 (got '{value}')", {"value": value[:64]}
        ) from None


def no_nul(value: str) -> str:
    """A text field PostgreSQL can store: no NUL character."""
    if NUL in value:
        raise PydanticCustomError("nul", NUL_MESSAGE)
    return value


def holds_nul(value: object) -> bool:
    """Whether a decoded JSON value holds NUL in any string, keys included."""
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, dict):
        return any(NUL in key or holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(holds_nul(item) for item in value)
    return False


def _check_http_url(value: object) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("url", "must be a string holding an absolute http(s) URL")
    if len(value) > MAX_URL_LENGTH:
        raise PydanticCustomError("url", "is longer than {limit} characters", {"limit": MAX_URL_LENGTH})
    if NUL in value:  # (urlsplit keeps it in the path and the query)
        raise PydanticCustomError("nul", NUL_MESSAGE)
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        raise PydanticCustomError("url", "is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise PydanticCustomError("url", "must be an absolute http(s) URL, e.g. https://example.com/page")
    return value


def _check_referrer(value: object) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise PydanticCustomError("url", "must be a URL string or empty")
    if len(value) > MAX_URL_LENGTH:
        raise PydanticCustomError("url", "is longer than {limit} characters", {"limit": MAX_URL_LENGTH})
    if NUL in value:
        raise PydanticCustomError("nul", NUL_MESSAGE)
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        raise PydanticCustomError("url", "is not a valid URL") from None
    # Referrers may be android-app:// and the like, so any scheme with a host will do.
    if not parts.scheme or not host:
        raise PydanticCustomError("url", "must be an absolute URL or empty")
    return value


def check_value(value: object) -> int | float | None:
    """`event.value`: a finite JSON number of at most MAX_VALUE in size, kept as sent (int or float)."""
    if value is None:
        return None
    if type(value) is not int and type(value) is not float:
        raise PydanticCustomError("value", "must be a number, e.g. 49.9 (a string or a boolean is not)")
    if (type(value) is float and not math.isfinite(value)) or abs(value) > MAX_VALUE:
        raise PydanticCustomError("value", "must be a finite number of at most {limit} in size", {"limit": MAX_VALUE})
    return value


def check_currency(value: object) -> str | None:
    """`event.currency`: ISO 4217, three upper-case letters."""
    if value is None:
        return None
    if type(value) is not str or CURRENCY.fullmatch(value) is None:
        raise PydanticCustomError("currency", "must be an ISO 4217 code: three upper-case letters, e.g. EUR")
    return value


Money = Annotated[int | float | None, BeforeValidator(check_value)]
Currency = Annotated[str | None, BeforeValidator(check_currency)]
Uuid = Annotated[str, BeforeValidator(normalise_uuid)]
HttpUrl = Annotated[str, BeforeValidator(_check_http_url)]
Referrer = Annotated[str, BeforeValidator(_check_referrer)]
Timestamp = Annotated[datetime | None, BeforeValidator(parse_timestamp)]
ShortText = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(no_nul)]
Name = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(no_nul)]


def _check_user_id(value: object) -> str | None:
    """`user_id`: the site's id of a logged-in person (SPEC section 2), 1..MAX_USER_ID characters, no NUL."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise PydanticCustomError("user_id", "must be a string (the site's id of the person), or null")
    if not 1 <= len(value) <= MAX_USER_ID:
        raise PydanticCustomError(
            "user_id", "must be 1 to {limit} characters (got {length})", {"limit": MAX_USER_ID, "length": len(value)}
        )
    if NUL in value:
        raise PydanticCustomError("nul", NUL_MESSAGE)
    return value


UserId = Annotated[str | None, BeforeValidator(_check_user_id)]


class UtmIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    source: ShortText | None = None
    medium: ShortText | None = None
    campaign: ShortText | None = None
    term: ShortText | None = None
    content: ShortText | None = None
    id: ShortText | None = None


class EventIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: Name
    module: Name | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    value: Money = None  # a conversion's worth, with its currency
    currency: Currency = None

    @field_validator("properties")
    @classmethod
    def _properties_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            dumped = orjson.dumps(value)
        except (TypeError, orjson.JSONEncodeError):
            raise PydanticCustomError("properties", "must be JSON-serialisable") from None
        # (the bytes hold the escape also for a literal backslash-u0000: then the walk decides)
        if NUL_JSON in dumped and holds_nul(value):
            raise PydanticCustomError("nul", "a key or a value " + NUL_MESSAGE)
        size = len(dumped)
        if size > MAX_PROPERTIES_BYTES:
            raise PydanticCustomError(
                "properties", "is {size} bytes as JSON; the limit is {limit}", {"size": size, "limit": MAX_PROPERTIES_BYTES}
            )
        return value


class HitIn(BaseModel):
    """One hit as a site posts it (SPEC section 2). Unknown fields are ignored, as trackers evolve."""

    model_config = ConfigDict(extra="ignore")

    guid: Uuid
    type: Literal["pageview", "event"] = "pageview"
    hit_id: Uuid | None = None
    url: HttpUrl
    referrer: Referrer = ""
    title: ShortText | None = None
    site: Annotated[str, Field(min_length=1, max_length=253), AfterValidator(no_nul)] | None = None
    utm: UtmIn | None = None
    created_at: Timestamp = None
    sent_at: Timestamp = None
    event: EventIn | None = None
    previous_guid: Uuid | None = None
    user_id: UserId = None

    @model_validator(mode="after")
    def _event_needs_body(self) -> HitIn:
        if self.type == "event" and self.event is None:
            raise PydanticCustomError("event", "is required when type is \"event\" (an object with a name)")
        event = self.event
        if event is not None and (event.value is None) != (event.currency is None):
            # (no location at this level: the error's type names the field)
            if event.currency is None:
                raise PydanticCustomError("event.currency", "is required with event.value (ISO 4217, e.g. EUR)")
            raise PydanticCustomError("event.value", "is required with event.currency (a number)")
        return self


class Hit(BaseModel):
    """The enriched hit on the `hits` topic, keyed by guid. Everything the sessionizer needs, resolved."""

    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = SCHEMA_VERSION
    kind: Literal["hit"] = "hit"
    hit_id: str
    guid: str
    type: Literal["pageview", "event"]
    url: str
    path: str
    site: str
    referrer: str = ""
    referrer_host: str | None = None
    title: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    utm_id: str | None = None
    click_id: str | None = None
    click_id_type: str | None = None
    event_name: str | None = None
    event_module: str | None = None
    event_properties: dict[str, Any] | None = None
    event_value: Money = None
    event_currency: Currency = None
    previous_guid: str | None = None
    user_id: str | None = None  # the site's id of the person (identify()), as sent
    created_at: AwareDatetime | None = None
    sent_at: AwareDatetime | None = None
    received_at: AwareDatetime
    occurred_at: AwareDatetime
    ip: str | None = None
    user_agent: str = ""
    datacenter: bool = False  # the client address is in a configured data-centre range (SPEC rule 11)


class CloseRecord(BaseModel):
    """Published to `hits` keyed by the *previous* guid, so it reaches the partition holding that
    device's open session, which it closes with end_reason `storage_cleared` (SPEC rule 12)."""

    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = SCHEMA_VERSION
    kind: Literal["close"] = "close"
    guid: str
    new_guid: str
    hit_id: str
    occurred_at: AwareDatetime
    received_at: AwareDatetime


class ForgetRecord(BaseModel):
    """Published to `hits` keyed by the guid by `touchstream forget`, so it reaches the partition
    holding that device's state, which the sessionizer then deletes (its table key: a changelog
    tombstone) without emitting anything. It carries no hit time: it must not move event time."""

    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = SCHEMA_VERSION
    kind: Literal["forget"] = "forget"
    guid: str
    requested_at: AwareDatetime


HitRecord = Annotated[Hit | CloseRecord | ForgetRecord, Field(discriminator="kind")]


def derive_occurred_at(received_at: datetime, created_at: datetime | None, sent_at: datetime | None) -> datetime:
    """SPEC section 2: device clock skew cancels out when both device times are known."""
    if created_at is not None and sent_at is not None:
        occurred = received_at - (sent_at - created_at)
    elif created_at is not None:
        occurred = created_at
    else:
        occurred = received_at
    # (a comparison, not min(): this runs for every hit and min() costs more; bench/micro_bench.py)
    return occurred if occurred < received_at else received_at


def campaign_params(url: str) -> tuple[dict[str, str], tuple[str, str] | None]:
    """utm_* values and the first click id (by CLICK_ID_PARAMS precedence) in the URL's query."""
    return query_campaign_params(urlsplit(url).query)


def query_campaign_params(query: str) -> tuple[dict[str, str], tuple[str, str] | None]:
    """`campaign_params` of a URL whose query (the part after "?", no fragment) is already known."""
    # Most hits carry no campaign data: a substring test is far cheaper than parsing the query.
    # (Plain loops rather than generators: this runs for every hit with a query string.)
    if not query or _QUERY_MARKER.search(query) is None:
        return {}, None
    found: dict[str, str] = {}
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        lowered = key.lower()
        if lowered in _INTERESTING_PARAMS and lowered not in found and value:
            decoded = unquote_plus(value)[:MAX_TEXT]
            # "%00" decodes to NUL, which PostgreSQL cannot store: replaced (the URL keeps the original).
            found[lowered] = decoded.replace(NUL, "\ufffd") if NUL in decoded else decoded
    utm: dict[str, str] = {}
    click: tuple[str, str] | None = None
    for key, value in found.items():
        if key.startswith("utm_"):
            utm[key[4:]] = value
    for param in CLICK_ID_PARAMS:
        if param in found:
            click = (param, found[param])
            break
    return utm, click


def enrich(
    hit: HitIn,
    *,
    received_at: datetime,
    ip: str | None,
    user_agent: str,
    new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    datacenter: bool = False,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The edge's pure step: the posted hit plus what the edge knows, as published to `hits`.

    Returns the wire dicts of `Hit` (and of a `CloseRecord` when the hit names a previous
    guid) rather than models: building a 30-field model costs more than the whole rest of
    this step, and the dict goes straight to orjson. Tests check the dicts against the models.
    """
    parts = urlsplit(hit.url)
    url_utm, click = campaign_params(hit.url) if parts.query else ({}, None)
    utm = url_utm
    if hit.utm is not None:
        explicit = hit.utm.model_dump(exclude_none=True)
        utm = {**url_utm, **explicit}  # explicit values win (SPEC section 2)
    occurred_at = derive_occurred_at(received_at, hit.created_at, hit.sent_at)
    hit_id = hit.hit_id or new_id()
    event = hit.event if hit.type == "event" else None
    record: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "kind": "hit",
        "hit_id": hit_id,
        "guid": hit.guid,
        "type": hit.type,
        "url": hit.url,
        "path": parts.path or "/",
        "site": (hit.site or parts.hostname or "").lower(),
        "referrer": hit.referrer,
        "referrer_host": urlsplit(hit.referrer).hostname if hit.referrer else None,
        "title": hit.title,
        "utm_source": utm.get("source"),
        "utm_medium": utm.get("medium"),
        "utm_campaign": utm.get("campaign"),
        "utm_term": utm.get("term"),
        "utm_content": utm.get("content"),
        "utm_id": utm.get("id"),
        "click_id": click[1] if click else None,
        "click_id_type": click[0] if click else None,
        "event_name": event.name if event else None,
        "event_module": event.module if event else None,
        "event_properties": event.properties if event else None,
        "event_value": event.value if event else None,
        "event_currency": event.currency if event else None,
        "previous_guid": hit.previous_guid,
        "user_id": hit.user_id,
        "created_at": hit.created_at,
        "sent_at": hit.sent_at,
        "received_at": received_at,
        "occurred_at": occurred_at,
        "ip": ip,
        "user_agent": user_agent[:MAX_TEXT],
        "datacenter": datacenter,
    }
    close = None
    if hit.previous_guid is not None and hit.previous_guid != hit.guid:
        close = {
            "v": SCHEMA_VERSION,
            "kind": "close",
            "guid": hit.previous_guid,
            "new_guid": hit.guid,
            "hit_id": hit_id,
            "occurred_at": occurred_at,
            "received_at": received_at,
        }
    return record, close
