"""Server-rendered SVG against Chart.js for the dashboard's biggest chart (not a test): 90 days x 10
channels stacked, as the Overview draws it.

    .venv/bin/python bench/chart_bench.py --chartjs /path/to/chart.umd.js [--loads 20]

Get the file with `npm pack chart.js@4.6.1` (it is not vendored: the measurement chose SVG). For
each variant: bytes the browser fetches, the server's time to make them, and in headless Chromium
(tests/e2e/browser.py) the time from navigation to the load event, and for Chart.js the time its
script spends drawing (animation off), median over alternating loads of both pages.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import statistics
import sys
import threading
import time
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dashboard import charts  # noqa: E402
from dashboard.params import CHANNELS  # noqa: E402
from tests.e2e.browser import Browser  # noqa: E402

CHARTJS_PAGE = """<!doctype html><html><head><meta charset="utf-8"><script src="/chart.js"></script></head><body>
<canvas id="c" width="960" height="300"></canvas><script>
const data = %s; const t0 = performance.now();
new Chart(document.getElementById('c'), {type: 'bar', options: {animation: false, responsive: false,
  scales: {x: {stacked: true}, y: {stacked: true}}}, data: {labels: data.days, datasets: data.series.map(s =>
  ({label: s.name, data: s.values, backgroundColor: s.colour}))}});
window.drawMs = performance.now() - t0;</script></body></html>"""
SVG_PAGE = '<!doctype html><html><head><meta charset="utf-8"></head><body>%s</body></html>'


def dataset() -> tuple[list[str], dict[str, list[int]]]:
    rng = random.Random(1)
    days = [(date(2026, 1, 1) + timedelta(days=n)).isoformat() for n in range(90)]
    return days, {c: [rng.randint(50, 3000) for _ in days] for c in CHANNELS}


def serve(pages: dict[str, bytes]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = pages.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "application/javascript" if self.path.endswith(".js") else "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chartjs", required=True, type=Path, help="chart.umd.js of the chart.js npm package")
    p.add_argument("--loads", type=int, default=20)
    args = p.parse_args()
    days, values = dataset()
    bars = [charts.Bar(d, c, v) for c, vs in values.items() for d, v in zip(days, vs)]
    renders = []
    for _ in range(50):
        started = time.perf_counter()
        svg = charts.stacked("c", "Sessions", "Sessions", days, list(CHANNELS), bars)
        renders.append(time.perf_counter() - started)
    data = json.dumps({"days": days, "series": [{"name": c, "values": v, "colour": charts.colour(c, i)}
                                                for i, (c, v) in enumerate(values.items())]})
    chartjs = args.chartjs.read_bytes()
    pages = {"/svg": (SVG_PAGE % svg).encode(), "/chartjs": (CHARTJS_PAGE % data).encode(), "/chart.js": chartjs}
    httpd = serve(pages)
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    loads: dict[str, list[float]] = {"svg": [], "chartjs": []}
    draw: list[float] = []
    timing = "const t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd - t.startTime;"
    with Browser() as browser:
        for _ in range(args.loads):
            for name in ("svg", "chartjs"):
                browser.get(f"{base}/{name}")
                browser.wait_for("const t = performance.getEntriesByType('navigation')[0]; "
                                 "return document.readyState === 'complete' && t && t.loadEventEnd > 0")
                loads[name].append(browser.execute(timing))
                if name == "chartjs":
                    draw.append(browser.execute("return window.drawMs"))
        errors = browser.console_errors()
    httpd.shutdown()
    gz = lambda b: len(gzip.compress(b))  # noqa: E731
    print(f"server-rendered SVG: page {len(pages['/svg']):,} B ({gz(pages['/svg']):,} B gzip), made in "
          f"{statistics.median(renders) * 1000:.1f} ms (median of 50); navigation to load event "
          f"{statistics.median(loads['svg']):.1f} ms (median of {args.loads})")
    print(f"Chart.js 4.6.1: library {len(chartjs):,} B ({gz(chartjs):,} B gzip) + page with data "
          f"{len(pages['/chartjs']):,} B ({gz(pages['/chartjs']):,} B gzip); navigation to load event "
          f"{statistics.median(loads['chartjs']):.1f} ms, drawing {statistics.median(draw):.1f} ms "
          f"(medians of {args.loads})")
    print(f"console errors: {errors or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
