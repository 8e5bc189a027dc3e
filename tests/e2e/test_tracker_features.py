"""What marketers expect of the tracker (issue 18), in a real headless Chromium against the real
edge (`touchstream ingest`) and the real `hits` topic: single-page-app pageviews, outbound links
and downloads, consent, GPC and DNT, cross-domain GUIDs, and the size budget.

Every page is served by a `SiteServer` and loads tracker.js from the edge (GET /v1/tracker.js);
what the tracker sent is read back from Kafka, so each assertion is on what the pipeline got.
"""

from __future__ import annotations

import gzip
import re
import time
import uuid
from collections import Counter
from typing import Any

import httpx

from tests.e2e.browser import TRACKER_JS, Browser, SiteServer
from tests.e2e.slow_link import SlowLink
from tests.e2e.tracker_helpers import (
    LOADED,
    POSTS_MADE,
    STARTED,
    assert_no_page_errors,
    edge_page,
    published_hits,
    settle,
    start_browser,
    uuid_str,
    wait_published,
)

SIZE_BUDGET = 8 * 1024  # bytes, gzipped (issue 18)
STORED = "return [Object.keys(localStorage).sort(), document.cookie]"


def pages(hits: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(h["type"], h["url"]) for h in hits]


def navigate(browser: Browser, script: str, sends: bool, until: str = "return true") -> None:
    """Run a router's `script`; wait for `until`, then for the request it must (or must not) make."""
    before = browser.execute(POSTS_MADE)
    browser.execute(script)
    browser.wait_for(until)
    if sends:
        browser.wait_for(f"{POSTS_MADE} > {before}")
        settle(browser, 0)
    else:
        time.sleep(0.8)  # well past the 300 ms SPA delay
        assert browser.execute(POSTS_MADE) == before, f"a request after: {script}"


# --- size ---------------------------------------------------------------------------------------


def test_the_served_tracker_fits_the_size_budget(edge: str) -> None:
    served = httpx.get(f"{edge}/v1/tracker.js", timeout=5)
    assert served.status_code == 200 and served.content == TRACKER_JS.read_bytes()
    size = len(gzip.compress(served.content, compresslevel=6))  # gzip's default level, as servers use
    print(f"tracker.js: {len(served.content)} bytes, {size} gzipped (budget {SIZE_BUDGET})")
    assert size <= SIZE_BUDGET, f"tracker.js is {size} bytes gzipped, over the {SIZE_BUDGET}-byte budget"


# --- single-page apps ---------------------------------------------------------------------------


def test_history_navigation_sends_one_pageview_per_new_page(browser: Browser, site: SiteServer, edge: str,
                                                          services: Any, topic_prefix: str) -> None:
    home = edge_page(site, edge, "/app") + "?utm_source=newsletter"
    browser.get(home)
    guid = uuid_str(browser.wait_for(LOADED))
    browser.wait_for(f"{POSTS_MADE} === 1")
    settle(browser, 0)
    # A router starting up: replaceState to the same URL, a stray popstate. Not a second view.
    navigate(browser, "history.replaceState({route: 'home'}, '', location.href);"
                      "window.dispatchEvent(new PopStateEvent('popstate', {state: null}))", sends=False)
    navigate(browser, "history.pushState({}, '', '/floorplans'); document.title = 'Floorplans'", sends=True)
    navigate(browser, "history.replaceState({}, '', '/floorplans?sort=price')", sends=False)  # same path
    navigate(browser, "history.replaceState({}, '', '/floorplans/2b'); document.title = 'Floorplan 2B'", sends=True)
    navigate(browser, "history.pushState({}, '', '#details'); location.hash = 'reviews'", sends=False)  # anchors
    # Back to the landing page: popstate, a view.
    navigate(browser, "history.go(-3)", sends=True, until="return location.pathname === '/app'")
    # A router that also calls pageview() itself: one view. A redirect within the delay: one view.
    navigate(browser, "history.pushState({}, '', '/contact'); document.title = 'Contact'; touchstream.pageview()",
             sends=True)
    time.sleep(0.8)
    navigate(browser, "history.pushState({}, '', '/old-offers'); history.replaceState({}, '', '/offers')", sends=True)
    # An event right after a navigation: the new page's view goes first, and the event is on it.
    navigate(browser, "history.pushState({}, '', '/thanks'); document.title = 'Thanks';"
                      "touchstream.track('lead', {form: 'contact'})", sends=True)

    hits = published_hits(services, topic_prefix, 8, settle=1.5)
    url = site.url
    assert pages(hits) == [
        ("pageview", home), ("pageview", url("/floorplans")), ("pageview", url("/floorplans/2b")),
        ("pageview", home), ("pageview", url("/contact")), ("pageview", url("/offers")),
        ("pageview", url("/thanks")), ("event", url("/thanks")),
    ], hits
    assert {h["guid"] for h in hits} == {guid}
    assert [h["referrer"] for h in hits[1:4]] == [home, url("/floorplans"), url("/floorplans/2b")]
    assert [hits[1]["title"], hits[2]["title"], hits[4]["title"]] == ["Floorplans", "Floorplan 2B", "Contact"]
    assert hits[7]["event_name"] == "lead"
    assert_no_page_errors(browser)


