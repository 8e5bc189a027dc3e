"""What the browser tests of the tracker share: page checks, and the hits the edge published.

`published_hits` reads the real `hits` topic back (from the beginning, every partition) in a
thread of its own, so synchronous WebDriver tests can call it between clicks.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.e2e.browser import Browser, BrowserUnavailable, SiteServer
from tests.topic_reader import read_topic

LOADED = "return !!(window.touchstream && window.touchstream.__touchstream) && window.touchstream.getGuid()"
STARTED = "return !!(window.touchstream && window.touchstream.__touchstream)"  # even without a GUID (no consent)
# Requests the page made to the edge's POST /v1/hits (the Resource Timing buffer of this document).
POSTS_MADE = "return performance.getEntriesByType('resource').filter(function (e) { return /\\/v1\\/hits$/.test(e.name); }).length"
SENT = "return !localStorage.getItem('touchstream.queue')"  # every hit confirmed by the edge (202)


def start_browser(**options: Any) -> Browser:
    """A started `Browser`, or the test fails saying how to install Chromium."""
    try:
        return Browser(**options).start()
    except BrowserUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


def uuid_str(value: Any) -> str:
    assert isinstance(value, str), value
    assert str(uuid.UUID(value)) == value, f"{value!r} is not a lower-case canonical UUID"
    return value


def page_errors(browser: Browser) -> list[Any]:
    """Uncaught exceptions seen by the page's own error hook plus SEVERE console entries
    (exceptions and console.error; failed requests are not errors of the tracker)."""
    hooked = browser.execute("return window.__pageErrors || []")
    return list(hooked) + browser.console_errors()


def assert_no_page_errors(browser: Browser) -> None:
    errors = page_errors(browser)
    assert not errors, f"the page saw errors: {errors}"


def stored_queue(browser: Browser) -> list[dict[str, Any]]:
    return json.loads(browser.execute("return localStorage.getItem('touchstream.queue') || '[]'"))


def edge_page(site: SiteServer, edge: str, path: str, host: str = "127.0.0.1", **values: str) -> str:
    """A page of `site` (as `host`) loading the tracker from the real edge and posting to it."""
    values.setdefault("tracker_src", f"{edge}/v1/tracker.js")
    values.setdefault("endpoint", f"{edge}/v1/hits")
    return site.add_page(path, "site.html", host=host, **values)


def published_hits(services: Any, topic_prefix: str, expected: int, settle: float = 1.0,
                   timeout: float = 30.0) -> list[dict[str, Any]]:
    """The `hit` records on the hits topic: at least `expected` records (waiting up to `timeout`),
    plus whatever else arrives within `settle` seconds. Ordered by the device's `created_at`,
    ties in the order the edge published them (one device's hits share a partition)."""
    from schemas.topics import Topics

    topic = Topics(topic_prefix).hits

    def read() -> list[Any]:
        return asyncio.run(read_topic(services.kafka_bootstrap, topic, expected, timeout=timeout, settle=settle))

    with ThreadPoolExecutor(1) as pool:
        records = pool.submit(read).result()
    values = [json.loads(r.value) for r in sorted(records, key=lambda r: (r.partition, r.offset))]
    return sorted((v for v in values if v.get("kind") == "hit"), key=lambda v: v["created_at"])


def wait_published(services: Any, topic_prefix: str, check: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The published hits once `check(hits)` holds (re-reading the topic until then)."""
    deadline = time.monotonic() + timeout
    while True:
        hits = published_hits(services, topic_prefix, 0, settle=0.5)
        if check(hits):
            return hits
        if time.monotonic() > deadline:
            raise AssertionError(f"the hits topic never satisfied the check within {timeout:.0f}s: {hits}")


def settle(browser: Browser, seconds: float = 0.5) -> None:
    """Past the tracker's SPA delay (300 ms), then until the edge confirmed every hit."""
    time.sleep(seconds)
    browser.wait_for(SENT)
