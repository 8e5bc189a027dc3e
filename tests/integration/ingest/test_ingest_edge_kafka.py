"""The edge against the real broker: what a 202 puts on `hits`, what every refusal puts on
`deadletter`, and the status and message each bad input gets."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from ingest_edge_helpers import ADMIN, NOW, running_edge

from tests.topic_reader import read_topic

from schemas.hit import CloseRecord, Hit
from schemas.topics import Topics
from schemas.wire import deadletter_codec, hit_codec
from touchstream.devstack.partitioner import java_partitions

PARTITIONS = list(range(8))


def guid() -> str:
    return str(uuid.uuid4())


async def test_posted_hits_land_keyed_by_guid_on_the_murmur2_partition_enriched(
    services: Any, topic_prefix: str
) -> None:
    topics = Topics(topic_prefix)
    guids = [guid() for _ in range(40)]
    hits = [
        {
            "guid": g.upper() if i % 3 == 0 else g,
            "hit_id": str(uuid.uuid4()),
            "url": f"https://www.oakridge-apts.com/floorplans?utm_source=google&utm_medium=cpc&gclid=G{i}",
            "referrer": "https://www.google.com/",
            "title": f"Page {i}",
            "created_at": "2026-03-02T09:00:00.000Z",
            "sent_at": "2026-03-02T09:00:02.000Z",
        }
        for i, g in enumerate(guids)
    ]
    async with running_edge(services.kafka_bootstrap, topic_prefix) as (client, _):
        single = await client.post("/v1/hits", json=hits[0], headers={"user-agent": "Mozilla/5.0 (Test)"})
        batch = await client.post("/v1/hits", json=hits[1:], headers={"user-agent": "Mozilla/5.0 (Test)"})
    assert (single.status_code, single.json()) == (202, {"accepted": 1, "rejected": []})
    assert (batch.status_code, batch.json()) == (202, {"accepted": 39, "rejected": []})

    records = await read_topic(services.kafka_bootstrap, topics.hits, 40)
    assert len(records) == 40, "every accepted hit exactly once"
    by_hit_id = {orjson.loads(r.value)["hit_id"]: r for r in records}
    java = java_partitions([g.encode() for g in guids], len(PARTITIONS))
    for sent, g, java_partition in zip(hits, guids, java, strict=True):
        record = by_hit_id[sent["hit_id"]]
        assert record.key == g.encode(), "key = lower-cased guid"
        expected = DefaultPartitioner()(record.key, PARTITIONS, PARTITIONS)
        assert record.partition == expected == java_partition
        hit = hit_codec.decode(record.value)
        assert isinstance(hit, Hit)
        assert hit.guid == g and hit.received_at == NOW
        assert hit.occurred_at == NOW.replace(microsecond=250000) - (hit.sent_at - hit.created_at)  # type: ignore[operator]
        assert (hit.ip, hit.user_agent, hit.site, hit.path) == (
            "198.51.100.0",
            "Mozilla/5.0 (Test)",
            "www.oakridge-apts.com",
            "/floorplans",
        )
        assert (hit.utm_source, hit.utm_medium, hit.click_id_type) == ("google", "cpc", "gclid")
        assert (hit.referrer_host, hit.title) == ("www.google.com", sent["title"])
    assert await read_topic(services.kafka_bootstrap, topics.deadletter, 0, settle=0.3) == []


async def test_previous_guid_publishes_a_close_record_keyed_by_the_previous_guid(
    services: Any, topic_prefix: str
) -> None:
    topics = Topics(topic_prefix)
    new, old = guid(), guid()
    async with running_edge(services.kafka_bootstrap, topic_prefix) as (client, _):
        response = await client.post(
            "/v1/hits", json={"guid": new, "url": "https://e.com/", "previous_guid": old.upper()}
        )
    assert response.status_code == 202
    records = await read_topic(services.kafka_bootstrap, topics.hits, 2)
    assert len(records) == 2
    by_key = {r.key: r for r in records}
    close = hit_codec.decode(by_key[old.encode()].value)
    assert isinstance(close, CloseRecord) and (close.guid, close.new_guid) == (old, new)
    assert by_key[old.encode()].partition == DefaultPartitioner()(old.encode(), PARTITIONS, PARTITIONS)
    hit = hit_codec.decode(by_key[new.encode()].value)
    assert isinstance(hit, Hit) and hit.previous_guid == old and close.hit_id == hit.hit_id


GOOD = {"guid": "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01", "url": "https://www.example.com/"}

# (name, body, content type, status, field, words in the message, dead-lettered)
BAD_INPUTS: list[tuple[str, bytes, str, int, str, str, bool]] = [
    (
        "malformed JSON",
        b'{"guid": "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01", "url": ',
        "application/json",
        400,
        "body",
        "not valid JSON",
        True,
    ),
    ("wrong type of body", b"[1, 2]", "application/json", 400, "body", "must be a hit object, not a number", True),
    (
        "wrong field types",
        orjson.dumps({"guid": 42, "url": ["https://e.com/"]}),
        "application/json",
        400,
        "guid",
        "must be a UUID string",
        True,
    ),
    ("missing guid", orjson.dumps({"url": "https://e.com/"}), "text/plain", 400, "guid", "is required", True),
    ("missing url", orjson.dumps({"guid": GOOD["guid"]}), "application/json", 400, "url", "is required", True),
    (
        "bad UUID",
        orjson.dumps({**GOOD, "guid": "6f1c2b0e-not-a-uuid"}),
        "application/json",
        400,
        "guid",
        "must be a UUID",
        True,
    ),
    (
        "bad URL scheme",
        orjson.dumps({**GOOD, "url": "javascript:alert(1)"}),
        "application/json",
        400,
        "url",
        "absolute http(s) URL",
        True,
    ),
    (
        "huge properties",
        orjson.dumps({**GOOD, "type": "event", "event": {"name": "lead", "properties": {"x": "y" * 9000}}}),
        "application/json",
        400,
        "event.properties",
        "the limit is 8192",
        True,
    ),
    (
        "naive timestamp",
        orjson.dumps({**GOOD, "created_at": "2026-03-02T09:00:00"}),
        "application/json",
        400,
        "created_at",
        "must include a time zone",
        True,
    ),
    (
        "event without event",
        orjson.dumps({**GOOD, "type": "event"}),
        "application/json",
        400,
        "event",
        "is required when type is",
        True,
    ),
    ("bad NDJSON line", b"{nope\n", "application/x-ndjson", 400, "body", "not valid JSON", True),
    ("too many items", orjson.dumps([GOOD] * 501), "application/json", 400, "body", "the limit is 500", True),
    ("unknown content type", orjson.dumps(GOOD), "application/xml", 415, "content-type", "not supported", False),
    (
        "oversized body",
        b"[" + b" " * (1024 * 1024) + b"]",
        "application/json",
        413,
        "body",
        "larger than 1048576 bytes",
        False,
    ),
]


async def test_every_bad_input_gets_its_status_message_and_dead_letter(services: Any, topic_prefix: str) -> None:
    topics = Topics(topic_prefix)
    async with running_edge(services.kafka_bootstrap, topic_prefix) as (client, _):
        for name, body, content_type, status, field, words, _ in BAD_INPUTS:
            response = await client.post("/v1/hits", content=body, headers={"content-type": content_type})
            assert response.status_code == status, name
            payload = response.json()
            assert payload["accepted"] == 0, name
            errors = [e for rejection in payload["rejected"] for e in rejection["errors"]]
            assert any(e["field"] == field and words in e["message"] for e in errors), (name, errors)
    expected = [(name, body) for name, body, *_, lettered in BAD_INPUTS if lettered]
    records = await read_topic(services.kafka_bootstrap, topics.deadletter, len(expected) + 1)  # "wrong type": 2 items
    letters = [deadletter_codec.decode(r.value) for r in records]
    payloads = [base64.b64decode(letter.payload_b64) for letter in letters]
    assert all(letter.source == "ingest" and letter.errors and letter.reason for letter in letters)
    for name, body in expected:
        if name == "wrong type of body":
            assert b"1" in payloads and b"2" in payloads, "each invalid item is dead-lettered with its own bytes"
        else:
            assert body in payloads or body.strip() in payloads, name
    assert len(letters) == len(expected) + 1, "one dead letter per refused item or body, nothing for 413/415"
    assert await read_topic(services.kafka_bootstrap, topics.hits, 0, settle=0.3) == []


async def test_mixed_batch_accepts_the_valid_and_dead_letters_the_rest(services: Any, topic_prefix: str) -> None:
    topics = Topics(topic_prefix)
    good = [{"guid": guid(), "url": f"https://e.com/{i}"} for i in range(3)]
    bad = {"guid": good[0]["guid"], "url": "ftp://e.com/"}
    async with running_edge(services.kafka_bootstrap, topic_prefix, ingest_allowed_sites="e.com") as (client, _):
        body = b"\n".join(orjson.dumps(h) for h in [good[0], bad, good[1], {**good[2], "site": "spam.example"}])
        response = await client.post("/v1/hits", content=body, headers={"content-type": "application/x-ndjson"})
    assert response.status_code == 202
    assert response.json()["accepted"] == 2
    assert [r["index"] for r in response.json()["rejected"]] == [1, 3]
    hits = await read_topic(services.kafka_bootstrap, topics.hits, 2)
    assert sorted(r.key for r in hits) == sorted([good[0]["guid"].encode(), good[1]["guid"].encode()])
    letters = await read_topic(services.kafka_bootstrap, topics.deadletter, 2)
    by_reason = {deadletter_codec.decode(r.value).reason: r for r in letters}
    assert set(by_reason) == {"invalid hit", "site not on the allow-list"}
    assert by_reason["invalid hit"].key == bad["guid"].encode()
    assert base64.b64decode(deadletter_codec.decode(by_reason["invalid hit"].value).payload_b64) == orjson.dumps(bad)


@pytest.mark.parametrize("compression", ["none", "zstd", "lz4", "snappy"])
async def test_large_batches_all_acknowledged(services: Any, topic_prefix: str, compression: str) -> None:
    topics = Topics(topic_prefix)
    sent = 0
    async with running_edge(
        services.kafka_bootstrap, topic_prefix, ingest_compression=compression, ingest_max_batch_bytes=16 * 1024
    ) as (client, _):
        for _ in range(5):
            batch = [{"guid": guid(), "url": "https://e.com/" + "p" * 200, "title": "t" * 300} for _ in range(500)]
            response = await client.post("/v1/hits", json=batch)
            assert response.status_code == 202 and response.json()["accepted"] == 500
            sent += 500
        metrics = (await client.get(f"{ADMIN}/metrics")).text
    records = await read_topic(services.kafka_bootstrap, topics.hits, sent)
    assert len(records) == sent
    assert len({orjson.loads(r.value)["hit_id"] for r in records}) == sent
    assert "ingest_kafka_batch_records_count" in metrics
