"""The ASGI app with a fake publisher: status mapping, headers, CORS, the small routes."""

from __future__ import annotations

import base64
import gc
import hashlib
import hmac
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from ingest.app import create_app
from ingest.settings import IngestSettings
from schemas.wire import deadletter_codec
from tests.unit.ingest.fakes import FakePublisher

NOW = datetime(2026, 3, 2, 9, 0, 5, tzinfo=timezone.utc)
GUID = "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01"
HIT = {"guid": GUID, "url": "https://www.example.com/"}
ADMIN_PORT = 9464
ADMIN = f"http://edge:{ADMIN_PORT}"  # the same app, reached on the admin listener's port


@pytest.fixture
def tracker(tmp_path: Path) -> Path:
    path = tmp_path / "tracker.js"
    path.write_text("(function(){window.touchstream={};})();\n")
    return path


def make(tracker: Path, **overrides: Any) -> tuple[httpx.AsyncClient, FakePublisher, Any]:
    overrides.setdefault("ingest_admin_port", ADMIN_PORT)
    settings = IngestSettings(topic_prefix="u.", ingest_tracker_file=tracker, **overrides)
    publisher = FakePublisher()
    app = create_app(settings, publisher, clock=lambda: NOW)
    transport = httpx.ASGITransport(app=app, client=("198.51.100.23", 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://edge"), publisher, app


async def post(
    client: httpx.AsyncClient, body: Any, content_type: str = "application/json", **headers: str
) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return await client.post("/v1/hits", content=content, headers={"content-type": content_type, **headers})


async def test_202_after_publish_with_enriched_hits(tracker: Path) -> None:
    client, publisher, _ = make(tracker)
    response = await post(client, HIT, **{"user-agent": "UA/1.0"})
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "rejected": []}
    [(key, value)] = publisher.records("u.hits")
    hit = orjson.loads(value)
    assert key == GUID.encode()
    assert (hit["received_at"], hit["ip"], hit["user_agent"]) == ("2026-03-02T09:00:05Z", "198.51.100.0", "UA/1.0")


@pytest.mark.parametrize("content_type", ["text/plain;charset=UTF-8", ""])
async def test_sendbeacon_bodies_are_json(tracker: Path, content_type: str) -> None:
    client, _, _ = make(tracker)
    response = await post(client, [HIT, HIT], content_type)
    assert response.status_code == 202 and response.json()["accepted"] == 2


async def test_ndjson(tracker: Path) -> None:
    client, publisher, _ = make(tracker)
    body = b"\n".join(orjson.dumps(h) for h in [HIT, HIT, HIT]) + b"\n"
    response = await post(client, body, "application/x-ndjson")
    assert response.status_code == 202 and response.json()["accepted"] == 3
    assert len(publisher.records("u.hits")) == 3


async def test_partly_invalid_batch_is_202_and_dead_letters_go_with_the_hits(tracker: Path) -> None:
    client, publisher, _ = make(tracker)
    response = await post(client, [HIT, {"guid": "x", "url": "https://e.com/"}])
    assert response.status_code == 202
    assert response.json()["rejected"][0]["index"] == 1
    assert publisher.published[0][0] == "u.hits" and publisher.published[1][0] == "u.deadletter"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "needle"),
    [
        (b"{nope", "application/json", 400, "not valid JSON"),
        (b"[]", "application/json", 400, "empty array"),
        (b'"just a string"', "application/json", 400, "not a string"),
        (orjson.dumps([{"url": "https://e.com/"}]), "application/json", 400, "is required"),
        (orjson.dumps({"guid": GUID, "url": "javascript:alert(1)"}), "application/json", 400, "absolute http(s) URL"),
        (b"<hit/>", "application/xml", 415, "not supported"),
        (b"a=b", "application/x-www-form-urlencoded", 415, "not supported"),
    ],
)
async def test_refusals(tracker: Path, body: bytes, content_type: str, status: int, needle: str) -> None:
    client, publisher, _ = make(tracker)
    response = await post(client, body, content_type)
    assert response.status_code == status
    payload = response.json()
    assert payload["accepted"] == 0 and needle in str(payload["rejected"])
    assert publisher.records("u.hits") == []


