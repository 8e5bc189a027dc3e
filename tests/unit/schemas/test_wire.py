"""Decoding failures become typed errors with reasons; nothing raises anything else."""

from __future__ import annotations

import base64

import orjson
import pytest

from schemas.errors import DecodeError, InvalidInput, UnsupportedVersion, ValidationFailed
from schemas.wire import dead_letter, encode, events_codec, hit_codec, session_codec


@pytest.mark.parametrize("raw", [b"", b"\xff\xfe", b"{", b"[1,2]", b'"text"', b"null"])
def test_garbage_is_a_decode_error(raw):
    with pytest.raises(DecodeError):
        hit_codec.decode(raw)


def test_wrong_version_is_named():
    with pytest.raises(UnsupportedVersion) as info:
        hit_codec.decode(orjson.dumps({"v": 99, "kind": "hit"}))
    assert info.value.errors[0].field == "v"
    assert "99" in info.value.errors[0].message


def test_missing_fields_are_listed():
    with pytest.raises(ValidationFailed) as info:
        hit_codec.decode(orjson.dumps({"v": 1, "kind": "hit", "guid": "x"}))
    fields = {e.field for e in info.value.errors}
    assert {"hit.hit_id", "hit.url", "hit.occurred_at"} <= fields


def test_every_codec_raises_only_invalid_input():
    for codec in (hit_codec, session_codec, events_codec):
        with pytest.raises(InvalidInput):
            codec.decode(b'{"v": 1}')


def test_a_dead_letter_keeps_at_most_its_limit_of_the_original_bytes_and_says_so():
    letter = dead_letter("sessionizer", "sessionizer error", b"x" * 100, payload_limit=64)
    assert base64.b64decode(letter.payload_b64) == b"x" * 64
    assert letter.reason == "sessionizer error (payload cut to its first 64 of 100 bytes)"
    assert dead_letter("ingest", "invalid hit", b"x" * 100).reason == "invalid hit"  # under the default limit


def test_dead_letter_keeps_the_original_bytes():
    raw = b"\x00\x01 not json"
    letter = dead_letter("sessionizer", "not valid JSON", raw, topic="t.hits", partition=3, offset=7, key=b"k")
    assert base64.b64decode(letter.payload_b64) == raw
    back = orjson.loads(encode(letter))
    assert back["reason"] == "not valid JSON" and back["partition"] == 3 and back["key"] == "k"
