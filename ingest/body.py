"""Request bodies: which content types the edge reads, reading them within a byte limit, and
splitting them into items, which `BodyReader` then hands to the intake.

    application/json          one hit object, or an array of them
    text/plain                the same (navigator.sendBeacon and "simple" fetches send this)
    (no content type)         the same (sendBeacon of an untyped Blob sends none)
    application/x-ndjson      one hit object per line; blank lines are skipped

A hit's body goes one way through the edge: `ingest.app` reads the headers and hands the
request to `BodyReader.take`, which reads the bytes, splits them into `ingest.items.Items` and
passes those to `ingest.intake` (which runs `ingest.fastpath` per hit); the outcome comes back
up once, to be answered. Everything here is pure except the reading, which pulls the ASGI
`receive` channel and stops as soon as the limit is passed, so an oversized body is never held
in memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from ingest.errors import (
    BodyRefused,
    ClientGone,
    FieldError,
    MalformedBody,
    PayloadTooLarge,
    TooManyItems,
    UnsupportedMediaType,
)
from ingest.intake import Edge, Intake, Outcome, Refusal
from ingest.items import BadJson, Format, Items, json_type

Receive = Callable[[], Awaitable[Any]]

JSON_TYPES = frozenset({"application/json", "text/plain"})
NDJSON_TYPES = frozenset({"application/x-ndjson"})
ACCEPTED_TYPES = ("application/json", "text/plain", "application/x-ndjson")


def media_format(content_type: bytes | None, content_encoding: bytes | None = None) -> Format:
    """The body format a Content-Type (and Content-Encoding) names; UnsupportedMediaType otherwise."""
    if content_encoding is not None and content_encoding.strip().lower() not in (b"", b"identity"):
        raise UnsupportedMediaType(
            "unsupported content encoding",
            [
                FieldError(
                    "content-encoding", f"{_text(content_encoding)!r} is not supported; send the body uncompressed"
                )
            ],
        )
    if content_type is None or not content_type.strip():
        return "json"
    mime, _, params = _text(content_type).partition(";")
    mime = mime.strip().lower()
    charset = _charset(params)
    if charset is not None and charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(
            "unsupported charset", [FieldError("content-type", f"charset {charset!r} is not supported; send UTF-8")]
        )
    if mime in JSON_TYPES:
        return "json"
    if mime in NDJSON_TYPES:
        return "ndjson"
    raise UnsupportedMediaType(
        "unsupported content type",
        [FieldError("content-type", f"{mime or 'empty'!r} is not supported; send one of {', '.join(ACCEPTED_TYPES)}")],
    )


def _text(raw: bytes) -> str:
    return raw.decode("latin-1")


def _charset(params: str) -> str | None:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge("body too large", [FieldError("body", f"is larger than {limit} bytes")])


def check_content_length(header: bytes | None, limit: int) -> None:
    """Refuse early when the declared length is already over the limit (no byte read)."""
    if header is None:
        return
    try:
        declared = int(header)
    except ValueError:
        return  # the server (h11/httptools) rejects malformed lengths itself
    if declared > limit:
        raise too_large(limit)


async def read_body(receive: Receive, limit: int) -> bytes:
    """The request body, or PayloadTooLarge as soon as more than `limit` bytes arrived."""
    message = await receive()
    body = whole_body(message, limit)
    return body if body is not None else await read_chunks(message, receive, limit)


def whole_body(message: Mapping[str, Any], limit: int) -> bytes | None:
    """The body when the first ASGI message holds all of it (as it nearly always does); None when
    more chunks follow (`read_chunks`)."""
    if message.get("more_body", False):
        return None
    body: bytes = message.get("body", b"")
    if len(body) > limit:
        raise too_large(limit)
    return body


async def read_chunks(message: Mapping[str, Any], receive: Receive, limit: int) -> bytes:
    """The body of a request sent in chunks, from its first message on; PayloadTooLarge as soon
    as more than `limit` bytes arrived (chunked uploads have no Content-Length to check first)."""
    body = message.get("body", b"")
    chunks = [body]
    size = len(body)
    while True:
        if size > limit:
            raise too_large(limit)
        if message["type"] != "http.request":
            raise ClientGone("request body incomplete", [FieldError("body", "the client disconnected")])
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)


# --- splitting a body into items --------------------------------------------------------------


def parse(body: bytes, fmt: Format, max_items: int) -> Items:
    """Split a body into items. Raises MalformedBody / TooManyItems when the body as a whole is refused.

    Per-item problems (an array element that is not an object, an NDJSON line that is not
    JSON) are not raised: they stay in `values` and the item's validation reports them.
    """
    if fmt == "ndjson":
        return _parse_ndjson(body, max_items)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if not body.strip():
            raise MalformedBody(
                "empty body", [FieldError("body", "is empty; send a hit object or an array of hits")]
            ) from None
        raise MalformedBody("not valid JSON", [FieldError("body", f"is not valid JSON: {exc}")]) from None
    if isinstance(value, dict):
        return Items([value], body, "json", single=True)
    if isinstance(value, list):
        if not value:
            raise MalformedBody("empty array", [FieldError("body", "is an empty array; send at least one hit")])
        if len(value) > max_items:
            raise _too_many(len(value), max_items)
        return Items(value, body, "json")
    raise MalformedBody(
        "wrong shape", [FieldError("body", f"must be a hit object or an array of hits, not {json_type(value)}")]
    )


def _parse_ndjson(body: bytes, max_items: int) -> Items:
    lines = [line for line in body.split(b"\n") if line.strip()]
    if not lines:
        raise MalformedBody("empty body", [FieldError("body", "has no lines; send one hit object per line")])
    if len(lines) > max_items:
        raise _too_many(len(lines), max_items)
    values: list[Any] = []
    for line in lines:
        try:
            values.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            values.append(BadJson(f"is not valid JSON: {exc}"))
    return Items(values, body, "ndjson", _lines=[line.strip() for line in lines])


def _too_many(count: int, limit: int) -> TooManyItems:
    return TooManyItems(
        "too many items", [FieldError("body", f"holds {count} hits; the limit is {limit} per request, split the batch")]
    )


class BodyReader:
    """POST /v1/hits from its headers to its outcome: the body read within its limits, split into
    items, and handed to the intake. Refusals of the body as a whole come back as a `Refusal`."""

    _MAX_FORMATS = 256  # distinct (content type, encoding) pairs remembered

    def __init__(self, intake: Intake, *, max_body: int, max_items: int) -> None:
        self.intake = intake
        self.max_body = max_body
        self.max_items = max_items
        self._formats: dict[tuple[bytes | None, bytes | None], Format] = {}

    async def take(self, headers: Mapping[bytes, bytes], receive: Receive, edge: Edge) -> Outcome | Refusal:
        body = b""
        try:
            get = headers.get
            content = (get(b"content-type"), get(b"content-encoding"))
            fmt = self._formats.get(content) or self.format(*content)
            check_content_length(get(b"content-length"), self.max_body)
            message = await receive()
            body = whole_body(message, self.max_body)  # (nearly always: one message holds it all)
            if body is None:
                body = await read_chunks(message, receive, self.max_body)
            items = parse(body, fmt, self.max_items)
        except BodyRefused as exc:
            return self.intake.refuse(exc, body, edge)
        return self.intake.process(items, edge)

    def format(self, content_type: bytes | None, content_encoding: bytes | None) -> Format:
        """`media_format`, remembered: clients send a handful of distinct headers."""
        key = (content_type, content_encoding)
        fmt = self._formats.get(key)
        if fmt is None:
            fmt = media_format(content_type, content_encoding)  # raises for what is refused
            # Short headers only: a client chooses them, and 256 of any length would be unbounded.
            if len(self._formats) < self._MAX_FORMATS and len(content_type or b"") + len(content_encoding or b"") <= 256:
                self._formats[key] = fmt
        return fmt
