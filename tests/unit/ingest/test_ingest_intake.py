"""The pure core of POST /v1/hits: what is accepted, refused, dead-lettered, and the status."""

from __future__ import annotations

import base64
from datetime import datetime, timezone

import orjson
import pytest

from ingest.body import parse
from ingest.errors import MalformedBody, PayloadTooLarge, TooManyItems
from ingest.intake import Edge, Intake, new_hit_id
from schemas.hit import CloseRecord, Hit
from schemas.wire import deadletter_codec, hit_codec

NOW = datetime(2026, 3, 2, 9, 0, 5, tzinfo=timezone.utc)
EDGE = Edge(received_at=NOW, ip="203.0.113.0", user_agent="Mozilla/5.0 (Test)")
GUID = "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01"
OLD = "11111111-2222-4333-8444-555555555555"
HIT = {
    "guid": GUID,
    "url": "https://www.example.com/a?utm_source=news",
    "hit_id": "0b8f3f1e-7a01-4c3e-9d61-6f1c2b0e4a57",
}


def run(body: bytes, intake: Intake | None = None, fmt: str = "json"):
    return (intake or Intake()).process(parse(body, fmt, 500), EDGE)  # type: ignore[arg-type]


@pytest.mark.parametrize("fast_path", [True, False])
def test_valid_hit_is_accepted_enriched_and_keyed_by_guid(fast_path: bool) -> None:
    out = run(orjson.dumps({**HIT, "guid": GUID.upper()}), Intake(fast_path=fast_path))
    assert out.status == 202 and out.accepted == 1 and out.rejected == [] and out.dead_letters == []
    [(key, value)] = out.hits
    assert key == GUID.encode()  # lower-cased
    hit = hit_codec.decode(value)
    assert isinstance(hit, Hit)
    assert (hit.guid, hit.received_at, hit.occurred_at, hit.ip, hit.user_agent) == (
        GUID,
        NOW,
        NOW,
        "203.0.113.0",
        "Mozilla/5.0 (Test)",
    )
    assert (hit.site, hit.path, hit.utm_source, hit.hit_id) == ("www.example.com", "/a", "news", HIT["hit_id"])


def test_edge_assigns_a_hit_id_when_absent() -> None:
    out = run(orjson.dumps({"guid": GUID, "url": "https://e.com/"}))
    hit_id = orjson.loads(out.hits[0][1])["hit_id"]
    assert len(hit_id) == 36 and hit_id[14] == "4" and hit_id[19] in "89ab"


def test_new_hit_id_is_a_random_version_4_uuid() -> None:
    import uuid

    ids = {new_hit_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)


def test_previous_guid_adds_a_close_record_keyed_by_the_previous_guid() -> None:
    out = run(orjson.dumps({**HIT, "previous_guid": OLD.upper()}))
    assert out.accepted == 1
    [(hit_key, _), (close_key, close_value)] = out.hits
    assert hit_key == GUID.encode() and close_key == OLD.encode()
    close = hit_codec.decode(close_value)
    assert isinstance(close, CloseRecord)
    assert (close.guid, close.new_guid, close.hit_id) == (OLD, GUID, HIT["hit_id"])


def test_mixed_batch_is_202_with_rejections_by_index_and_dead_letters() -> None:
    body = orjson.dumps([HIT, {"guid": "nope", "url": "ftp://x"}, 7, {**HIT, "created_at": "2026-03-02T09:00:00"}])
    out = run(body)
    assert out.status == 202 and out.accepted == 1
    assert [r["index"] for r in out.rejected] == [1, 2, 3]
    fields = {e["field"] for e in out.rejected[0]["errors"]}
    assert fields == {"guid", "url"}
    assert out.rejected[1]["errors"] == [{"field": "body", "message": "must be a hit object, not a number"}]
    assert out.rejected[2]["errors"][0]["field"] == "created_at"
    assert "time zone" in out.rejected[2]["errors"][0]["message"]
    assert out.refused == {"invalid_hit": 3}
    letters = [deadletter_codec.decode(v) for _, v in out.dead_letters]
    assert [base64.b64decode(d.payload_b64) for d in letters] == [
        b'{"guid":"nope","url":"ftp://x"}',
        b"7",
        orjson.dumps({**HIT, "created_at": "2026-03-02T09:00:00"}),
    ]
    assert all(d.source == "ingest" and d.reason == "invalid hit" and d.at == NOW for d in letters)
    assert letters[0].errors == out.rejected[0]["errors"]
    assert [k for k, _ in out.dead_letters] == [b"nope", None, GUID.encode()]  # keyed like the device's hits


