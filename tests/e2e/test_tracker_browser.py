"""The browser tracker (ingest/static/tracker.js) in a real headless Chromium.

`test_tracker_through_the_real_edge` is the end-to-end check: the documented snippet on a page
served from 127.0.0.1, the real edge (`touchstream ingest`, as a subprocess) on a free port,
and the real `hits` topic of a per-test topic prefix, read back with aiokafka.

The other tests need no services: a small recorder (tests/e2e/browser.py `SiteServer`) stands in
for the edge on another port (so every post is cross-origin, as on a real site) and shows what
the tracker sends: payload shape, the snippet's queue, retries, storage fallbacks.

A missing browser or service fails the test with how to install or start it; nothing is skipped.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from schemas.hit import HitIn
from tests.e2e.browser import TRACKER_JS, Browser, SiteServer
from tests.e2e.tracker_helpers import LOADED, assert_no_page_errors, stored_queue, uuid_str

REPO = Path(__file__).resolve().parents[2]
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UTM_QUERY = "?utm_source=newsletter&utm_medium=email&utm_campaign=spring"


# --- fixtures (browser, site and edge: tests/e2e/conftest.py) ---------------------------------


@pytest.fixture
def recorder() -> Any:
    """Stands in for the edge: records every POST /v1/hits and answers 202 (or `statuses`)."""
    with SiteServer() as server:
        yield server


# --- helpers ----------------------------------------------------------------------------------


def tracker_page(site: SiteServer, endpoint_server: SiteServer, path: str = "/index.html",
                 template: str = "site.html", **values: str) -> str:
    values.setdefault("tracker_src", site.url("/tracker.js"))
    values.setdefault("endpoint", endpoint_server.url("/v1/hits"))
    return site.add_page(path, template, **values)


# --- the real `hits` topic --------------------------------------------------------------------


class HitsTail:
    """Reads a topic from the beginning of every partition, keeping records in arrival order."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.records: list[tuple[str, dict[str, Any]]] = []  # (key, value)
        self._consumer: Any = None

    async def start(self) -> HitsTail:
        from aiokafka import AIOKafkaConsumer

        # No group: the consumer takes every partition of the topic, from the earliest offset.
        self._consumer = AIOKafkaConsumer(self.topic, bootstrap_servers=self.bootstrap, group_id=None,
                                          enable_auto_commit=False, auto_offset_reset="earliest")
        await self._consumer.start()
        if self.topic not in await self._consumer.topics():
            await self.stop()
            raise AssertionError(f"topic {self.topic} does not exist")
        return self

    async def wait(self, count: int, timeout: float = 20.0) -> list[tuple[str, dict[str, Any]]]:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.records) < count:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"expected {count} record(s) on {self.topic} within {timeout:.0f}s, "
                                     f"got {len(self.records)}: {self.records}")
            batches = await self._consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
            for messages in batches.values():
                for m in messages:
                    self.records.append((m.key.decode() if m.key else "", json.loads(m.value)))
        return self.records

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()


async def test_tracker_through_the_real_edge(browser: Browser, site: SiteServer, edge: str,
                                             services: Any, topic_prefix: str, pg_schema: Any,
                                             tmp_path: Path) -> None:
    from schemas.topics import Topics
    from schemas.wire import hit_codec
    from touchstream.pipeline import Pipeline

    # Behind the edge: a real sessionizer worker and a real sink, as separate processes.
    pipeline = Pipeline(workdir=tmp_path, kafka_bootstrap=services.kafka_bootstrap, pg_dsn=pg_schema.dsn,
                        topic_prefix=topic_prefix, pg_schema=pg_schema.schema)
    pipeline.add_sessionizer()
    pipeline.add_sink()
    for component in pipeline.components.values():
        component.start()
    try:
        await _tracker_through_the_pipeline(browser, site, edge, services, topic_prefix, pg_schema, pipeline)
    finally:
        pipeline.stop()


