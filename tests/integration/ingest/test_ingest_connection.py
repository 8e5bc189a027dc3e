"""What one connection may hold of a real `touchstream ingest` (uvicorn, httptools, Kafka): a
read deadline, a header cap, a connection limit (ingest.connection). Raw sockets, so that the
client can be as slow or as large as an attacker's."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from touchstream.devstack.process import free_port

REPO = Path(__file__).resolve().parents[3]
TIMEOUT_S = 1.0
SPREAD = 0.2  # each deadline in [0.8, 1.0] x TIMEOUT_S
HIT = b'{"guid":"6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01","url":"https://www.example.com/"}'


@pytest.fixture
def edge(services: Any, topic_prefix: str, tmp_path: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    log = tmp_path / "edge.log"
    env = {**os.environ, "TOUCHSTREAM_KAFKA_BOOTSTRAP": services.kafka_bootstrap, "TOUCHSTREAM_TOPIC_PREFIX": topic_prefix,
           "TOUCHSTREAM_INGEST_READ_TIMEOUT_S": str(TIMEOUT_S), "TOUCHSTREAM_INGEST_READ_TIMEOUT_SPREAD": str(SPREAD),
           "TOUCHSTREAM_INGEST_MAX_HEADER_BYTES": "8192",
           "TOUCHSTREAM_INGEST_MAX_CONNECTIONS": "20"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "touchstream.cli", "ingest", "--port", str(port)], cwd=REPO,
                                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield "127.0.0.1", port
        assert proc.poll() is None, log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def answer(sock: socket.socket) -> tuple[bytes, float]:
    """The status line the edge wrote before closing (b"" if it closed without one), and when."""
    sock.settimeout(TIMEOUT_S * 10)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data.split(b"\r\n", 1)[0], time.monotonic()


def trickle(sock: socket.socket, data: bytes, every: float = 0.2) -> None:
    """Send `data` a byte at a time (slowloris), until the edge closes the connection."""
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return
        time.sleep(every)


def post(body: bytes) -> bytes:
    head = b"POST /v1/hits HTTP/1.1\r\nhost: edge\r\ncontent-type: application/json\r\n"
    return head + b"content-length: %d\r\n\r\n" % len(body) + body


def test_slow_or_silent_clients_are_answered_408_and_closed_at_the_deadline(edge) -> None:
    cases = {
        "silent": b"",
        "slow request line": b"POST /v1/hits HTTP/1.1\r\n",
        "slow headers": b"POST /v1/hits HTTP/1.1\r\nhost: edge\r\nx-slow: " + b"a" * 100,
        "slow body": post(HIT),
    }
    for name, data in cases.items():
        sock = socket.create_connection(edge)
        started = time.monotonic()
        if name == "slow body":
            sock.sendall(data[:-10])  # everything but the last bytes at once, the rest a byte at a time
            trickle(sock, data[-10:])
        else:
            trickle(sock, data)
        status, at = answer(sock)
        sock.close()
        took = at - started
        assert status == b"HTTP/1.1 408 Request Timeout", (name, status)
        assert TIMEOUT_S * (1 - SPREAD) * 0.9 < took < TIMEOUT_S + 1.5, (name, took)


def test_connections_opened_together_are_not_closed_together(edge) -> None:
    """Each deadline is drawn within [(1 - spread), 1] x the read timeout: silent connections
    opened at once are closed over a span of time, not in one loop iteration."""
    socks = [socket.create_connection(edge) for _ in range(12)]
    opened = time.monotonic()
    closed: dict[socket.socket, float] = {}
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sel.register(sock, selectors.EVENT_READ)
        while len(closed) < len(socks) and time.monotonic() < opened + TIMEOUT_S * 10:
            for key, _ in sel.select(timeout=TIMEOUT_S):
                sock = key.fileobj
                try:
                    data = sock.recv(65536)  # type: ignore[union-attr]
                except ConnectionResetError:
                    data = b""
                if not data or data.startswith(b"HTTP/1.1 408"):
                    closed.setdefault(sock, time.monotonic() - opened)  # type: ignore[arg-type]
                    sel.unregister(sock)
    for sock in socks:
        sock.close()
    times = sorted(closed.values())
    assert len(times) == len(socks)
    assert TIMEOUT_S * (1 - SPREAD) * 0.9 < times[0] and times[-1] < TIMEOUT_S + 1.0, times
    assert times[-1] - times[0] > TIMEOUT_S * SPREAD / 4, times  # equal deadlines: a few ms apart


def test_the_deadline_is_per_request_not_per_connection(edge) -> None:
    """A keep-alive connection whose requests each arrive in time is never cut."""
    sock = socket.create_connection(edge)
    sock.settimeout(5)
    for _ in range(3):
        sock.sendall(post(HIT))
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 202"), head
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = head.split(b"\r\n\r\n", 1)[1]
        while len(body) < length:
            body += sock.recv(65536)
        time.sleep(TIMEOUT_S * 1.5)  # idle between requests: uvicorn's keep-alive timeout, not the read deadline
    sock.close()


def test_headers_beyond_the_cap_get_431(edge) -> None:
    sock = socket.create_connection(edge)
    sock.sendall(b"POST /v1/hits HTTP/1.1\r\nhost: edge\r\nx-big: ")
    try:
        for _ in range(100):
            sock.sendall(b"a" * 1024)
    except (BrokenPipeError, ConnectionResetError):
        pass
    status, _ = answer(sock)
    sock.close()
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
    # Headers up to the cap are fine.
    response = httpx.post(f"http://{edge[0]}:{edge[1]}/v1/hits", content=HIT, headers={"x-fine": "a" * 6000})
    assert response.status_code == 202


def test_beyond_the_connection_limit_requests_get_503_at_once(edge) -> None:
    held = [socket.create_connection(edge) for _ in range(25)]  # idle: each holds a slot until its deadline
    try:
        time.sleep(0.2)
        started = time.monotonic()
        response = httpx.post(f"http://{edge[0]}:{edge[1]}/v1/hits", content=HIT, timeout=5)
        assert response.status_code == 503 and time.monotonic() - started < 1.0
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    assert httpx.post(f"http://{edge[0]}:{edge[1]}/v1/hits", content=HIT).status_code == 202