def test_hash_mode_counts_fragment_routes(browser: Browser, site: SiteServer, edge: str, services: Any,
                                          topic_prefix: str) -> None:
    app = edge_page(site, edge, "/app", extra_attrs=' data-spa="hash"')
    browser.get(app + "#/home")
    browser.wait_for(LOADED)
    browser.wait_for(f"{POSTS_MADE} === 1")
    settle(browser, 0)
    navigate(browser, "location.hash = '#/about'", sends=True)  # popstate and hashchange: one view
    navigate(browser, "history.pushState(null, '', '#/pricing')", sends=True)
    navigate(browser, "history.replaceState({tab: 2}, '', '#/pricing')", sends=False)  # same route
    navigate(browser, "history.back()", sends=True, until="return location.hash === '#/about'")
    navigate(browser, "history.replaceState(null, '', '#/faq')", sends=True)  # a new route
    hits = published_hits(services, topic_prefix, 5, settle=1.5)
    assert pages(hits) == [("pageview", app + f"#/{route}") for route in ("home", "about", "pricing", "about", "faq")]
    assert hits[2]["referrer"] == app + "#/about"
    assert_no_page_errors(browser)


# --- outbound links and downloads ---------------------------------------------------------------

# How the page's requests went out, kept in sessionStorage (it outlives the page, in this tab).
REQUEST_LOG = """<script>
  var realFetch = window.fetch;
  window.fetch = function (url, init) {
    var log = JSON.parse(sessionStorage.getItem('requests') || '[]');
    log.push({body: String(init && init.body), keepalive: !!(init && init.keepalive)});
    sessionStorage.setItem('requests', JSON.stringify(log));
    return realFetch.apply(this, arguments);
  };
</script>"""


