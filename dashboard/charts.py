"""Charts as server-rendered SVG (why not a JavaScript chart library: docs/dashboard.md, measured
with bench/chart_bench.py).

Every bar carries its data (`data-x`, `data-series`, `data-value`, the value as the API gives it)
and a `<title>` that browsers show on hover; the page shows the same numbers in a table beside
the chart, and the legend is HTML. Colours: Paul Tol's colour-blind-safe "muted" scheme for
channels and the Okabe-Ito scheme for models, with greys for "Unassigned" and "(no touch)".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

CHANNEL_COLOURS = {
    "Paid Search": "#332288", "Paid Social": "#88CCEE", "Display": "#44AA99", "Organic Search": "#117733",
    "Organic Social": "#999933", "Email": "#DDCC77", "Affiliates": "#CC6677", "Referral": "#882255",
    "Direct": "#AA4499", "Unassigned": "#BBBBBB", "(no touch)": "#666666",
}
SERIES_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#F0E442")
WIDTH, HEIGHT = 960, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 48


def colour(series: str, index: int) -> str:
    return CHANNEL_COLOURS.get(series, SERIES_COLOURS[index % len(SERIES_COLOURS)])


@dataclass(frozen=True)
class Bar:
    x: str  # the category (a day, a group)
    series: str
    value: float


def number(value: float) -> str:
    """A value as the table shows it: whole numbers plain, fractions to two places."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def nice_top(top: float) -> tuple[float, float]:
    """(axis maximum, tick step): 4-5 round steps that cover `top`."""
    if top <= 0:
        return 1.0, 0.25
    raw = top / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return step * math.ceil(top / step), step


def _axes(top: float, step: float, y_label: str, x_labels: Sequence[tuple[float, str]]) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    parts = []
    ticks = int(round(top / step))
    for n in range(ticks + 1):
        value = n * step
        y = TOP + plot_h - plot_h * value / top
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{number(value)}</text>')
    for x, label in x_labels:
        parts.append(f'<text class="tick" x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
                     f'{escape(label)}</text>')
    parts.append(f'<text class="axis-label" transform="translate(14 {TOP + plot_h / 2:.0f}) rotate(-90)" '
                 f'text-anchor="middle">{escape(y_label)}</text>')
    return parts


def _svg(chart_id: str, title: str, body: list[str]) -> Markup:
    head = (f'<svg id="{escape(chart_id)}" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
            f'aria-labelledby="{escape(chart_id)}-title" xmlns="http://www.w3.org/2000/svg">'
            f'<title id="{escape(chart_id)}-title">{escape(title)} (the table beside it has the numbers)</title>')
    return Markup(head + "".join(body) + "</svg>")


def _rect(x: float, y: float, w: float, h: float, bar: Bar, fill: str, label: str) -> str:
    return (f'<rect x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" height="{h:.2f}" fill="{fill}" '
            f'data-x="{escape(bar.x)}" data-series="{escape(bar.series)}" data-value="{bar.value!r}">'
            f'<title>{escape(label)}: {number(bar.value)}</title></rect>')


def stacked(chart_id: str, title: str, y_label: str, categories: Sequence[str], series: Sequence[str],
            bars: Sequence[Bar]) -> Markup:
    """One column per category (e.g. a day), its bars stacked in `series` order."""
    totals = {c: 0.0 for c in categories}
    for b in bars:
        totals[b.x] = totals.get(b.x, 0.0) + max(b.value, 0.0)
    top, step = nice_top(max(totals.values(), default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(categories), 1)
    every = max(1, math.ceil(len(categories) / 10))
    labels = [(LEFT + slot * (i + 0.5), c[5:] if len(c) == 10 else c)
              for i, c in enumerate(categories) if i % every == 0]
    body = _axes(top, step, y_label, labels)
    order = {s: n for n, s in enumerate(series)}
    base = {c: 0.0 for c in categories}
    index = {c: i for i, c in enumerate(categories)}
    for b in sorted(bars, key=lambda b: (index.get(b.x, 0), order.get(b.series, 0))):
        if b.value <= 0 or b.x not in index:
            continue
        h = plot_h * b.value / top
        y = TOP + plot_h - plot_h * base[b.x] / top - h
        base[b.x] += b.value
        body.append(_rect(LEFT + slot * index[b.x] + slot * 0.1, y, slot * 0.8, h, b,
                          colour(b.series, order.get(b.series, 0)), f"{b.x} · {b.series}"))
    return _svg(chart_id, title, body)


def grouped(chart_id: str, title: str, y_label: str, categories: Sequence[str], series: Sequence[str],
            bars: Sequence[Bar]) -> Markup:
    """One group per category, one bar per series side by side."""
    top, step = nice_top(max((b.value for b in bars), default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(categories), 1)
    width = slot * 0.8 / max(len(series), 1)
    labels = [(LEFT + slot * (i + 0.5), c if len(c) <= 16 else c[:15] + "…") for i, c in enumerate(categories)]
    body = _axes(top, step, y_label, labels)
    order = {s: n for n, s in enumerate(series)}
    index = {c: i for i, c in enumerate(categories)}
    for b in bars:
        if b.value <= 0 or b.x not in index or b.series not in order:
            continue
        h = plot_h * b.value / top
        x = LEFT + slot * index[b.x] + slot * 0.1 + width * order[b.series]
        body.append(_rect(x, TOP + plot_h - h, width, h, b, colour(b.series, order[b.series]),
                          f"{b.x} · {b.series}"))
    return _svg(chart_id, title, body)


def legend(series: Sequence[str], labels: dict[str, str] | None = None) -> Markup:
    """The legend as an HTML list with SVG swatches (no inline styles: the CSP forbids them)."""
    items = []
    for n, s in enumerate(series):
        swatch = (f'<svg class="swatch" viewBox="0 0 10 10" aria-hidden="true"><rect width="10" height="10" '
                  f'fill="{colour(s, n)}"/></svg>')
        items.append(f"<li>{swatch}{escape((labels or {}).get(s, s))}</li>")
    return Markup('<ul class="legend">' + "".join(items) + "</ul>")
