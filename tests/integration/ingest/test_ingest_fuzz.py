"""Fuzzing POST /v1/hits with Kafka up: whatever the body and headers, never a 5xx, always the
documented body shape, and the counts add up."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest_edge_helpers import running_edge

from tests.unit.ingest.test_ingest_fastpath import hits

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=15,
)


def dumpable(value: object) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:  # integers past 64 bits: JSON that orjson cannot write (nor read)
        return False
    return True


items = (hits() | json_values).filter(dumpable)
bodies = st.one_of(
    items.map(orjson.dumps),
    st.lists(items, min_size=0, max_size=12).map(orjson.dumps),
    st.lists(items, min_size=1, max_size=8).map(lambda xs: b"\n".join(orjson.dumps(x) for x in xs)),
    st.binary(max_size=300),
    st.lists(items, min_size=1, max_size=4).map(lambda xs: orjson.dumps(xs)[: len(orjson.dumps(xs)) // 2]),
)
content_types = st.sampled_from(
    [
        "application/json",
        "text/plain;charset=UTF-8",
        "application/x-ndjson",
        "",
        "application/xml",
        "text/plain; charset=latin-1",
        "application/json; charset=utf-8",
        "multipart/form-data",
        "text/html",
    ]
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "x-forwarded-for": st.sampled_from(["1.2.3.4", "garbage", "::1, 10.0.0.1", "[::1]:80", ""]),
        "origin": st.sampled_from(["https://www.example.com", "null", ""]),
        "user-agent": st.text(max_size=50).map(lambda t: t.encode("utf-8", "replace")),  # raw bytes, any UTF-8
        "content-encoding": st.sampled_from(["gzip", "identity", "br"]),
    },
)

SHAPE = {"accepted", "rejected"}


def test_no_5xx_while_kafka_is_up(services: Any, topic_prefix: str) -> None:
    loop = asyncio.new_event_loop()
    try:
        edge = running_edge(
            services.kafka_bootstrap,
            topic_prefix,
            ingest_max_items=10,
            ingest_max_body_bytes=4096,
            ingest_trusted_proxies="127.0.0.0/8,198.51.100.0/24",
        )
        client, _ = loop.run_until_complete(edge.__aenter__())
        try:
            run_fuzz(loop, client)
        finally:
            loop.run_until_complete(edge.__aexit__(None, None, None))
    finally:
        loop.close()


def run_fuzz(loop: asyncio.AbstractEventLoop, client: Any) -> None:
    seen: set[int] = set()

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies, content_type=content_types, extra=headers)
    def fuzz(body: bytes, content_type: str, extra: dict[str, str | bytes]) -> None:
        sent = {"content-type": content_type, **extra}
        response = loop.run_until_complete(client.post("/v1/hits", content=body, headers=sent))
        seen.add(response.status_code)
        assert response.status_code in (202, 400, 413, 415), (response.status_code, response.text, body, sent)
        payload = response.json()
        assert set(payload) == SHAPE
        assert all(set(r) == {"index", "errors"} and r["errors"] for r in payload["rejected"])
        if response.status_code == 202:
            assert payload["accepted"] > 0
            items = orjson.loads(body) if not content_type.startswith("application/x-ndjson") else None
            if isinstance(items, list):
                assert payload["accepted"] + len(payload["rejected"]) == len(items)
        else:
            assert payload["accepted"] == 0

    fuzz()
    assert {202, 400, 415} <= seen, f"the fuzzer never reached some outcomes: {seen}"
