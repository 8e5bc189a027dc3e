"""Fixtures of the browser tests: headless Chromium, a site server, and the real edge.

    browser -> tests/e2e/browser.py `Browser` (a fresh profile), quit afterwards
    site    -> `SiteServer` on 127.0.0.1 serving test pages and /tracker.js
    edge    -> base URL of `touchstream ingest` run as a subprocess on a free port, publishing
               to this test's topics (`topic_prefix`)

A missing browser or edge fails the test with how to install or start it; nothing is skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.browser import Browser, SiteServer, free_port
from tests.e2e.tracker_helpers import start_browser

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def browser() -> Iterator[Browser]:
    b = start_browser()
    try:
        yield b
    finally:
        b.quit()


@pytest.fixture
def site() -> Iterator[SiteServer]:
    """Serves the test pages (and /tracker.js from the working tree)."""
    with SiteServer() as server:
        yield server


def _edge_missing() -> str | None:
    ingest = REPO / "ingest"
    if not (ingest / "__main__.py").is_file():
        return ("the ingest edge is not there yet: `touchstream ingest` runs ingest/__main__.py:main "
                "(touchstream/cli.py), which does not exist. It must serve POST /v1/hits, "
                "GET /v1/tracker.js and GET /readyz on TOUCHSTREAM_INGEST_HOST:TOUCHSTREAM_INGEST_PORT "
                "(SPEC section 2).")
    return None


def _wait_ready(proc: subprocess.Popen[bytes], base: str, log_tail: Any) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"`touchstream ingest` exited with code {proc.returncode}:\n{log_tail()}", pytrace=False)
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the edge was not ready (GET /readyz) within 60s:\n{log_tail()}", pytrace=False)
        time.sleep(0.1)


@pytest.fixture
def edge(services: Any, topic_prefix: str) -> Iterator[str]:
    """`touchstream ingest` as a subprocess on a free port, publishing to this test's topics."""
    missing = _edge_missing()
    if missing:
        pytest.fail(missing, pytrace=False)
    port = free_port()
    env = {
        **os.environ,
        **services.env(),
        "TOUCHSTREAM_TOPIC_PREFIX": topic_prefix,
        "TOUCHSTREAM_INGEST_HOST": "127.0.0.1",
        "TOUCHSTREAM_INGEST_PORT": str(port),
        "PYTHONUNBUFFERED": "1",
    }
    log = tempfile.NamedTemporaryFile(prefix="touchstream-edge-", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-m", "touchstream.cli", "ingest"], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, base, lambda: Path(log.name).read_text(errors="replace")[-4000:])
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        os.unlink(log.name)