async def _tracker_through_the_pipeline(browser: Browser, site: SiteServer, edge: str, services: Any,
                                        topic_prefix: str, pg_schema: Any, pipeline: Any) -> None:
    from schemas.topics import Topics
    from schemas.wire import hit_codec

    # The edge serves this very file as GET /v1/tracker.js, and the page loads it from there.
    served = httpx.get(f"{edge}/v1/tracker.js", timeout=5)
    assert served.status_code == 200, served.text[:500]
    assert "javascript" in served.headers.get("content-type", ""), served.headers
    assert served.content == TRACKER_JS.read_bytes(), "GET /v1/tracker.js is not ingest/static/tracker.js"
    page = site.add_page("/index.html", "site.html",
                         tracker_src=f"{edge}/v1/tracker.js", endpoint=f"{edge}/v1/hits")

    tail = await HitsTail(services.kafka_bootstrap, Topics(topic_prefix).hits).start()
    try:
        # 1. First visit from a newsletter link: a new device, a pageview with the campaign.
        await asyncio.to_thread(browser.get, page + UTM_QUERY)
        guid = uuid_str(await asyncio.to_thread(browser.wait_for, LOADED))
        await tail.wait(1)
        # 2. Reload: same device, another pageview.
        await asyncio.to_thread(browser.refresh)
        assert await asyncio.to_thread(browser.wait_for, LOADED) == guid
        await tail.wait(2)
        # 3. The contact form converts.
        event_hit_id = await asyncio.to_thread(
            browser.execute, "return touchstream.track('lead', {form: 'contact'}, {module: 'contact_form'})")
        uuid_str(event_hit_id)
        await tail.wait(3)
        # 4. The visitor clears local storage and reloads: a new GUID that names the old one.
        await asyncio.to_thread(browser.execute, "localStorage.clear()")
        await asyncio.to_thread(browser.refresh)
        new_guid = uuid_str(await asyncio.to_thread(browser.wait_for, LOADED))
        records = await tail.wait(5)
        await asyncio.sleep(1.0)  # anything unexpected (a duplicate, a stray hit) would show up now
        records = await tail.wait(5)
    finally:
        await tail.stop()

    for _, value in records:
        hit_codec.decode(json.dumps(value).encode())  # every record matches the wire schema

    first, second, event = (value for _, value in records[:3])
    assert [key for key, _ in records[:3]] == [guid] * 3, records[:3]
    assert {r["guid"] for r in (first, second, event)} == {guid}
    assert first["type"] == "pageview" and second["type"] == "pageview"
    assert first["url"] == page + UTM_QUERY
    assert (first["utm_source"], first["utm_medium"], first["utm_campaign"]) == ("newsletter", "email", "spring")
    assert first["title"] == "Oakridge Apartments - Home"
    assert first["site"] == "127.0.0.1"
    assert "HeadlessChrome" in first["user_agent"]
    assert first["created_at"] and first["sent_at"] and first["occurred_at"] <= first["received_at"]
    assert first.get("previous_guid") is None
    assert event["type"] == "event"
    assert event["hit_id"] == event_hit_id
    assert (event["event_name"], event["event_module"], event["event_properties"]) == ("lead", "contact_form", {"form": "contact"})
    hit_ids = [v["hit_id"] for _, v in records if v["kind"] == "hit"]
    assert len(hit_ids) == len(set(hit_ids)) == 4, f"duplicates or missing hits: {records}"

    after = [(key, value) for key, value in records[3:]]
    pageviews = [(k, v) for k, v in after if v["kind"] == "hit"]
    closes = [(k, v) for k, v in after if v["kind"] == "close"]
    assert len(pageviews) == 1 and len(closes) == 1, after
    key, pv = pageviews[0]
    assert new_guid != guid
    assert key == pv["guid"] == new_guid
    assert pv["type"] == "pageview" and pv["previous_guid"] == guid
    close_key, close = closes[0]
    assert close_key == close["guid"] == guid, "the close record must be keyed by the old guid (SPEC rule 12)"
    assert close["new_guid"] == new_guid

    assert await asyncio.to_thread(browser.execute, "return document.cookie") == f"ts_guid={new_guid}"
    assert await asyncio.to_thread(stored_queue, browser) == [], "hits left waiting for a retry"
    assert_no_page_errors(browser)

    # And in PostgreSQL: one device with one session from the newsletter (closed when its storage
    # was cleared), its two pageviews and the lead; then the new GUID with a session of its own.
    conn = await pg_schema.connect()
    try:
        deadline = time.monotonic() + 90
        while True:
            pipeline.check_alive()
            try:
                sessions = await conn.fetch("SELECT * FROM sessions WHERE guid = ANY($1::uuid[]) ORDER BY started_at",
                                            [guid, new_guid])
                counts = await conn.fetchrow(
                    """SELECT (SELECT count(*) FROM pageviews WHERE guid = $1::uuid) AS pageviews,
                              (SELECT count(*) FROM events WHERE guid = $1::uuid AND name = 'lead') AS leads,
                              (SELECT count(*) FROM pageviews WHERE guid = $2::uuid) AS new_pageviews""", guid, new_guid)
            except asyncpg.UndefinedTableError:  # the sink migrates when it starts
                sessions, counts = [], None
            old = [r for r in sessions if str(r["guid"]) == guid]
            landed = (counts is not None and (counts["pageviews"], counts["leads"], counts["new_pageviews"]) == (2, 1, 1)
                      and len(sessions) == 2 and old and old[0]["status"] == "closed")
            if landed or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        device = await conn.fetchrow("SELECT * FROM devices WHERE guid = $1::uuid", guid)
    finally:
        await conn.close()
    assert counts is not None and (counts["pageviews"], counts["leads"], counts["new_pageviews"]) == (2, 1, 1), counts
    by_guid = {str(r["guid"]): r for r in sessions}
    assert set(by_guid) == {guid, new_guid} and len(sessions) == 2, [dict(r) for r in sessions]
    first_session = by_guid[guid]
    assert (first_session["utm_source"], first_session["utm_medium"], first_session["utm_campaign"]) == ("newsletter", "email", "spring")
    assert first_session["channel"] == "Email"
    assert (first_session["pageviews"], first_session["events"], first_session["hits"]) == (2, 1, 3)
    assert first_session["landing_url"] == page + UTM_QUERY
    assert (first_session["status"], first_session["end_reason"]) == ("closed", "storage_cleared")
    assert first_session["browser"] and "Chrome" in first_session["browser"]
    assert device is not None and device["sessions"] == 1 and device["first_utm_source"] == "newsletter"
    second_session = by_guid[new_guid]
    assert second_session["session_index"] == 1 and second_session["pageviews"] == 1
    assert second_session["session_id"] != first_session["session_id"]


