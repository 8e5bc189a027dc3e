"""The dashboard's Starlette app: pages, the JSON API, OpenAPI, login, static files.

Read-only by construction: the only POSTs are /login and /logout (a cookie, no database), and the
database pool reads as the analyst role in read-only transactions (dashboard/db.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from dashboard import api, db, openapi, queries
from dashboard.auth import COOKIE, Gate
from dashboard.pages import PAGES, Page, presets, shown_range
from dashboard.params import CHANNELS, MODEL_LABELS, BadParameters, Filters, Query
from dashboard.settings import DashboardSettings
from schemas.timefmt import iso

HERE = Path(__file__).resolve().parent
OPEN_PATHS = ("/login", "/static/", "/healthz")
SHARED_FILTERS = ("period", "from", "to", "site", "events", "model", "lookback")
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def shown(value: Any, key: str = "") -> str:
    """A value as a person reads it in a table."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1%}" if key.endswith("rate") else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def templates() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.filters.update(raw=api.csv_cell, shown=shown, pair=lambda v: (v, v), days=lambda d: (d, f"{d} days"))
    env.globals.update(
        pages=PAGES, periods=presets(None), shown_range=shown_range,
        model_options=list(MODEL_LABELS.items()), channel_options=[(c, c) for c in CHANNELS],
        metric_options=[("sessions", "Sessions"), ("devices", "Devices"), ("pageviews", "Pageviews"),
                        ("conversions", "Conversions")],
        group_options=[("channel", "Channel"), ("source", "Source"), ("campaign", "Campaign"), ("module", "Module")])
    return env


def form_values(request: Request, q: Query | None) -> dict[str, str]:
    """What the filter form shows: the parsed query, or (when it did not parse) what was sent."""
    if q is None:
        values: dict[str, str] = {}
        for k, v in request.query_params.multi_items():
            values[k] = f"{values[k]},{v}" if k in values else v
        return values
    out = {k: (",".join(v) if isinstance(v, list) else str(v))
           for k, v in q.model_dump(mode="json", by_alias=True).items() if v is not None}
    return out


