"""`touchstream ingest` as a real server: uvicorn (uvloop, httptools) on a free port."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.topic_reader import read_topic

from schemas.topics import Topics
from touchstream.devstack.process import free_port

REPO = Path(__file__).resolve().parents[3]
ADMIN: dict[str, str] = {}  # an edge's public base URL -> its admin listener's


@pytest.fixture(params=[1], ids=["1-worker"])
def edge(services: Any, topic_prefix: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """The edge's public base URL; its admin listener is on the port in `ADMIN_PORTS[base]`."""
    workers = request.param
    port, admin_port = free_port(), free_port()
    log = tmp_path / "edge.log"
    env = {
        **os.environ,
        "TOUCHSTREAM_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "TOUCHSTREAM_TOPIC_PREFIX": topic_prefix,
        "TOUCHSTREAM_INGEST_MAX_BODY_BYTES": str(64 * 1024),
        "TOUCHSTREAM_INGEST_IP_MODE": "full",
        "TOUCHSTREAM_INGEST_ADMIN_PORT": str(admin_port),
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "touchstream.cli",
                "ingest",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--log-level",
                "info",
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    base = f"http://127.0.0.1:{port}"
    ADMIN[base] = f"http://127.0.0.1:{admin_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"the edge exited:\n{log.read_text()}"
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"the edge was not ready within 60 s:\n{log.read_text()}"
            time.sleep(0.2)
        yield base
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully (the lifespan flushes the producer), then re-raises SIGTERM.
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM), log.read_text()
        assert "Application shutdown complete" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_serves_hits_and_the_small_routes(edge: str, services: Any, topic_prefix: str) -> None:
    guid = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=edge, timeout=30) as client:
        response = await client.post(
            "/v1/hits", json={"guid": guid, "url": "https://e.com/"}, headers={"x-forwarded-for": "203.0.113.50"}
        )
        assert response.status_code == 202 and response.json() == {"accepted": 1, "rejected": []}
        assert "server" not in response.headers
        tracker = await client.get("/v1/tracker.js")
        assert tracker.status_code == 200 and tracker.headers["content-type"].startswith("text/javascript")
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/metrics")).status_code == 404  # not on the public port
        assert "ingest_hits_accepted_total 1.0" in (await client.get(f"{ADMIN[edge]}/metrics")).text
        admin_ready = await client.get(f"{ADMIN[edge]}/readyz")
        assert admin_ready.status_code == 200
        assert (await client.post(f"{ADMIN[edge]}/v1/hits", json={"guid": guid, "url": "https://e.com/"})).status_code == 404
        assert (await client.get("/openapi.json")).json()["openapi"] == "3.1.0"
    [record] = await read_topic(services.kafka_bootstrap, Topics(topic_prefix).hits, 1)
    import orjson

    assert record.key == guid.encode()
    assert orjson.loads(record.value)["ip"] == "127.0.0.1", "X-Forwarded-For from an untrusted peer is ignored"


def _raw_request(base: str, head: bytes, chunks: Iterator[bytes]) -> tuple[int, float]:
    """Send a request over a plain socket, as fast as the server reads; (status, seconds)."""
    host, port = base.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed without reading the rest: what we want
        sock.settimeout(20)
        answer = b""
        while b"\r\n" not in answer:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
    return int(answer.split(b" ", 2)[1]), time.monotonic() - started


def test_oversized_bodies_are_refused_while_streaming(edge: str) -> None:
    # Declared too large: refused from the headers alone.
    head = (
        b"POST /v1/hits HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n"
    )
    status, seconds = _raw_request(edge, head, iter([b"[" + b" " * 65536]))
    assert status == 413 and seconds < 10
    # Chunked, no length: refused once 64 KiB have arrived, not after the 100 MB offered.
    head = (
        b"POST /v1/hits HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (16384, b" " * 16384)
    status, seconds = _raw_request(edge, head, iter([chunk] * 6400))
    assert status == 413 and seconds < 10


@pytest.mark.parametrize("edge", [2], indirect=True, ids=["2-workers"])
def test_several_workers_share_the_port_and_sum_their_metrics(edge: str, services: Any, topic_prefix: str) -> None:
    accepted = 0
    for _ in range(30):  # a new connection each time, so the kernel spreads them over the workers
        hits = [{"guid": str(uuid.uuid4()), "url": "https://e.com/"} for _ in range(3)]
        response = httpx.post(f"{edge}/v1/hits", json=hits, headers={"connection": "close"}, timeout=30)
        assert response.status_code == 202
        accepted += 3
    deadline = time.monotonic() + 10
    while True:  # each worker hands its counts over every second
        metrics = httpx.get(f"{ADMIN[edge]}/metrics", timeout=10).text
        if f"ingest_hits_accepted_total {accepted:.1f}" in metrics or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert f"ingest_hits_accepted_total {accepted:.1f}" in metrics, "metrics must sum every worker's"
    records = asyncio.run(read_topic(services.kafka_bootstrap, Topics(topic_prefix).hits, accepted))
    assert len(records) == accepted
