"""The dashboard in a real headless Chromium (tests/e2e/browser.py), served by a real
`touchstream dashboard` process over data the sink's writer wrote.

Every page loads without console errors; each chart's bars and each table's cells are exactly the
rows its API endpoint gives (the table's "Download CSV" link is that endpoint's CSV); filters
changed from the keyboard update the URL, a reload restores the view, the back button returns to
the previous one; bad parameters show their message on the page.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from dashboard.params import MODELS
from sink.testing import T0
from tests.dashboard_data import fill
from tests.e2e.browser import KEYS, Browser, BrowserUnavailable, free_port

REPO = Path(__file__).resolve().parents[2]
RANGE = f"period=custom&from={T0.date().isoformat()}&to=2026-03-16"
PAGES = [f"/overview?{RANGE}", f"/overview?{RANGE}&metric=conversions&model=time_decay",
         f"/attribution?{RANGE}&group_by=module&lookback=30", f"/conversions?{RANGE}&site=www.maple-court.com",
         f"/sessions?{RANGE}&bots=include&page_size=20", "/journey?guid=aaaaaaaa-0000-4000-8000-000000000001",
         "/journey"]

# Every table of the pages, its rows as their cells' data-value, and its API and CSV links.
TABLES_JS = """
return Array.from(document.querySelectorAll('table[data-api]')).map(t => ({
  id: t.id, api: t.dataset.api, csv: t.querySelector('a.csv').getAttribute('href'),
  columns: Array.from(t.querySelectorAll('thead th')).length,
  rows: Array.from(t.querySelectorAll('tbody tr')).map(r => Array.from(r.cells).map(c => c.dataset.value))}));
"""
BARS_JS = """
return Array.from(document.querySelectorAll('svg.chart rect[data-series]')).map(r =>
  [r.closest('svg').id, r.dataset.x, r.dataset.series, r.dataset.value]);
"""


def label(value: Any) -> str:
    return "(none)" if value in (None, "") else str(value)


# chart -> (the table with its numbers, the bars its API rows make: (x, series, value))
CHART_ROWS = {
    "chart-overview": ("table-series", lambda rows, q: [(r["day"], r["channel"], r["value"]) for r in rows]),
    "chart-conversions": ("table-daily",
                          lambda rows, q: [(r["day"], r["conversion_name"], r["conversions"]) for r in rows]),
    "chart-by-channel": ("table-by-channel",
                         lambda rows, q: [(r["channel"], "conversions", r["conversions"]) for r in rows]),
    "chart-attribution": ("table-attribution", lambda rows, q: [
        (label(r[q["group_by"]]), m, r[m]) for r in rows[:12] for m in MODELS]),
}
FETCH_JS = "fetch(arguments[0]).then(r => r.text()).then(arguments[arguments.length - 1])"


@pytest.fixture
async def data(migrated: Any) -> Any:
    return await fill(migrated)


@pytest.fixture
def server(data: Any) -> Any:
    """`touchstream dashboard` on a free port, as a user starts it."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHSTREAM_")}
    env.update(data.env())
    proc = subprocess.Popen([sys.executable, "-m", "touchstream.cli", "dashboard", "--port", str(port)], env=env,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the dashboard did not start: {proc.stdout.read().decode()[-2000:]}")
        time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def browser() -> Any:
    try:
        b = Browser().start()
    except BrowserUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield b
    finally:
        b.quit()


def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))[1:]


def check_page(browser: Browser, base: str) -> int:
    """Tables equal their API's CSV and their download link; bars equal the API's rows. Returns rows seen."""
    seen = 0
    for t in browser.execute(TABLES_JS):
        api_csv = httpx.get(base + t["api"] + "&format=csv").text  # (params= would replace the query)
        assert t["rows"] == csv_rows(api_csv), t["id"]
        assert browser.execute_async(FETCH_JS, t["csv"]) == api_csv, f"{t['id']}: the CSV link"
        seen += len(t["rows"])
    bars = browser.execute(BARS_JS)
    apis = {t["id"]: t["api"] for t in browser.execute(TABLES_JS)}
    for chart in sorted({b[0] for b in bars}):
        table_id, expand = CHART_ROWS[chart]
        answer = httpx.get(base + apis[table_id]).json()
        expected = {(str(x), str(series), repr(value)) for x, series, value in expand(answer["rows"], answer["params"])
                    if value and value > 0}
        assert {tuple(b[1:]) for b in bars if b[0] == chart} == expected, chart
    return seen