class Dashboard:
    """The handlers, with what they share: settings, the login gate, the pool and the templates."""

    def __init__(self, settings: DashboardSettings, pool: Any = None) -> None:
        self.settings = settings
        self.gate = Gate.from_settings(settings)
        self.pool = pool
        self.env = templates()

    def logged_in(self, request: Request) -> bool:
        return self.gate.valid(request.cookies.get(COOKIE))

    async def page(self, request: Request, page: Page) -> Response:
        q: Query | None = None
        ctx: dict[str, Any] = {}
        status = 200
        async with self.pool.acquire() as conn:
            as_of = await queries.as_of(conn)  # first: what is read after it is at least this fresh
            meta = (await api.BY_FUNCTION["meta"].answer(conn, Query())).rows[0]
            try:
                q = await queries.resolved(conn, page.query.parse(request.query_params))
                ctx = await page.build(conn, q)
            except BadParameters as exc:
                q, status = None, 400
                ctx = {"errors": exc.problems}
        carry = "&".join(f"{k}={quote(v)}" for k, v in form_values(request, q).items() if k in SHARED_FILTERS
                         and not (k in ("from", "to") and isinstance(q, Filters) and q.period != "custom"))
        html = self.env.get_template(f"{page.name}.html").render(
            page=page.name, title=page.title, q=q, meta=meta, form=form_values(request, q), carry=carry,
            bad={name for name, _ in ctx.get("errors", [])}, logged_in=self.gate.required and self.logged_in(request),
            as_of=as_of, **ctx)
        return HTMLResponse(html, status, headers={api.AS_OF_HEADER: iso(as_of)})

    async def endpoint(self, request: Request, endpoint: api.Endpoint) -> Response:
        try:
            q = endpoint.query.parse(request.query_params)
            async with self.pool.acquire() as conn:
                as_of = await queries.as_of(conn)  # first: the rows read after it are at least this fresh
                q = await queries.resolved(conn, q)
                t = await endpoint.answer(conn, q)
        except BadParameters as exc:
            status, body = api.bad_request(exc)
            return Response(body, status, media_type="application/json")
        headers = {api.AS_OF_HEADER: iso(as_of)}
        if q.format == "csv":
            name = endpoint.function.replace("_", "-")
            headers["Content-Disposition"] = f'attachment; filename="touchstream-{name}.csv"'
            return Response(api.to_csv(t), media_type="text/csv; charset=utf-8", headers=headers)
        return Response(api.to_json(api.document(t, q, as_of)), media_type="application/json", headers=headers)

    async def login_form(self, request: Request, message: str = "", status: int = 200) -> Response:
        target = request.query_params.get("next") or request.url.path
        if target.startswith("/login"):
            target = "/"
        html = self.env.get_template("login.html").render(message=message, next=target)
        return HTMLResponse(html, status)

    async def login(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        target = form.get("next", "/")
        if not target.startswith("/") or target.startswith("//"):
            target = "/"  # never off this site
        if not self.gate.check_password(form.get("password", "")):
            html = self.env.get_template("login.html").render(message="That password is not right.", next=target)
            return HTMLResponse(html, 401)
        response = RedirectResponse(target, 303)
        response.headers["Set-Cookie"] = self.gate.cookie_header(self.gate.issue())
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/login", 303)
        response.headers["Set-Cookie"] = self.gate.cookie_header("", max_age=0)
        return response


class Guard(BaseHTTPMiddleware):
    """The login (when one is required: 401 for the API, the login form with 401 for pages) and the
    security headers of every answer."""

    def __init__(self, app: Any, dashboard: Dashboard) -> None:
        super().__init__(app)
        self.dashboard = dashboard

    async def dispatch(self, request: Request, call_next: Any) -> Response:
        path = request.url.path
        if (self.dashboard.gate.required and not path.startswith(OPEN_PATHS)
                and not self.dashboard.logged_in(request)):
            if path.startswith(api.PREFIX):
                response: Response = JSONResponse({"error": "login required"}, 401)
            else:
                response = await self.dashboard.login_form(request, "Log in to see the dashboard.", 401)
        else:
            response = await call_next(request)
        response.headers.update(HEADERS)
        return response


def create_app(settings: DashboardSettings, pool: Any = None) -> Starlette:
    """The app; it opens its own pool at start unless given one (tests)."""
    d = Dashboard(settings, pool)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        own = d.pool is None
        if own:
            d.pool = await db.create_pool(settings)
        try:
            yield
        finally:
            if own:
                await d.pool.close()

    def page_route(p: Page) -> Route:
        async def handle(request: Request) -> Response:
            return await d.page(request, p)
        return Route(f"/{p.name}", handle, methods=["GET"])

    def api_route(e: api.Endpoint) -> Route:
        async def handle(request: Request) -> Response:
            return await d.endpoint(request, e)
        return Route(e.url, handle, methods=["GET"])

    doc = openapi.document()

    async def home(request: Request) -> Response:
        return RedirectResponse("/overview", 307)

    async def spec(request: Request) -> Response:
        return JSONResponse(doc)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    routes = [
        Route("/", home, methods=["GET"]),
        *[page_route(p) for p in PAGES.values()],
        *[api_route(e) for e in api.ENDPOINTS],
        Route(f"{api.PREFIX}/openapi.json", spec, methods=["GET"]),
        Route("/login", d.login_form, methods=["GET"]),
        Route("/login", d.login, methods=["POST"]),
        Route("/logout", d.logout, methods=["POST"]),
        Route("/healthz", health, methods=["GET"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    # gzip: a 90-day stacked chart is ~170 kB of SVG, ~21 kB compressed (bench/chart_bench.py)
    middleware = [Middleware(GZipMiddleware, minimum_size=2048), Middleware(Guard, dashboard=d)]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