def test_every_item_invalid_is_400_with_the_same_body_shape() -> None:
    out = run(orjson.dumps([{"url": "https://e.com/"}, {"guid": GUID}]))
    assert out.status == 400 and out.accepted == 0 and out.hits == []
    assert out.body() == {
        "accepted": 0,
        "rejected": [
            {"index": 0, "errors": [{"field": "guid", "message": "is required"}]},
            {"index": 1, "errors": [{"field": "url", "message": "is required"}]},
        ],
    }
    assert len(out.dead_letters) == 2


def test_ndjson_bad_line_is_rejected_by_index_with_its_bytes() -> None:
    body = orjson.dumps(HIT) + b"\n{oops\n" + orjson.dumps(HIT)
    out = run(body, fmt="ndjson")
    assert out.status == 202 and out.accepted == 2
    assert out.rejected[0]["index"] == 1 and "not valid JSON" in out.rejected[0]["errors"][0]["message"]
    assert base64.b64decode(deadletter_codec.decode(out.dead_letters[0][1]).payload_b64) == b"{oops"


def test_site_allow_list() -> None:
    intake = Intake(allowed_sites=frozenset({"www.example.com"}))
    body = orjson.dumps([HIT, {**HIT, "url": "https://spam.example.net/"}, {**HIT, "site": "WWW.EXAMPLE.COM"}])
    out = run(body, intake)
    assert out.accepted == 2
    assert out.rejected == [
        {"index": 1, "errors": [{"field": "site", "message": "'spam.example.net' is not on this edge's allow-list"}]}
    ]
    assert out.refused == {"site_not_allowed": 1}
    assert deadletter_codec.decode(out.dead_letters[0][1]).reason == "site not on the allow-list"


def test_huge_properties_are_refused() -> None:
    big = {**HIT, "type": "event", "event": {"name": "lead", "properties": {"blob": "x" * 9000}}}
    out = run(orjson.dumps(big))
    assert out.status == 400
    [error] = out.rejected[0]["errors"]
    assert error["field"] == "event.properties" and "the limit is 8192" in error["message"]


def test_dead_letter_payload_is_cut_to_the_limit() -> None:
    intake = Intake(deadletter_payload_bytes=1024)
    out = run(orjson.dumps({"guid": "x" * 5000, "url": "https://e.com/"}), intake)
    letter = deadletter_codec.decode(out.dead_letters[0][1])
    assert len(base64.b64decode(letter.payload_b64)) == 1024
    assert "cut to its first 1024 of" in letter.reason
    assert out.dead_letters[0][0] is None  # a 5000-character "guid" is no key


def test_whole_body_refusals() -> None:
    intake = Intake()
    malformed = MalformedBody("not valid JSON", [])
    refusal = intake.refuse(malformed, b"{nope", EDGE)
    [(key, value)] = refusal.dead_letters
    letter = deadletter_codec.decode(value)
    assert key is None and letter.reason == "not valid JSON" and base64.b64decode(letter.payload_b64) == b"{nope"
    assert refusal.status == 400 and refusal.body() == {"accepted": 0, "rejected": [{"index": None, "errors": []}]}
    assert intake.refuse(TooManyItems("too many items", []), b"[...]", EDGE).dead_letters  # data: kept
    too_large = intake.refuse(PayloadTooLarge("body too large", []), b"", EDGE)
    assert too_large.dead_letters == [] and too_large.status == 413  # never read: nothing to keep
