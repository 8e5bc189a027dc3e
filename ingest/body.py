"""Request bodies: which content types the edge reads, reading them within a byte limit, and
splitting them into items.

    application/json          one hit object, or an array of them
    text/plain                the same (navigator.sendBeacon and "simple" fetches send this)
    (no content type)         the same (sendBeacon of an untyped Blob sends none)
    application/x-ndjson      one hit object per line; blank lines are skipped

Everything here is pure except `read_body`, which pulls the ASGI `receive` channel and
stops as soon as the limit is passed, so an oversized body is never held in memory.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from ingest.errors import FieldError, MalformedBody, PayloadTooLarge, TooManyItems, UnsupportedMediaType

Format = Literal["json", "ndjson"]

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


async def read_body(receive: Callable[[], Awaitable[dict[str, Any]]], limit: int) -> bytes:
    """The request body, or PayloadTooLarge as soon as more than `limit` bytes arrived.

    Chunked uploads have no Content-Length, so the limit is enforced here, chunk by chunk.
    """
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise too_large(limit)
        return body
    chunks = [body]
    size = len(body)
    while True:
        if size > limit:
            raise too_large(limit)
        if message["type"] != "http.request":
            raise MalformedBody("request body incomplete", [FieldError("body", "the client disconnected")])
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)


# --- splitting a body into items --------------------------------------------------------------


class BadJson:
    """An NDJSON line that is not JSON: kept in its place so indexes stay right."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


@dataclass(slots=True)
class Items:
    """The decoded items of a body, in order, and a way back to each item's original bytes."""

    values: list[Any]
    body: bytes
    format: Format
    single: bool = False
    _lines: list[bytes] | None = None
    _spans: list[tuple[int, int]] | None = field(default=None)

    def __len__(self) -> int:
        return len(self.values)

    def raw(self, index: int) -> bytes:
        """The bytes item `index` was sent as (for its dead letter)."""
        if self.single:
            return self.body
        if self._lines is not None:
            return self._lines[index]
        if self._spans is None:
            self._spans = array_spans(self.body, len(self.values))
        if self._spans and index < len(self._spans):
            start, end = self._spans[index]
            return self.body[start:end]
        # The scan gave up (see array_spans): the item as JSON is the next best thing.
        return orjson.dumps(self.values[index])


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


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


# A JSON string (escapes included), or one structural character. Everything else (numbers,
# literals, whitespace) is skipped by the regex engine in C, so only these reach Python.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},]', re.DOTALL)
_SCAN_BUDGET = 200_000  # tokens; past that (pathological nesting) the scan gives up


def array_spans(body: bytes, expected: int) -> list[tuple[int, int]]:
    """(start, end) of each top-level element of a non-empty JSON array body (valid JSON only).

    Run only when an item is refused, to dead-letter its original bytes. Returns [] when the
    scan finds a different element count or runs past its budget.
    """
    spans: list[tuple[int, int]] = []
    open_at = body.index(b"[")
    segment = open_at + 1
    depth = 0
    for count, match in enumerate(_TOKEN.finditer(body, segment)):
        if count > _SCAN_BUDGET:
            return []
        first = body[match.start()]
        if first == 0x22:  # a string: no structure inside
            continue
        if first in b"[{":
            depth += 1
        elif first in b"]}":
            if depth == 0:  # the array's own closing bracket ends the last element
                spans.append(_strip(body, segment, match.start()))
                break
            depth -= 1
        elif depth == 0:  # a comma between two elements
            spans.append(_strip(body, segment, match.start()))
            segment = match.end()
    return spans if len(spans) == expected else []


def _strip(body: bytes, start: int, end: int) -> tuple[int, int]:
    while start < end and body[start] in b" \t\r\n":
        start += 1
    while end > start and body[end - 1] in b" \t\r\n":
        end -= 1
    return start, end
