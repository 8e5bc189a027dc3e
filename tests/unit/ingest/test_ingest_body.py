"""Body parsing: every accepted shape, every limit, every refusal (pure, no services)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.body import check_content_length, media_format, parse, read_body
from ingest.errors import ClientGone, MalformedBody, PayloadTooLarge, TooManyItems, UnsupportedMediaType
from ingest.items import BadJson, array_spans

HIT = {"guid": "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01", "url": "https://example.com/"}


# --- content type -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"application/json", "json"),
        (b"Application/JSON; charset=utf-8", "json"),
        (b"text/plain;charset=UTF-8", "json"),  # what navigator.sendBeacon sends for a string
        (b"text/plain", "json"),
        (None, "json"),  # sendBeacon of an untyped Blob sends no content type
        (b"", "json"),
        (b"application/x-ndjson", "ndjson"),
        (b'application/x-ndjson; charset="utf-8"', "ndjson"),
    ],
)
def test_accepted_content_types(header: bytes | None, expected: str) -> None:
    assert media_format(header) == expected


@pytest.mark.parametrize(
    "header",
    [b"application/xml", b"application/x-www-form-urlencoded", b"multipart/form-data; boundary=x", b"image/png"],
)
def test_other_content_types_are_415(header: bytes) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        media_format(header)
    assert caught.value.status == 415
    assert caught.value.errors[0].field == "content-type"
    assert "application/json, text/plain, application/x-ndjson" in caught.value.errors[0].message


def test_non_utf8_charset_is_415() -> None:
    with pytest.raises(UnsupportedMediaType, match="charset"):
        media_format(b"text/plain; charset=iso-8859-1")


def test_compressed_body_is_415() -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        media_format(b"application/json", b"gzip")
    assert caught.value.errors[0].field == "content-encoding"
    assert media_format(b"application/json", b"identity") == "json"


# --- byte limit -------------------------------------------------------------------------------


def test_declared_length_over_the_limit_is_refused_before_reading() -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        check_content_length(b"2000", 1000)
    assert caught.value.status == 413
    assert "1000 bytes" in caught.value.errors[0].message
    check_content_length(b"1000", 1000)  # exactly the limit is fine
    check_content_length(None, 1000)


class Channel:
    """An ASGI receive channel that counts how much it was asked for."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.calls = 0

    async def __call__(self) -> dict:
        index = self.calls
        self.calls += 1
        return {"type": "http.request", "body": self.chunks[index], "more_body": index < len(self.chunks) - 1}


def test_streamed_body_is_joined() -> None:
    channel = Channel([b"ab", b"cd", b"", b"ef"])
    assert asyncio.run(read_body(channel, 100)) == b"abcdef"


def test_streamed_body_stops_at_the_limit_without_reading_the_rest() -> None:
    channel = Channel([b"x" * 400] * 100)  # 40 kB offered in 400-byte chunks, limit 1000
    with pytest.raises(PayloadTooLarge):
        asyncio.run(read_body(channel, 1000))
    assert channel.calls == 3  # 1200 bytes read, then refused: the other 97 chunks never pulled


def test_single_chunk_over_the_limit() -> None:
    with pytest.raises(PayloadTooLarge):
        asyncio.run(read_body(Channel([b"x" * 1001]), 1000))
    assert asyncio.run(read_body(Channel([b"x" * 1000]), 1000)) == b"x" * 1000


def test_disconnect_mid_body_is_refused_without_a_dead_letter() -> None:
    messages = [{"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}]

    async def receive() -> dict:
        return messages.pop(0)

    with pytest.raises(ClientGone, match="incomplete") as caught:
        asyncio.run(read_body(receive, 1000))
    # A slow client closed by its read deadline ends here: its partial bytes are not kept.
    assert not caught.value.dead_letter


# --- shapes -----------------------------------------------------------------------------------


def test_single_object() -> None:
    body = orjson.dumps(HIT)
    items = parse(body, "json", 500)
    assert items.values == [HIT] and items.single
    assert items.raw(0) == body


def test_array() -> None:
    body = orjson.dumps([HIT, {**HIT, "title": "two"}])
    items = parse(body, "json", 500)
    assert len(items) == 2 and items.values[1]["title"] == "two"
    assert orjson.loads(items.raw(1)) == {**HIT, "title": "two"}


def test_array_raw_bytes_are_the_original_bytes() -> None:
    body = b'[ {"guid": "A", "url": "u,]"} ,\n  7 , "x\\"]" , [1,{"a":[]}], null ]'
    items = parse(body, "json", 500)
    assert [items.raw(i) for i in range(5)] == [
        b'{"guid": "A", "url": "u,]"}',
        b"7",
        b'"x\\"]"',
        b'[1,{"a":[]}]',
        b"null",
    ]


def test_ndjson_lines_blank_lines_and_a_bad_line() -> None:
    line0 = orjson.dumps(HIT)
    body = line0 + b"\n\n  \r\n{not json}\r\n" + orjson.dumps({**HIT, "title": "t"}) + b"\n"
    items = parse(body, "ndjson", 500)
    assert len(items) == 3
    assert items.values[0] == HIT
    assert isinstance(items.values[1], BadJson) and "not valid JSON" in items.values[1].message
    assert items.values[2]["title"] == "t"
    assert items.raw(0) == line0 and items.raw(1) == b"{not json}"


@pytest.mark.parametrize(
    ("body", "fmt", "needle"),
    [
        (b"", "json", "empty"),
        (b"   \n", "json", "empty"),
        (b"[]", "json", "empty array"),
        (b"{nope", "json", "not valid JSON"),
        (b'{"guid": 1', "json", "not valid JSON"),
        (b"42", "json", "not a number"),
        (b'"hit"', "json", "not a string"),
        (b"null", "json", "not null"),
        (b"true", "json", "not a boolean"),
        (b"\n\n", "ndjson", "no lines"),
    ],
)
def test_bodies_refused_as_a_whole(body: bytes, fmt: str, needle: str) -> None:
    with pytest.raises(MalformedBody) as caught:
        parse(body, fmt, 500)  # type: ignore[arg-type]
    assert caught.value.status == 400
    assert needle in str(caught.value)


@pytest.mark.parametrize("fmt", ["json", "ndjson"])
def test_too_many_items(fmt: str) -> None:
    hits = [HIT] * 11
    body = orjson.dumps(hits) if fmt == "json" else b"\n".join(orjson.dumps(h) for h in hits)
    with pytest.raises(TooManyItems) as caught:
        parse(body, fmt, 10)  # type: ignore[arg-type]
    assert caught.value.status == 400
    assert "holds 11 hits; the limit is 10" in caught.value.errors[0].message
    assert len(parse(body, fmt, 11)) == 11  # type: ignore[arg-type]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=12,
)


@given(st.lists(json_values, min_size=1, max_size=8), st.sampled_from([b"", b" ", b"\n  ", b"\t"]))
def test_array_spans_find_every_element(values: list, space: bytes) -> None:
    parts = [orjson.dumps(v) for v in values]
    body = b"[" + space + (space + b"," + space).join(parts) + space + b"]"
    spans = array_spans(body, len(values))
    assert [body[a:b] for a, b in spans] == parts