# --- the tracker on its own, against a recorder ------------------------------------------------


def test_the_test_pages_carry_the_documented_snippet(site: SiteServer) -> None:
    doc = (REPO / "docs" / "tracker.md").read_text()
    found = re.search(r"```html\n(<!-- Touchstream -->\n.*?<!-- End Touchstream -->)\n```", doc, re.S)
    assert found, "docs/tracker.md has no snippet between <!-- Touchstream --> and <!-- End Touchstream -->"
    snippet = (found.group(1).replace("https://edge.example.com/v1/tracker.js", "TRACKER_URL")
               .replace("https://edge.example.com/v1/hits", "ENDPOINT_URL"))
    site.add_page("/index.html", "site.html", tracker_src="TRACKER_URL", endpoint="ENDPOINT_URL")

    def lines(text: str) -> str:
        return "\n".join(line.strip() for line in text.splitlines() if line.strip())

    assert lines(snippet) in lines(site.pages["/index.html"].decode()), "site.html must use the documented snippet"


def test_hits_are_well_formed_and_the_snippet_queue_is_drained(browser: Browser, site: SiteServer,
                                                                recorder: SiteServer) -> None:
    before = """<script>
  touchstream.track('chat_open', {agent: 'bot'}, {module: 'chat'});
  touchstream.push(['track', 'appointment', {slot: '2026-05-01T10:00'}, {module: 'scheduler', value: 120.5, currency: 'EUR'}]);
  touchstream.push(function (ts) { window.__readyGuid = ts.getGuid(); });
</script>"""
    page = tracker_page(site, recorder, before_tracker=before, extra_attrs=' data-site="www.oakridge-apts.com"')
    browser.get(page + "?gclid=abc123")
    guid = uuid_str(browser.wait_for(LOADED))
    hits = recorder.wait_for_hits(3)
    time.sleep(0.3)
    assert len(recorder.hits()) == 3, recorder.hits()

    # The automatic pageview first, then the calls made before the script loaded, in order.
    assert [h["type"] for h in hits] == ["pageview", "event", "event"]
    pageview, chat, appointment = hits
    assert pageview["url"] == page + "?gclid=abc123"
    assert pageview["title"] == "Oakridge Apartments - Home"
    assert chat["event"] == {"name": "chat_open", "module": "chat", "properties": {"agent": "bot"}}
    assert appointment["event"] == {"name": "appointment", "module": "scheduler",  # with its value (issue 18)
                                    "properties": {"slot": "2026-05-01T10:00"}, "value": 120.5, "currency": "EUR"}
    for hit in hits:
        HitIn.model_validate(hit)  # what the edge accepts
        assert hit["guid"] == guid
        assert hit["site"] == "www.oakridge-apts.com"
        assert ISO_Z.match(hit["created_at"]) and ISO_Z.match(hit["sent_at"]), hit
        assert hit["created_at"] <= hit["sent_at"]
        assert "previous_guid" not in hit
    assert len({uuid_str(h["hit_id"]) for h in hits}) == 3

    # text/plain posts: no CORS preflight, even though the edge is another origin.
    assert recorder.preflights() == []
    assert all(r.headers["content-type"].startswith("text/plain") for r in recorder.posts())
    # The GUID lives in local storage; the cookie holds the same value (only to detect clearing).
    assert browser.execute("return localStorage.getItem('touchstream.guid')") == guid
    assert browser.execute("return document.cookie") == f"ts_guid={guid}"
    assert browser.execute("return window.__readyGuid") == guid
    # One global only (measured by the page at its load event, before WebDriver ran any script).
    assert browser.execute("return window.__globalsAdded") == ["touchstream"]

    # After load: push still works, and an SPA navigation sends a pageview with the previous URL as referrer.
    browser.execute("touchstream.push(['track', 'lead', {form: 'contact'}, {module: 'contact_form'}])")
    browser.execute("history.pushState({}, '', '/floorplans'); document.title = 'Floorplans'; touchstream.pageview()")
    hits = recorder.wait_for_hits(5)
    lead, spa = hits[3], hits[4]
    assert lead["event"]["name"] == "lead" and lead["event"]["module"] == "contact_form"
    assert spa["type"] == "pageview" and spa["url"] == site.url("/floorplans")
    assert spa["referrer"] == page + "?gclid=abc123" and spa["title"] == "Floorplans"
    assert stored_queue(browser) == []
    assert_no_page_errors(browser)


