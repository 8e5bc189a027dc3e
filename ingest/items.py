"""The items of a request body, in order, and the way back to each item's original bytes.

`ingest.body` splits a body into `Items`; `ingest.intake` takes them, and reaches back to an
item's bytes only for the dead letter of an item it refuses (`Items.raw`), which for a JSON
array means finding the item in the body again (`array_spans`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

Format = Literal["json", "ndjson"]


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


def json_type(value: object) -> str:
    """What a decoded JSON value is, for error messages ("must be a hit object, not a number")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
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