def test_every_page_matches_its_api_without_console_errors(server, browser):
    seen = 0
    for path in PAGES:
        browser.get(server + path)
        assert browser.execute("return document.querySelector('h1').textContent"), path
        assert not browser.execute("return document.getElementById('errors')"), path
        seen += check_page(browser, server)
    charts = 0
    for path in PAGES[:4]:
        browser.get(server + path)
        charts += len(browser.execute(BARS_JS))
    assert seen > 100 and charts > 50, (seen, charts)
    assert browser.console_errors(include_network=True) == []


def test_filters_from_the_keyboard_update_the_url_and_reload_restores(server, browser):
    browser.get(f"{server}/attribution?{RANGE}")
    before = browser.execute(TABLES_JS)[0]["rows"]
    browser.tab_to("f-group_by")
    browser.send_keys(KEYS["ArrowDown"])  # channel -> source; nothing reloads while choosing
    assert "group_by" not in browser.current_url
    browser.tab_to("f-model")
    browser.send_keys(KEYS["ArrowDown"])  # linear -> position_based
    browser.tab_to("apply")
    browser.send_keys(KEYS["Enter"])
    browser.wait_for("return location.search.includes('group_by=source')")
    query = parse_qs(urlsplit(browser.current_url).query)
    assert query["group_by"] == ["source"] and query["model"] == ["position_based"], query
    after = browser.execute(TABLES_JS)[0]
    assert after["rows"] != before and after["api"].count("group_by=source") == 1
    assert browser.focused() == "apply"  # the focus comes back to the control that applied
    check_page(browser, server)
    browser.refresh()
    assert browser.execute(TABLES_JS)[0]["rows"] == after["rows"]
    assert browser.execute("return document.getElementById('f-group_by').value") == "source"
    browser.execute("history.back()")
    browser.wait_for("return !location.search.includes('group_by')")
    assert browser.execute(TABLES_JS)[0]["rows"] == before
    assert browser.console_errors(include_network=True) == []


def test_journey_search_and_paging_by_keyboard(server, browser):
    browser.get(f"{server}/journey")
    assert browser.execute("return document.querySelector('.empty').textContent")  # an empty state, no table
    browser.tab_to("f-guid")
    browser.send_keys("BBBBBBBB-0000-4000-8000-000000000002", KEYS["Enter"])
    browser.wait_for("return location.search.includes('guid=')")
    assert check_page(browser, server) >= 2
    credits = browser.execute(TABLES_JS)[1]["rows"]
    assert any(row[2] == "appointment" for row in credits)
    browser.get(f"{server}/sessions?{RANGE}&page_size=10")
    first = browser.execute(TABLES_JS)[0]["rows"]
    browser.execute("document.querySelector('a[rel=next]').focus()")
    browser.send_keys(KEYS["Enter"])
    browser.wait_for("return location.search.includes('page=2')")
    second = browser.execute(TABLES_JS)[0]["rows"]
    assert second and second != first
    check_page(browser, server)
    assert browser.console_errors(include_network=True) == []


@pytest.mark.parametrize("query,parameter", [
    ("period=custom&from=2026-03-10&to=2026-03-01", "from"), ("model=magic", "model"),
    ("page_size=1000000", "page_size"), ("campaign=%27%3B%20DROP%20TABLE%20sessions%3B--", "campaign"),
])
def test_bad_parameters_show_their_message(server, browser, query, parameter):
    browser.get(f"{server}/sessions?{query}")
    errors = browser.execute("return Array.from(document.querySelectorAll('#errors li')).map(li => li.dataset.parameter)")
    assert parameter in errors
    assert browser.execute(f"return document.getElementById('f-{parameter}')?.getAttribute('aria-invalid')") \
        in ("true", None)
    assert not browser.execute("return document.querySelector('table')")


def test_models_named_in_the_page_are_the_api_models(server, browser):
    browser.get(f"{server}/attribution?{RANGE}")
    options = browser.execute("return Array.from(document.getElementById('f-model').options).map(o => o.value)")
    assert options == list(MODELS)
    assert json.loads(httpx.get(f"{server}/api/v1/meta").text)["rows"][0]["models"] == options