def test_bad_calls_never_throw_into_the_page(browser: Browser, site: SiteServer, recorder: SiteServer) -> None:
    browser.get(tracker_page(site, recorder))
    browser.wait_for(LOADED)
    recorder.wait_for_hits(1)
    results = browser.execute("""
        var out = [], circular = {}; circular.self = circular;
        var calls = [
          function () { return touchstream.track(); },
          function () { return touchstream.track(42); },
          function () { return touchstream.track(new Array(66).join('x')); },
          function () { return touchstream.track('big', {blob: new Array(9000).join('x')}); },
          function () { return typeof touchstream.track('circular', circular); },
          function () { return typeof touchstream.track('scalar', 7, null); },
          function () { return touchstream.push(['no_such_method'], null, 5); },
          function () { return typeof touchstream.pageview({url: '/relative?x=1', referrer: 'not a url'}); },
          function () { return touchstream.push(function () { throw new Error('callback failed'); }); }
        ];
        calls.forEach(function (f, i) {
          try { out.push(f()); } catch (e) { out.push('THREW ' + i + ': ' + e); }
        });
        return out;""")
    assert not [r for r in results if isinstance(r, str) and r.startswith("THREW")], results
    assert results[:3] == [None, None, None], "invalid event names are refused (null), not sent"
    hits = recorder.wait_for_hits(5)
    time.sleep(0.3)
    hits = recorder.hits()
    names = [h["event"]["name"] for h in hits if h["type"] == "event"]
    assert names == ["big", "circular", "scalar"], hits
    by_name = {h["event"]["name"]: h["event"] for h in hits if h["type"] == "event"}
    assert by_name["big"]["properties"] == {} and by_name["circular"]["properties"] == {}
    assert by_name["scalar"]["properties"] == {"value": 7}
    relative = hits[-1]
    assert relative["type"] == "pageview" and relative["url"] == site.url("/relative?x=1")
    assert relative["referrer"] == ""
    for hit in hits:
        HitIn.model_validate(hit)
    assert_no_page_errors(browser)


