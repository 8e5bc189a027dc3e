"""A small headless-Chromium driver for tests: Debian's chromium + chromedriver, spoken to over
the W3C WebDriver protocol with httpx (already a project dependency).

No Selenium and nothing that downloads a browser: it runs `/usr/bin/chromedriver` on a free
loopback port, which starts `/usr/bin/chromium` headless with a new, empty profile. A missing
binary raises `BrowserUnavailable` whose message says how to install it; tests turn that into
`pytest.fail` (never a skip).

    with Browser() as browser:
        browser.get("http://127.0.0.1:8000/page.html")
        browser.wait_for("return window.touchstream && window.touchstream.__touchstream")
        guid = browser.execute("return touchstream.getGuid()")
        errors = browser.console_errors()

Paths can be overridden with TOUCHSTREAM_CHROMIUM and TOUCHSTREAM_CHROMEDRIVER.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

CHROMIUM = os.environ.get("TOUCHSTREAM_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TOUCHSTREAM_CHROMEDRIVER", "/usr/bin/chromedriver")
INSTALL_HINT = "apt-get update && apt-get install -y chromium chromium-driver"

# STACK.md: what runs on these machines (no sandbox as root, no GPU, no network but loopback).
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)

_ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf"  # the W3C web element identifier
# WebDriver's code points for keys that are not characters (W3C WebDriver, "Keyboard actions").
KEYS = {"Tab": "\ue004", "Enter": "\ue007", "Space": "\ue00d", "ArrowUp": "\ue013", "ArrowDown": "\ue015",
        "Backspace": "\ue003"}


class BrowserUnavailable(RuntimeError):
    """Chromium or chromedriver is not installed (the message says how to install them)."""


class BrowserError(RuntimeError):
    """chromedriver answered with a WebDriver error, or the browser misbehaved."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_installed(chromium: str = CHROMIUM, chromedriver: str = CHROMEDRIVER) -> None:
    """Raise `BrowserUnavailable` unless both binaries are there and executable."""
    missing = [p for p in (chromium, chromedriver) if not (Path(p).is_file() and os.access(p, os.X_OK))]
    if missing:
        raise BrowserUnavailable(
            f"headless Chromium is needed but {', '.join(missing)} is missing. Install Debian's packages: "
            f"`{INSTALL_HINT}` (or point TOUCHSTREAM_CHROMIUM / TOUCHSTREAM_CHROMEDRIVER at them). "
            "Browsers that tools download for themselves cannot be fetched on these machines."
        )