async def test_malformed_body_is_dead_lettered_with_its_bytes(tracker: Path) -> None:
    client, publisher, _ = make(tracker)
    await post(client, b"{nope", "text/plain")
    [(key, value)] = publisher.records("u.deadletter")
    letter = deadletter_codec.decode(value)
    assert base64.b64decode(letter.payload_b64) == b"{nope" and letter.reason == "not valid JSON"


async def test_too_many_items_is_400_naming_the_limit(tracker: Path) -> None:
    client, _, _ = make(tracker, ingest_max_items=3)
    response = await post(client, [HIT] * 4)
    assert response.status_code == 400
    assert "holds 4 hits; the limit is 3" in response.text


async def test_body_over_the_limit_is_413(tracker: Path) -> None:
    client, publisher, _ = make(tracker, ingest_max_body_bytes=2048)
    response = await post(client, [HIT] * 100)
    assert response.status_code == 413
    assert "larger than 2048 bytes" in response.text
    assert publisher.published == []


async def test_streamed_body_over_the_limit_is_413(tracker: Path) -> None:
    client, _, _ = make(tracker, ingest_max_body_bytes=2048)

    async def chunks():
        for _ in range(100):
            yield b"x" * 1000

    response = await client.post("/v1/hits", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


async def test_kafka_down_is_503_with_retry_after_and_nothing_accepted(tracker: Path) -> None:
    client, publisher, app = make(tracker, ingest_retry_after_s=7)
    publisher.fail = "cannot reach Kafka at 10.1.2.3:9092: KafkaConnectionError('Connection refused')"
    response = await post(client, [HIT, HIT])
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    # The public answer names no cause: not Kafka's address, not the exception.
    assert response.json() == {
        "accepted": 0,
        "rejected": [
            {"index": None, "errors": [{"field": "kafka", "message": "the pipeline cannot take hits now; retry later"}]}
        ],
    }
    metrics = (await client.get(f"{ADMIN}/metrics")).text
    assert 'ingest_hits_refused_total{reason="unavailable"} 2.0' in metrics
    assert "ingest_hits_accepted_total 0.0" in metrics


async def test_slow_kafka_is_bounded(tracker: Path) -> None:
    client, publisher, _ = make(tracker, ingest_publish_timeout_s=0.2)
    publisher.hang = True
    response = await post(client, HIT)
    assert response.status_code == 503 and response.json()["rejected"][0]["errors"][0]["field"] == "kafka"


async def test_invalid_only_request_is_400_even_when_dead_letters_cannot_be_written(tracker: Path) -> None:
    client, publisher, _ = make(tracker)
    publisher.fail = "down"
    response = await post(client, {"guid": "bad", "url": "https://e.com/"})
    assert response.status_code == 400  # a client must not retry what can never be accepted
    assert "ingest_dead_letter_failures_total 1.0" in (await client.get(f"{ADMIN}/metrics")).text


async def test_site_allow_list(tracker: Path) -> None:
    client, _, _ = make(tracker, ingest_allowed_sites="www.example.com, shop.example.com")
    ok = await post(client, HIT)
    spam = await post(client, {**HIT, "url": "https://free-stuff.example.net/"})
    assert ok.status_code == 202
    assert spam.status_code == 400 and "not on this edge's allow-list" in spam.text


async def test_forwarded_for_is_used_only_from_trusted_proxies(tracker: Path) -> None:
    client, publisher, _ = make(tracker, ingest_trusted_proxies="198.51.100.0/24", ingest_ip_mode="full")
    await post(client, HIT, **{"x-forwarded-for": "6.6.6.6, 203.0.113.9"})
    assert orjson.loads(publisher.records("u.hits")[0][1])["ip"] == "203.0.113.9"
    client2, publisher2, _ = make(tracker, ingest_ip_mode="full")  # nobody trusted
    await post(client2, HIT, **{"x-forwarded-for": "203.0.113.9"})
    assert orjson.loads(publisher2.records("u.hits")[0][1])["ip"] == "198.51.100.23"


async def test_hashed_ip_key_rotates_with_the_utc_day_of_received_at(tracker: Path) -> None:
    salt = "0123456789abcdef-salt"
    settings = IngestSettings(topic_prefix="u.", ingest_tracker_file=tracker, ingest_ip_mode="hash",
                              ingest_ip_hash_salt=salt, ingest_trusted_proxies="10.0.0.0/8")
    now = [NOW]
    publisher = FakePublisher()
    app = create_app(settings, publisher, clock=lambda: now[0])
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("198.51.100.23", 50000)),
                               base_url="http://edge")
    proxied = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.0.0.1", 50000)),
                                base_url="http://edge")
    seen: list[tuple[str, str]] = []
    for when in (NOW, NOW.replace(hour=23, minute=59), NOW.replace(day=3, hour=0, minute=0)):
        now[0] = when
        await post(client, HIT)
        await post(proxied, HIT, **{"x-forwarded-for": "198.51.100.23"})
        direct, forwarded = (orjson.loads(v)["ip"] for _, v in publisher.records("u.hits")[-2:])
        assert direct == forwarded  # the same address, the same day: the same value either way
        seen.append((when.strftime("%Y-%m-%d"), direct))
    assert seen[0][1] == seen[1][1]  # one key for the whole UTC day
    assert seen[2][1] != seen[0][1]  # the next day: not linkable to the previous one
    for day, value in seen:
        key = hmac.digest(salt.encode(), day.encode(), "sha256")
        packed = bytes([198, 51, 100, 23])
        assert value == hashlib.blake2b(packed, key=key, digest_size=16).hexdigest()