def test_cleared_storage_sends_previous_guid_once(browser: Browser, site: SiteServer, recorder: SiteServer) -> None:
    page = tracker_page(site, recorder)
    browser.get(page)
    old = uuid_str(browser.wait_for(LOADED))
    recorder.wait_for_hits(1)
    browser.execute("localStorage.clear()")
    browser.refresh()
    new = uuid_str(browser.wait_for(LOADED))
    recorder.wait_for_hits(2)
    browser.refresh()
    assert browser.wait_for(LOADED) == new
    hits = recorder.wait_for_hits(3)
    assert new != old
    assert [h["guid"] for h in hits] == [old, new, new]
    assert "previous_guid" not in hits[0]
    assert hits[1]["previous_guid"] == old
    assert "previous_guid" not in hits[2], "previous_guid is sent once, not on every hit"
    assert browser.execute("return document.cookie") == f"ts_guid={new}"
    # Clearing cookies alone changes nothing: the GUID lives in local storage.
    browser.execute("document.cookie = 'ts_guid=; Max-Age=0; Path=/'")
    browser.refresh()
    assert browser.wait_for(LOADED) == new
    hits = recorder.wait_for_hits(4)
    assert hits[3]["guid"] == new and "previous_guid" not in hits[3]
    assert browser.execute("return document.cookie") == f"ts_guid={new}"
    assert_no_page_errors(browser)


def test_failed_sends_are_retried_with_the_same_hit_id(browser: Browser, site: SiteServer,
                                                       recorder: SiteServer) -> None:
    # The default transport (fetch) sees the edge's answer, so a 503 is retried.
    recorder.statuses = [503, 503]
    recorder.retry_after = "0"
    browser.get(tracker_page(site, recorder))
    browser.wait_for(LOADED)
    posts = []
    deadline = time.monotonic() + 15
    while len(posts) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
        posts = recorder.posts()
    assert len(posts) == 3, f"expected two retries after two 503s, got {len(posts)} post(s)"
    tries = [p.hits() for p in posts]
    assert all(len(t) == 1 for t in tries), tries
    first, second, third = (t[0] for t in tries)
    assert first["hit_id"] == second["hit_id"] == third["hit_id"]
    assert first["created_at"] == second["created_at"] == third["created_at"]
    assert first["sent_at"] < second["sent_at"] < third["sent_at"], "sent_at is renewed on every try"
    # Backoff: the retries are spaced out (about 0.5-1 s, then 1-2 s), not hammering the edge.
    gaps = [b.at - a.at for a, b in zip(posts, posts[1:])]
    assert gaps[0] >= 0.4 and gaps[1] >= 0.9, gaps
    browser.wait_for("return !localStorage.getItem('touchstream.queue')")
    time.sleep(0.5)
    assert len(recorder.posts()) == 3, "a delivered hit must not be sent again"
    assert_no_page_errors(browser)


