"""Identity (issue 18) in a real headless Chromium: `touchstream.identify()` against the real edge and
the real `hits` topic (what is sent, what is stored, logout, opt-out, consent), and through the whole
pipeline (edge, sessionizer, sink) into PostgreSQL: the user id lands in `identities`, a storage
clear links the old and the new GUID as one person, and `journey` finds the person by user id, on
the command line and in the dashboard's API."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.browser import Browser, SiteServer, free_port
from tests.e2e.isolated_pipeline import Env, isolated_pipeline, run_async
from tests.e2e.tracker_helpers import (
    LOADED,
    STARTED,
    assert_no_page_errors,
    edge_page,
    published_hits,
    settle,
    uuid_str,
)

REPO = Path(__file__).resolve().parents[2]
UID = "return localStorage.getItem('touchstream.uid')"


def logged_in(browser: Browser, site: SiteServer, edge: str, path: str, user_id: str) -> str:
    """Open a page of `site` posting to `edge`, log in as `user_id` (identify, then a `login` event);
    the device's GUID once the edge confirmed both hits."""
    browser.get(edge_page(site, edge, path))
    guid = uuid_str(browser.wait_for(LOADED))
    settle(browser)
    browser.execute(f"touchstream.identify({user_id!r}); touchstream.track('login')")
    settle(browser)
    return guid


def test_identify_puts_the_user_id_on_every_hit_until_logout(browser: Browser, site: SiteServer, edge: str,
                                                             services: Any, topic_prefix: str) -> None:
    guid = logged_in(browser, site, edge, "/account", "crm-4711")
    assert browser.execute(UID) == "crm-4711"
    browser.refresh()  # remembered: the next page's pageview carries it too
    browser.wait_for(LOADED)
    settle(browser)
    # Refused ids change nothing (a warning, no exception).
    browser.execute("touchstream.identify('x'.repeat(257)); touchstream.identify({id: 1});"
                    "touchstream.identify('a\\u0000b'); touchstream.track('still_known')")
    settle(browser)
    browser.execute("touchstream.identify(null); touchstream.track('logout_done')")
    settle(browser)
    assert browser.execute(UID) is None
    hits = published_hits(services, topic_prefix, 5)
    assert [(h["type"], h["event_name"], h.get("user_id")) for h in hits] == [
        ("pageview", None, None), ("event", "login", "crm-4711"), ("pageview", None, "crm-4711"),
        ("event", "still_known", "crm-4711"), ("event", "logout_done", None)]
    assert {h["guid"] for h in hits} == {guid}
    warnings = [e["message"] for e in browser.console() if "identify(user_id)" in e["message"]]
    assert len(warnings) == 3, warnings


def test_opt_out_and_consent_keep_the_user_id_under_the_guids_rules(browser: Browser, site: SiteServer,
                                                                     edge: str, services: Any,
                                                                     topic_prefix: str) -> None:
    page = edge_page(site, edge, "/consent", extra_attrs=' data-consent="required"')
    browser.get(page)
    browser.wait_for(STARTED)
    browser.execute("touchstream.identify('crm-9')")
    assert browser.execute("return Object.keys(localStorage).length") == 0  # nothing before consent
    browser.execute("touchstream.consent(true)")
    browser.wait_for(LOADED)
    settle(browser)
    assert browser.execute(UID) == "crm-9"
    browser.execute("touchstream.optOut()")
    assert browser.execute(UID) is None
    hits = published_hits(services, topic_prefix, 1)
    assert [(h["type"], h.get("user_id")) for h in hits] == [("pageview", "crm-9")]  # the held landing view
    assert_no_page_errors(browser)


# --- through the whole pipeline -------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline(services: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with isolated_pipeline(services, tmp_path_factory.mktemp("identity"), letter="i", partitions=2,
                           env={"TOUCHSTREAM_SINK_ROLLUP_INTERVAL_S": "1"}) as env:
        yield env


async def _fetch(env: Env, sql: str, *args: Any) -> list[Any]:
    conn = await env.connect()
    try:
        return [tuple(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


def fetch_until(env: Env, sql: str, check: Any, timeout: float = 90.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        rows = run_async(_fetch(env, sql))
        if check(rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"never true within {timeout:.0f}s: {sql} -> {rows}")
        env.pipeline.check_alive()
        time.sleep(0.5)


def test_identify_and_a_storage_clear_make_one_person_in_postgres(browser: Browser, site: SiteServer,
                                                                   pipeline: Env) -> None:
    old = logged_in(browser, site, pipeline.pipeline.edge_url, "/login", "person-42")
    rows = fetch_until(pipeline, "SELECT guid::text, user_id FROM identities", lambda r: len(r) == 1)
    assert rows == [(old, "person-42")]

    browser.execute("localStorage.clear()")  # the site logs out and clears storage; the cookie stays
    browser.refresh()
    new = uuid_str(browser.wait_for(LOADED))
    settle(browser)
    assert new != old
    links = fetch_until(pipeline, "SELECT guid::text, previous_guid::text FROM device_links", lambda r: len(r) == 1)
    assert links == [(new, old)]
    persons = fetch_until(pipeline, "SELECT guid::text, person_id, named FROM person_devices ORDER BY 1",
                          lambda r: len(r) == 2)
    assert sorted(persons) == sorted([(old, "person-42", True), (new, "person-42", True)])

    fetch_until(pipeline, "SELECT DISTINCT guid FROM sessions", lambda r: len(r) == 2)

    # journey by user id: both devices, each session labelled by its device
    env = {**pipeline.pipeline.env()}
    out = subprocess.run([sys.executable, "-m", "touchstream.cli", "journey", "--user-id", "person-42",
                          "--format", "json"], cwd=REPO, env=env, capture_output=True, timeout=60, text=True)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [(d["device"], d["guid"]) for d in doc["devices"]] == [("D1", old), ("D2", new)]
    sessions = [(i["device"], i["guid"]) for i in doc["timeline"] if i["type"] == "session"]
    assert sessions == [("D1", old), ("D2", new)]

    port = free_port()
    pipeline.pipeline.add_dashboard(port)
    answer = httpx.get(f"http://127.0.0.1:{port}/api/v1/journey/sessions", params={"user_id": "person-42"},
                       timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [(r["device"], r["guid"]) for r in body["rows"]] == [("D1", old), ("D2", new)]
    assert body["columns"][0] == "device" and body["user_id"] == "person-42"
    page = httpx.get(f"http://127.0.0.1:{port}/journey", params={"user_id": "person-42"}, timeout=30)
    assert page.status_code == 200 and old in page.text and new in page.text and ">D2<" in page.text
    bad = httpx.get(f"http://127.0.0.1:{port}/api/v1/journey/sessions", params={"user_id": "a", "guid": old},
                    timeout=30)
    assert bad.status_code == 400 and "one of them" in bad.text
    assert_no_page_errors(browser)