class Browser:
    """One chromedriver process and one browser session with a fresh profile."""

    def __init__(self, *, chromium: str = CHROMIUM, chromedriver: str = CHROMEDRIVER,
                 extra_args: tuple[str, ...] = (), prefs: dict[str, Any] | None = None,
                 page_load_timeout: float = 30.0) -> None:
        check_installed(chromium, chromedriver)
        self.chromium = chromium
        self.chromedriver = chromedriver
        self.extra_args = extra_args
        self.prefs = prefs or {}  # Chromium preferences, e.g. {"enable_do_not_track": True}
        self.page_load_timeout = page_load_timeout
        self._tmp: Path | None = None
        self.profile_dir: Path | None = None
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._http: httpx.Client | None = None
        self._session: str | None = None
        self._console: list[dict[str, Any]] = []

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> Browser:
        try:
            return self._start(timeout)
        except BaseException:
            self.quit()  # no chromedriver or profile left behind
            raise

    def _start(self, timeout: float) -> Browser:
        self._tmp = Path(tempfile.mkdtemp(prefix="touchstream-chromium-"))
        self.profile_dir = self._tmp / "profile"  # a new, empty --user-data-dir
        self.profile_dir.mkdir()
        self.log_path = self._tmp / "chromedriver.log"
        port = free_port()
        log = open(self.log_path, "wb")
        try:
            self._proc = subprocess.Popen(
                [self.chromedriver, f"--port={port}", "--allowed-ips=127.0.0.1", f"--log-path={self.log_path}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        finally:
            log.close()
        self._http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=self.page_load_timeout + 30)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise BrowserError(f"chromedriver exited with code {self._proc.returncode}; log: {self._log_tail()}")
            try:
                if self._http.get("/status").json()["value"].get("ready"):
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise BrowserError(f"chromedriver did not answer on port {port} within {timeout:.0f}s; log: {self._log_tail()}")
            time.sleep(0.05)
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "timeouts": {"pageLoad": int(self.page_load_timeout * 1000), "script": 30000},
                    "goog:loggingPrefs": {"browser": "ALL"},
                    "goog:chromeOptions": {
                        "binary": self.chromium,
                        "args": [*CHROMIUM_ARGS, f"--user-data-dir={self.profile_dir}", *self.extra_args],
                        "prefs": self.prefs,
                    },
                }
            }
        }
        value = self._call("POST", "/session", caps, session=False)
        self._session = value["sessionId"]
        return self

    def quit(self) -> None:
        try:
            if self._session and self._http:
                try:
                    self._http.delete(f"/session/{self._session}", timeout=15)
                except httpx.HTTPError:
                    pass
        finally:
            self._session = None
            if self._http:
                self._http.close()
                self._http = None
            if self._proc and self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(5)
            self._proc = None
            if self._tmp:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None

    def __enter__(self) -> Browser:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.quit()

    # ---- WebDriver commands -----------------------------------------------------------------
    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, *, session: bool = True) -> Any:
        if self._http is None:
            raise BrowserError("the browser is not started")
        url = f"/session/{self._session}{path}" if session else path
        response = self._http.request(method, url, json=body if body is not None else ({} if method == "POST" else None))
        try:
            payload = response.json()
        except ValueError:
            raise BrowserError(f"{method} {path}: HTTP {response.status_code}, not JSON: {response.text[:500]}") from None
        value = payload.get("value")
        if response.status_code >= 400 or (isinstance(value, dict) and "error" in value and "message" in value):
            err = value if isinstance(value, dict) else {}
            raise BrowserError(f"{method} {path}: {err.get('error', response.status_code)}: {str(err.get('message', ''))[:2000]}")
        return value

    def get(self, url: str) -> None:
        """Navigate and wait for the load event (pageLoadStrategy normal)."""
        self._call("POST", "/url", {"url": url})

    def refresh(self) -> None:
        self._call("POST", "/refresh", {})

    @property
    def current_url(self) -> str:
        return self._call("GET", "/url")

    @property
    def title(self) -> str:
        return self._call("GET", "/title")

    def click(self, css: str) -> None:
        """A real click (WebDriver Element Click: pointer events at the element's centre) on the
        first element matching `css`; whatever navigation it starts, the call returns after it."""
        found = self._call("POST", "/element", {"using": "css selector", "value": css})
        self._call("POST", f"/element/{found[_ELEMENT_KEY]}/click", {})

    def execute(self, script: str, *args: Any) -> Any:
        """Run `script` as a function body in the page (`return ...` gives the result)."""
        return self._call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def execute_async(self, script: str, *args: Any) -> Any:
        """Run `script`; it finishes by calling `arguments[arguments.length - 1](result)`."""
        return self._call("POST", "/execute/async", {"script": script, "args": list(args)})

    def wait_for(self, script: str, *args: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
        """Poll `script` until it returns something truthy; return that, or raise with the last value."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            last = self.execute(script, *args)
            if last:
                return last
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out after {timeout:.1f}s waiting for: {script} (last value {last!r})")
            time.sleep(interval)

    def send_keys(self, *keys: str) -> None:
        """Real key presses (W3C actions) to whatever has the focus: text, or KEYS["Tab"] and the like."""
        actions = []
        for key in keys:
            for char in ([key] if key in KEYS.values() else list(key)):
                actions += [{"type": "keyDown", "value": char}, {"type": "keyUp", "value": char}]
        self._call("POST", "/actions", {"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})
        self._call("DELETE", "/actions")

    def focused(self) -> str:
        """The id of the element that has the focus ("" for none)."""
        return self.execute("return document.activeElement ? document.activeElement.id : ''")

    def tab_to(self, element_id: str, limit: int = 60) -> int:
        """Press Tab until `element_id` has the focus; returns how many presses it took."""
        for presses in range(1, limit + 1):
            self.send_keys(KEYS["Tab"])
            if self.focused() == element_id:
                return presses
        raise BrowserError(f"{element_id} did not get the focus in {limit} Tab presses (last: {self.focused()!r})")

    def screenshot(self, path: str | Path) -> Path:
        data = self._call("GET", "/screenshot")
        out = Path(path)
        out.write_bytes(base64.b64decode(data))
        return out

    # ---- console ----------------------------------------------------------------------------
    def console(self) -> list[dict[str, Any]]:
        """Every console entry so far (chromedriver hands each out once; this keeps them all).

        Entries are dicts with `level` (SEVERE, WARNING, INFO, ...), `source` (javascript,
        console-api, network, ...), `message` and `timestamp`.
        """
        entries = self._call("POST", "/se/log", {"type": "browser"}) or []
        self._console.extend(entries)
        return list(self._console)

    def console_errors(self, *, include_network: bool = False) -> list[dict[str, Any]]:
        """SEVERE entries: uncaught exceptions and console.error (and failed requests if asked)."""
        return [
            e for e in self.console()
            if e.get("level") == "SEVERE" and (include_network or e.get("source") != "network")
        ]

    def _log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:] if self.log_path else ""
        except OSError:
            return ""


# ---- a tiny site (and hit recorder) on 127.0.0.1 ---------------------------------------------

PAGES_DIR = Path(__file__).resolve().parent / "pages"
TRACKER_JS = Path(__file__).resolve().parents[2] / "ingest" / "static" / "tracker.js"


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)

    def hits(self) -> list[dict[str, Any]]:
        """The hits of a POST body: one object or an array (what the edge accepts as JSON)."""
        data = self.json()
        return data if isinstance(data, list) else [data]


class SiteServer:
    """A threaded HTTP server on a free loopback port, for browser tests.

    - `add_page(path, template, host=..., **values)` serves `pages/<template>` at `path` (any query string),
      with `{{NAME}}` placeholders filled from `values` (missing ones become "").
    - `GET /tracker.js` serves ingest/static/tracker.js as it is on disk.
    - `POST /v1/hits` is recorded (`requests`, `hits()`) and answered with the next status of
      `statuses` (202 once they run out), with the edge's CORS headers. Preflights (OPTIONS)
      are recorded too, so a test can assert that none happened.
    """

    def __init__(self) -> None:
        self.pages: dict[str, bytes] = {}
        self.requests: list[RecordedRequest] = []
        self.statuses: list[int] = []
        self.retry_after: str | None = None
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        """`host="localhost"` names the same server as another site (its own cookies and storage)."""
        return self.origin.replace("127.0.0.1", host, 1) + path

    def add_page(self, path: str, template: str, host: str = "127.0.0.1", **values: str) -> str:
        text = (PAGES_DIR / template).read_text()
        for name in re.findall(r"\{\{([A-Z_]+)\}\}", text):
            text = text.replace("{{" + name + "}}", values.get(name.lower(), ""))
        self.pages[path] = text.encode()
        return self.url(path, host)

    def posts(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST"]

    def preflights(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == "OPTIONS"]

    def hits(self) -> list[dict[str, Any]]:
        return [hit for r in self.posts() for hit in r.hits()]

    def wait_for_hits(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            hits = self.hits()
            if len(hits) >= count:
                return hits
            if time.monotonic() > deadline:
                shown = json.dumps(hits[-5:])[:3000]
                raise AssertionError(f"expected {count} hit(s) within {timeout:.0f}s, got {len(hits)}; the last: {shown}")
            time.sleep(0.05)

    def start(self) -> SiteServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _record(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with server._lock:
                    server.requests.append(RecordedRequest(
                        self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time()))
                return body

            def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _cors(self) -> dict[str, str]:
                return {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "Retry-After"}

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/tracker.js":
                    self._send(200, TRACKER_JS.read_bytes(), "application/javascript; charset=utf-8")
                elif path in server.pages:
                    self._send(200, server.pages[path], "text/html; charset=utf-8")
                else:
                    self._send(404, b"not found", "text/plain")

            def do_OPTIONS(self) -> None:
                self._record()
                self._send(204, b"", "text/plain", {**self._cors(), "Access-Control-Allow-Methods": "POST",
                                                    "Access-Control-Allow-Headers": "Content-Type"})

            def do_POST(self) -> None:
                body = self._record()
                with server._lock:
                    status = server.statuses.pop(0) if server.statuses else 202
                extra = self._cors()
                if status >= 500 and server.retry_after is not None:
                    extra["Retry-After"] = server.retry_after
                try:
                    data = json.loads(body)
                    n = len(data) if isinstance(data, list) else 1
                except ValueError:
                    n = 0
                payload = {"accepted": n, "rejected": []} if status < 300 else {"error": "unavailable"}
                self._send(status, json.dumps(payload).encode(), "application/json", extra)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="site-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> SiteServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