def test_unsent_hits_survive_navigation_in_a_bounded_queue(browser: Browser, site: SiteServer,
                                                             recorder: SiteServer) -> None:
    # Page A posts to an edge that is down (always 503); page B, same site, to one that is up.
    # Local storage is per site, so B finds what A could not deliver and sends it.
    with SiteServer() as down:
        down.statuses = [503] * 100_000
        page_a = tracker_page(site, down, path="/a.html", extra_attrs=' data-transport="fetch"')
        page_b = tracker_page(site, recorder, path="/b.html")
        browser.get(page_a)
        browser.wait_for(LOADED)
        browser.wait_for("return JSON.parse(localStorage.getItem('touchstream.queue') || '[]').length >= 1")
        browser.execute("for (var i = 0; i < 150; i++) touchstream.track('click', {i: i});")
        queued = browser.wait_for("""var q = JSON.parse(localStorage.getItem('touchstream.queue') || '[]');
            return q.length >= 100 && q;""")
        # Bounded at 100: the oldest (the pageview and clicks 0-49) were dropped, the newest kept.
        assert [e["hit"]["event"]["properties"]["i"] for e in queued] == list(range(50, 150))
        assert len(down.posts()) >= 1, "page A tried the edge"
        browser.get(page_b)
        browser.wait_for(LOADED)
        browser.wait_for("return !localStorage.getItem('touchstream.queue')", timeout=15)

    # B restored the 100 and added its own pageview: the bound pushed out the oldest (click 50).
    hits = recorder.wait_for_hits(100)
    time.sleep(0.5)
    hits = recorder.hits()
    stored = {e["hit"]["hit_id"]: e["hit"] for e in queued[1:]}
    pageviews = [h for h in hits if h["type"] == "pageview"]
    assert len(pageviews) == 1 and pageviews[0]["url"] == page_b, pageviews
    resent = {h["hit_id"]: h for h in hits if h["type"] == "event"}
    assert len(hits) == 100 and len(resent) == 99, f"{len(hits)} hits, {len(resent)} distinct events"
    assert set(resent) == set(stored), "each queued hit is sent once more, from the next page"
    for hit_id, hit in resent.items():
        assert hit["created_at"] == stored[hit_id]["created_at"], "a retried hit keeps its times and id"
        # Every try stamps a fresh sent_at; a hit the snapshot caught before page A's first try
        # at it has none yet (seen once, on a loaded machine), so only a stamped one compares.
        assert "sent_at" in hit, hit
        if "sent_at" in stored[hit_id]:
            assert hit["sent_at"] >= stored[hit_id]["sent_at"]
        assert hit["url"] == page_a  # where it happened, not where it was finally sent from
    assert_no_page_errors(browser)


def test_blocked_local_storage_falls_back_to_the_cookie(browser: Browser, site: SiteServer,
                                                       recorder: SiteServer) -> None:
    page = tracker_page(site, recorder, template="blocked-storage.html")
    browser.get(page)
    guid = uuid_str(browser.wait_for(LOADED))
    browser.execute("touchstream.track('lead', {form: 'contact'}, {module: 'contact_form'})")
    recorder.wait_for_hits(2)
    browser.refresh()
    assert browser.wait_for(LOADED) == guid, "without local storage the cookie keeps the GUID"
    hits = recorder.wait_for_hits(3)
    assert [h["guid"] for h in hits] == [guid] * 3
    assert not any("previous_guid" in h for h in hits), "blocked storage is not cleared storage"
    assert browser.execute("return document.cookie") == f"ts_guid={guid}"
    assert_no_page_errors(browser)