# --- CORS -------------------------------------------------------------------------------------


async def test_cors_any_origin_by_default(tracker: Path) -> None:
    client, _, _ = make(tracker)
    response = await post(client, HIT, origin="https://www.example.com")
    assert response.headers["access-control-allow-origin"] == "*"
    assert "retry-after" in response.headers["access-control-expose-headers"]
    assert "access-control-allow-credentials" not in response.headers
    preflight = await client.options(
        "/v1/hits",
        headers={
            "origin": "https://a.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "content-type"
    assert int(preflight.headers["access-control-max-age"]) > 0


async def test_cors_configured_origins(tracker: Path) -> None:
    client, publisher, _ = make(tracker, ingest_cors_origins="https://www.example.com")
    allowed = await post(client, HIT, origin="https://www.example.com")
    assert allowed.status_code == 202
    assert allowed.headers["access-control-allow-origin"] == "https://www.example.com"
    assert allowed.headers["vary"] == "origin"
    refused = await post(client, HIT, origin="https://evil.example")
    assert refused.status_code == 403 and "may not post" in refused.text
    assert "access-control-allow-origin" not in refused.headers
    assert len(publisher.records("u.hits")) == 1
    preflight = await client.options("/v1/hits", headers={"origin": "https://evil.example"})
    assert preflight.status_code == 403
    no_origin = await post(client, HIT)  # servers and curl send no Origin: not a browser, no CORS
    assert no_origin.status_code == 202


# --- the other routes ---------------------------------------------------------------------------


async def test_tracker_is_served_with_an_etag(tracker: Path) -> None:
    client, _, _ = make(tracker)
    response = await client.get("/v1/tracker.js")
    assert response.status_code == 200
    assert response.text == tracker.read_text()
    assert response.headers["content-type"].startswith("text/javascript")
    assert "max-age=" in response.headers["cache-control"]
    again = await client.get("/v1/tracker.js", headers={"if-none-match": response.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    tracker.write_text("/* v2 */ (function(){})();\n")  # a new file goes out without a restart
    fresh = await client.get("/v1/tracker.js", headers={"if-none-match": response.headers["etag"]})
    assert fresh.status_code == 200 and fresh.text.startswith("/* v2 */")
    head = await client.head("/v1/tracker.js")
    assert head.status_code == 200 and head.content == b""


async def test_missing_tracker_is_404(tmp_path: Path) -> None:
    client, _, _ = make(tmp_path / "absent.js")
    assert (await client.get("/v1/tracker.js")).status_code == 404


def test_default_tracker_file_exists_and_is_javascript() -> None:
    path = IngestSettings().ingest_tracker_file
    assert path.is_file() and path.suffix == ".js" and path.stat().st_size > 0


async def test_health_ready_metrics_openapi(tracker: Path) -> None:
    client, publisher, _ = make(tracker)
    for base in ("", ADMIN):
        assert (await client.get(f"{base}/healthz")).json() == {"status": "ok"}
        assert (await client.get(f"{base}/readyz")).status_code == 200
    publisher.is_ready = False
    publisher.last_error = "cannot reach Kafka at 10.1.2.3:9092: KafkaConnectionError"
    not_ready = await client.get(f"{ADMIN}/readyz")
    assert not_ready.status_code == 503 and not_ready.json()["reason"] == publisher.last_error
    public = await client.get("/readyz")
    assert public.status_code == 503 and public.json() == {"status": "unavailable"}
    await post(client, [HIT, HIT, {"guid": "x"}])
    metrics = await client.get(f"{ADMIN}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for line in [
        "ingest_hits_accepted_total 2.0",
        'ingest_hits_refused_total{reason="invalid_hit"} 1.0',
        'ingest_requests_total{status="202"} 1.0',
        "ingest_request_hits_count 1.0",
        "ingest_publish_seconds_count 1.0",
        "ingest_dead_letters_total 1.0",
    ]:
        assert line in text, line
    document = (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")


async def test_unknown_route_and_method(tracker: Path) -> None:
    client, _, _ = make(tracker)
    assert (await client.get("/nope")).status_code == 404
    wrong = await client.get("/v1/hits")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST, OPTIONS"
    assert (await client.post("/healthz")).status_code == 405


async def test_a_bug_is_a_500_not_a_dead_worker(tracker: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client, _, app = make(tracker)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(app.intake, "process", boom)
    response = await post(client, HIT)
    assert response.status_code == 500
    assert (await client.get("/healthz")).status_code == 200


async def test_lifespan_starts_and_stops_the_publisher(tracker: Path) -> None:
    _, publisher, app = make(tracker)
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert publisher.started and publisher.stopped


async def test_request_waiting_for_kafka_holds_no_body_items_or_records(tracker: Path) -> None:
    """While a request waits for the acknowledgement, its body's parsed items and its records
    are garbage: a slow broker must cost memory per request in flight of the records alone,
    which the publisher holds (and caps), not several copies of the body."""
    hits = [{**HIT, "title": f"page {i} " + "x" * 900, "hit_id": None} for i in range(400)]
    body = orjson.dumps(hits)
    held: list[int] = []

    class Measuring(FakePublisher):
        async def publish(self, batches: Any, timeout: float) -> None:
            del batches  # what a publisher does once the records are queued
            gc.collect()
            held.append(tracemalloc.get_traced_memory()[0] - baseline)

    settings = IngestSettings(topic_prefix="u.", ingest_tracker_file=tracker)
    app = create_app(settings, Measuring(), clock=lambda: NOW)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge")
    await post(client, HIT)  # warm: lazily built state is not this request's
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        response = await post(client, body)
    finally:
        tracemalloc.stop()
    assert response.status_code == 202 and response.json()["accepted"] == 400
    # The body is ~380 KB and its records ~500 KB; the parsed items alone would be more than the body.
    assert held and held[0] < len(body) // 4, f"{held[0]:,} bytes still held while waiting (body {len(body):,})"


async def test_the_public_port_serves_no_metrics_and_the_admin_port_no_hits(tracker: Path) -> None:
    client, _, _ = make(tracker)
    assert (await client.get("/metrics")).status_code == 404
    assert (await post(client, HIT)).status_code == 202
    assert (await client.post(f"{ADMIN}/v1/hits", json=HIT)).status_code == 404
    assert (await client.get(f"{ADMIN}/v1/tracker.js")).status_code == 404
    assert (await client.get(f"{ADMIN}/metrics")).status_code == 200
    # Without an admin port, no listener serves them.
    bare, _, _ = make(tracker, ingest_admin_port=0)
    assert (await bare.get("/metrics")).status_code == 404
    assert (await bare.get(f"{ADMIN}/metrics")).status_code == 404


def test_the_admin_port_is_not_the_public_one() -> None:
    with pytest.raises(ValueError, match="ADMIN_PORT must differ"):
        IngestSettings(ingest_port=8080, ingest_admin_port=8080)
