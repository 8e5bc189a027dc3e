"""Settings from the environment, the OpenAPI document, the command line."""

from __future__ import annotations

import httpx
import orjson
import pytest
from pydantic import ValidationError

from ingest.__main__ import main
from ingest.app import create_app
from ingest.openapi import document
from ingest.settings import IngestSettings
from schemas.hit import HitIn
from tests.unit.ingest.fakes import FakePublisher


def test_defaults_match_the_spec() -> None:
    s = IngestSettings()
    assert (s.ingest_host, s.ingest_port, s.ingest_workers) == ("127.0.0.1", 8080, 1)
    assert s.ingest_max_body_bytes == 1024 * 1024 and s.ingest_max_items == 500
    assert s.ingest_ip_mode == "truncate" and s.ingest_cors_origins == ["*"]
    assert s.ingest_allowed_sites == [] and s.ingest_trusted_proxies == []


def test_environment_with_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHSTREAM_INGEST_PORT", "9999")
    monkeypatch.setenv("TOUCHSTREAM_INGEST_ALLOWED_SITES", "WWW.Example.com, shop.example.com,")
    monkeypatch.setenv("TOUCHSTREAM_INGEST_TRUSTED_PROXIES", "10.0.0.0/8,2001:db8::/32")
    monkeypatch.setenv("TOUCHSTREAM_INGEST_CORS_ORIGINS", "https://a.example/,https://b.example")
    monkeypatch.setenv("TOUCHSTREAM_TOPIC_PREFIX", "x.")
    s = IngestSettings()
    assert s.ingest_port == 9999 and s.topic_prefix == "x."
    assert s.ingest_allowed_sites == ["www.example.com", "shop.example.com"]
    assert s.ingest_trusted_proxies == ["10.0.0.0/8", "2001:db8::/32"]
    assert s.ingest_cors_origins == ["https://a.example", "https://b.example"]


def test_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="not an IP network"):
        IngestSettings(ingest_trusted_proxies="10.0.0.0/8,proxy.local")
    with pytest.raises(ValidationError, match="SALT"):
        IngestSettings(ingest_ip_mode="hash")
    with pytest.raises(ValidationError):
        IngestSettings(ingest_ip_mode="scramble")
    assert IngestSettings(ingest_ip_mode="hash", ingest_ip_hash_salt="s" * 16).ingest_ip_mode == "hash"


# --- OpenAPI -------------------------------------------------------------------------------------


def test_hit_schema_covers_exactly_hitins_fields() -> None:
    schemas = document(IngestSettings())["components"]["schemas"]
    hit = schemas["Hit"]
    assert set(hit["properties"]) == set(HitIn.model_fields)
    assert set(hit["required"]) == {"guid", "url"}
    assert hit["properties"]["guid"]["format"] == "uuid"
    assert {"type": "number", "description": "epoch milliseconds"} in hit["properties"]["created_at"]["anyOf"]
    assert hit["then"]["required"] == ["event"]
    assert "EventIn" in schemas and "UtmIn" in schemas


def test_limits_in_the_document_follow_the_settings() -> None:
    doc = document(IngestSettings(ingest_max_items=20, ingest_max_body_bytes=4096))
    post = doc["paths"]["/v1/hits"]["post"]
    batch = post["requestBody"]["content"]["application/json"]["schema"]["oneOf"][1]
    assert batch["maxItems"] == 20 and "4096 bytes" in post["description"]
    assert set(post["requestBody"]["content"]) == {"application/json", "text/plain", "application/x-ndjson"}
    assert set(post["responses"]) == {"202", "400", "403", "408", "413", "415", "431", "503"}
    assert "Retry-After" in post["responses"]["503"]["headers"]


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_reference_resolves() -> None:
    doc = document(IngestSettings())
    names = set(doc["components"]["schemas"])
    refs = _refs(doc)
    assert refs and all(ref.removeprefix("#/components/schemas/") in names for ref in refs)


async def test_documented_paths_and_methods_are_served(tmp_path) -> None:
    tracker = tmp_path / "t.js"
    tracker.write_text("0;")
    app = create_app(IngestSettings(ingest_tracker_file=tracker), FakePublisher())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge")
    doc = (await client.get("/openapi.json")).json()
    for path, operations in doc["paths"].items():
        for method in operations:
            body = orjson.dumps({"guid": "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01", "url": "https://e.com/"})
            response = await client.request(
                method.upper(),
                path,
                content=body if method == "post" else None,
                headers={"content-type": "application/json"},
            )
            assert str(response.status_code) in operations[method]["responses"], (method, path, response.status_code)


# --- command line ----------------------------------------------------------------------------------


def test_main_prints_settings(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHSTREAM_INGEST_IP_MODE", "hash")
    monkeypatch.setenv("TOUCHSTREAM_INGEST_IP_HASH_SALT", "a-secret-of-16-chars")
    assert main(["--settings"]) == 0
    out = capsys.readouterr().out
    assert "TOUCHSTREAM_INGEST_PORT=8080" in out and "TOUCHSTREAM_INGEST_IP_MODE=hash" in out
    assert "a-secret-of-16-chars" not in out


def test_main_refuses_bad_settings(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHSTREAM_INGEST_MAX_ITEMS", "zero")
    assert main([]) == 2
    assert "invalid settings" in capsys.readouterr().err