def test_outbound_links_and_downloads_are_events_that_survive_the_navigation(
        browser: Browser, site: SiteServer, edge: str, services: Any, topic_prefix: str) -> None:
    # Hits cross a slow link (2 s) to the edge, so each click's request is still in flight when
    # the browser has left the page.
    with SiteServer() as partner, SlowLink("127.0.0.1", int(edge.rsplit(":", 1)[1]), delay=2.0) as link:
        partner.pages["/landing.html"] = b"<!doctype html><title>Partner</title><h1>Partner</h1>"
        landing = partner.url("/landing.html", host="localhost")  # another host: outbound
        endpoint = link.url("/v1/hits")
        links = edge_page(site, edge, "/links.html", endpoint=endpoint, before_tracker=REQUEST_LOG, body=(
            f'<a id="out" href="{landing}"><span>Our partner</span></a>'
            '<a id="pdf" href="/files/brochure.pdf?v=2">Brochure</a>'))
        custom = edge_page(site, edge, "/custom.html", endpoint=endpoint, before_tracker=REQUEST_LOG,
                           extra_attrs=' data-download-extensions="pdf dwg"', body=(
            '<a id="zip" href="/files/pack.zip">Pack</a><a id="dwg" href="/files/plan.DWG">Plan</a>'
            '<a id="report" href="/files/report" download>Report</a>'))

        def events(hits: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
            return {h["hit_id"]: h for h in hits if h["type"] == "event"}

        browser.get(links)
        guid = uuid_str(browser.wait_for(LOADED))
        settle(browser, 2.5)
        browser.click("#out span")  # a click inside the link; the browser leaves for the partner
        assert browser.current_url == landing
        # The event arrived although its page was gone (nothing of the site has loaded since),
        # and once: the page did not send it again as it went.
        wait_published(services, topic_prefix, lambda hs: len(events(hs)) == 1)
        time.sleep(2.5)
        hits = published_hits(services, topic_prefix, 0, settle=0.5)
        assert [h["event_name"] for h in hits if h["type"] == "event"] == ["outbound_link"], hits
        (outbound,) = events(hits).values()
        browser.get(links)
        browser.wait_for(LOADED)
        browser.click("#pdf")
        assert browser.current_url.endswith("/files/brochure.pdf?v=2")
        wait_published(services, topic_prefix, lambda hs: len(events(hs)) == 2)

        browser.get(custom)
        browser.wait_for(LOADED)
        browser.click("#zip")  # zip is not in this page's list: a plain navigation
        browser.get(custom)
        browser.wait_for(LOADED)
        browser.click("#dwg")
        browser.get(custom)
        browser.wait_for(LOADED)
        browser.click("#report")  # the download attribute; the page stays
        settle(browser)
        hits = wait_published(services, topic_prefix, lambda hs: len(events(hs)) >= 4)
        time.sleep(1.0)
        hits = published_hits(services, topic_prefix, 0, settle=0.5)
        requests = browser.execute("return JSON.parse(sessionStorage.getItem('requests'))")

    found = events(hits)
    assert outbound["event_name"] == "outbound_link" and outbound["url"] == links
    assert outbound["event_properties"] == {"url": landing} and outbound["guid"] == guid
    by_name = Counter(h["event_name"] for h in found.values())
    assert by_name == {"outbound_link": 1, "file_download": 3}, found
    downloads = sorted((h["event_properties"]["url"], h["event_properties"]["extension"], h["url"])
                       for h in found.values() if h["event_name"] == "file_download")
    assert downloads == sorted([
        (site.url("/files/brochure.pdf?v=2"), "pdf", links),
        (site.url("/files/plan.DWG"), "dwg", custom),
        (site.url("/files/report"), "", custom),
    ])
    # Each click's event left in a request the browser keeps going after the page is gone.
    clicks = [r for r in requests if "outbound_link" in r["body"] or "file_download" in r["body"]]
    assert len(clicks) >= 4 and all(r["keepalive"] for r in clicks), requests
    # A page that closed while its send was in flight may send the hit again: with the same hit_id.
    assert Counter(h["type"] for h in hits)["event"] >= 4
    assert {h["hit_id"] for h in hits if h["type"] == "event"} == set(found)


# --- consent, opt-out, GPC, DNT -----------------------------------------------------------------


def test_consent_required_stores_and_sends_nothing_until_given(browser: Browser, site: SiteServer, edge: str,
                                                               services: Any, topic_prefix: str) -> None:
    attrs = ' data-consent="required"'
    page = edge_page(site, edge, "/index.html", extra_attrs=attrs)
    other = edge_page(site, edge, "/next.html", extra_attrs=attrs)
    browser.get(page + "?utm_source=newsletter")
    browser.wait_for(STARTED)
    assert browser.execute("return touchstream.getGuid()") is None
    uuid_str(browser.execute("return touchstream.track('lead', {form: 'contact'})"))
    time.sleep(1.0)
    assert browser.execute(STORED) == [[], ""], "stored something before consent"
    assert browser.execute(POSTS_MADE) == 0, "sent something before consent"

    # Consent: this page's landing view (with its campaign) and the lead go out, in that order.
    browser.execute("touchstream.consent(true)")
    guid = uuid_str(browser.wait_for(LOADED))
    settle(browser)
    assert browser.execute(STORED) == [["touchstream.consent", "touchstream.guid"], f"ts_guid={guid}"]
    # Remembered on the next page, without asking again.
    browser.get(other)
    assert browser.wait_for(LOADED) == guid
    settle(browser)
    hits = published_hits(services, topic_prefix, 3)
    assert pages(hits) == [("pageview", page + "?utm_source=newsletter"), ("event", page + "?utm_source=newsletter"),
                           ("pageview", other)]
    assert {h["guid"] for h in hits} == {guid} and hits[0]["utm_source"] == "newsletter"

    # Withdrawn: everything stored goes, nothing more is sent, and nothing is kept to say so.
    browser.execute("touchstream.consent(false)")
    assert browser.execute(STORED) == [[], ""]
    assert browser.execute("return [touchstream.getGuid(), touchstream.track('lead')]") == [None, None]
    browser.refresh()
    browser.wait_for(STARTED)
    browser.execute("touchstream.track('lead')")
    time.sleep(1.0)
    assert browser.execute(STORED) == [[], ""] and browser.execute(POSTS_MADE) == 0
    assert len(published_hits(services, topic_prefix, 3)) == 3, "hits sent after consent(false)"
    assert_no_page_errors(browser)


def test_a_consent_given_before_the_tracker_loaded_counts(browser: Browser, site: SiteServer, edge: str,
                                                        services: Any, topic_prefix: str) -> None:
    # A consent banner that answers first: the snippet's stubs queue the calls.
    early = "<script>touchstream.consent(true); touchstream.track('lead', {form: 'banner'});</script>"
    page = edge_page(site, edge, "/index.html", extra_attrs=' data-consent="required"', before_tracker=early)
    browser.get(page)
    guid = uuid_str(browser.wait_for(LOADED))
    settle(browser)
    hits = published_hits(services, topic_prefix, 2)
    assert [(h["type"], h["guid"]) for h in hits] == [("pageview", guid), ("event", guid)]
    assert browser.execute(STORED) == [["touchstream.consent", "touchstream.guid"], f"ts_guid={guid}"]
    assert_no_page_errors(browser)


def test_opt_out_forgets_the_device_and_is_remembered(browser: Browser, site: SiteServer, edge: str,
                                                      services: Any, topic_prefix: str) -> None:
    page = edge_page(site, edge, "/index.html")
    browser.get(page)
    old = uuid_str(browser.wait_for(LOADED))
    settle(browser)
    browser.execute("touchstream.optOut()")
    # Only the opt-out itself is kept (no identifier): the next pages must know not to track.
    assert browser.execute(STORED) == [["touchstream.optout"], ""]
    browser.execute("touchstream.track('lead')")
    browser.refresh()
    browser.wait_for(STARTED)
    time.sleep(1.0)
    assert browser.execute("return touchstream.getGuid()") is None and browser.execute(POSTS_MADE) == 0
    assert browser.execute(STORED) == [["touchstream.optout"], ""]
    # Opting back in: a new device, not linked to the old one (no previous_guid).
    browser.execute("touchstream.consent(true); touchstream.track('lead', {form: 'contact'})")
    new = uuid_str(browser.wait_for(LOADED))
    settle(browser)
    hits = published_hits(services, topic_prefix, 2)
    assert [(h["type"], h["guid"]) for h in hits] == [("pageview", old), ("event", new)] and new != old
    assert hits[1].get("previous_guid") is None
    assert browser.execute(STORED) == [["touchstream.guid"], f"ts_guid={new}"]
    assert_no_page_errors(browser)


GPC = ("<script>Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', "
       "{configurable: true, get: function () { return true; }});</script>")


def test_global_privacy_control_is_honoured_by_default(browser: Browser, site: SiteServer, edge: str,
                                                       services: Any, topic_prefix: str) -> None:
    # Chromium has no GPC switch: the page stands in for the browser setting before the tracker runs.
    plain = edge_page(site, edge, "/plain.html")
    gpc = edge_page(site, edge, "/gpc.html", before_tracker=GPC)
    ignored = edge_page(site, edge, "/ignored.html", before_tracker=GPC, extra_attrs=' data-respect-gpc="false"')
    browser.get(plain)
    guid = uuid_str(browser.wait_for(LOADED))
    settle(browser)
    browser.get(gpc)
    browser.wait_for(STARTED)
    browser.execute("touchstream.consent(true); touchstream.track('lead')")
    time.sleep(1.0)
    assert browser.execute("return navigator.globalPrivacyControl") is True
    assert browser.execute("return touchstream.getGuid()") is None and browser.execute(POSTS_MADE) == 0
    assert browser.execute(STORED) == [[], ""], "what was stored before the signal must go"
    browser.get(ignored)
    new = uuid_str(browser.wait_for(LOADED))
    settle(browser)
    hits = published_hits(services, topic_prefix, 2)
    assert [(h["url"], h["guid"]) for h in hits] == [(plain, guid), (ignored, new)]


def test_do_not_track_is_honoured_when_the_site_asks(site: SiteServer, edge: str, services: Any,
                                                     topic_prefix: str) -> None:
    default = edge_page(site, edge, "/index.html")
    respecting = edge_page(site, edge, "/dnt.html", extra_attrs=' data-respect-dnt="true"')
    browser = start_browser(prefs={"enable_do_not_track": True})  # the browser's own DNT setting
    try:
        browser.get(respecting)
        browser.wait_for(STARTED)
        assert browser.execute("return navigator.doNotTrack") == "1"
        time.sleep(1.0)
        assert browser.execute(POSTS_MADE) == 0 and browser.execute(STORED) == [[], ""]
        browser.get(default)  # DNT alone does not stop the tracker unless the site says so
        guid = uuid_str(browser.wait_for(LOADED))
        settle(browser)
        hits = published_hits(services, topic_prefix, 1)
        assert [(h["url"], h["guid"]) for h in hits] == [(default, guid)]
    finally:
        browser.quit()


# --- cross-domain ---------------------------------------------------------------------------------


def base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


def link_param(guid: str, at: float, user_agent: str, language: str) -> str:
    """The tracker's `_tsl` value: guid.time.check, the check FNV-1a over guid, time, UA, language."""
    t = base36(int(at))
    h = 0x811C9DC5
    for ch in guid + t + user_agent + language:
        h = ((h ^ ord(ch)) * 16777619) & 0xFFFFFFFF
    return f"{guid}.{t}.{base36(h)}"


def test_cross_domain_links_carry_the_guid_to_the_other_domain(browser: Browser, site: SiteServer, edge: str,
                                                               services: Any, topic_prefix: str) -> None:
    # Two sites on loopback: 127.0.0.1 (A) and localhost (B), each with its own storage and cookies.
    with SiteServer() as other:
        b_page = edge_page(other, edge, "/b.html", host="localhost", extra_attrs=' data-cross-domain="127.0.0.1"')
        to_b = b_page + "?utm_source=a&x=1#top"
        a_page = edge_page(site, edge, "/a.html", extra_attrs=' data-cross-domain="example.org, localhost"',
                           body=f'<a id="to-b" href="{to_b}">Book on B</a>')
        browser.get(b_page)
        b_guid = uuid_str(browser.wait_for(LOADED))  # B knew this device before
        settle(browser)
        browser.get(a_page)
        a_guid = uuid_str(browser.wait_for(LOADED))
        settle(browser)
        # The link is decorated when it is used (here a right-click, as for "open in new tab").
        browser.execute("document.getElementById('to-b').dispatchEvent(new MouseEvent('contextmenu', {bubbles: true}))")
        decorated = browser.execute("return document.getElementById('to-b').href")
        assert re.fullmatch(re.escape(b_page + "?utm_source=a&x=1&_tsl=" + a_guid) + r"\.[0-9a-z]+\.[0-9a-z]+#top",
                            decorated), decorated
        browser.click("#to-b")
        assert browser.wait_for(LOADED) == a_guid, "B adopts A's GUID"
        assert browser.current_url == to_b, "the parameter is taken out of the address bar"
        settle(browser)
        assert browser.execute(STORED) == [["touchstream.guid"], f"ts_guid={a_guid}"]

        ua, lang = browser.execute("return [navigator.userAgent, navigator.language]")
        now = time.time()
        stale = link_param(str(uuid.uuid4()), now - 10 * 60, ua, lang)      # ten minutes old
        foreign = link_param(str(uuid.uuid4()), now, ua + " Other", lang)  # made in another browser
        fresh_guid = str(uuid.uuid4())
        for value in (stale, foreign, link_param(fresh_guid, now, ua, lang)):
            browser.get(b_page + "?_tsl=" + value + "&page=2")
            browser.wait_for(LOADED)
            assert browser.current_url == b_page + "?page=2"
            settle(browser)
        assert browser.execute("return touchstream.getGuid()") == fresh_guid

    hits = published_hits(services, topic_prefix, 6)
    assert [(h["url"], h["guid"], h.get("previous_guid")) for h in hits if h["guid"] == a_guid] == [
        (a_page, a_guid, None), (to_b, a_guid, b_guid), (b_page + "?page=2", a_guid, None),
        (b_page + "?page=2", a_guid, None)]
    assert [(h["url"], h["previous_guid"]) for h in hits if h["guid"] == fresh_guid] == [(b_page + "?page=2", a_guid)]
    assert [h["url"] for h in hits if h["guid"] == b_guid] == [b_page]
    assert not [h for h in hits if h["type"] == "event"], "a link to a listed domain is not an outbound link"
    assert not [h for h in hits if "_tsl" in h["url"]]
