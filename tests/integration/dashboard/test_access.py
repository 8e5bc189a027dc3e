"""What the dashboard refuses: bad parameters (400 naming each, on the API and on the pages, never
a 500), requests without the login when one is required (401), and any write through its
read-only analyst connection. Plus: the OpenAPI document describes exactly the app's endpoints."""

from __future__ import annotations

import urllib.parse
import uuid

import asyncpg
import httpx
import pytest

from dashboard import api
from dashboard.app import create_app
from dashboard.auth import COOKIE, hash_password
from dashboard.openapi import document
from dashboard.settings import DashboardSettings
from tests.dashboard_data import dashboard_settings

BAD = [  # (path, query, the parameter the 400 must name)
    ("/api/v1/attribution", "period=custom&from=2026-03-10&to=2026-03-01", "from"),
    ("/api/v1/overview/summary", "from=2026-02-30&to=2026-03-01", "from"),
    ("/api/v1/overview/summary", "period=custom&from=2026-03-01", "to"),
    ("/api/v1/overview/summary", "from=2020-01-01&to=2026-01-01", "to"),
    ("/api/v1/attribution", "model=data_driven", "model"),
    ("/api/v1/attribution", "group_by=referrer", "group_by"),
    ("/api/v1/attribution", "lookback=45", "lookback"),
    ("/api/v1/conversions/daily", "events=lead,signup", "events"),
    ("/api/v1/sessions", "page_size=1000000", "page_size"),
    ("/api/v1/sessions", "page=9999&page_size=500", "page"),
    ("/api/v1/sessions", "campaign=x%27%3B%20DROP%20TABLE%20sessions%3B--", "campaign"),
    ("/api/v1/sessions", "source=1%20OR%201%3D1", "source"),
    ("/api/v1/sessions", "channel=Direct%27--", "channel"),
    ("/api/v1/overview/top", "site=%27%20OR%20%27%27%3D%27", "site"),
    ("/api/v1/sessions", "source=%00", "source"),
    ("/api/v1/journey/sessions", "guid=not-a-uuid", "guid"),
    ("/api/v1/journey/credits", "guid=123e4567-e89b-12d3-a456-42661417400Z", "guid"),
    ("/api/v1/journey/sessions", "", "guid"),
    ("/api/v1/overview/timeseries", "metric=revenue", "metric"),
    ("/api/v1/overview/summary", "format=xml", "format"),
    ("/api/v1/overview/summary", "sort=sessions", "sort"),
]
PAGE_OF = {"/api/v1/attribution": "/attribution", "/api/v1/overview/summary": "/overview",
           "/api/v1/overview/timeseries": "/overview", "/api/v1/overview/top": "/overview",
           "/api/v1/conversions/daily": "/conversions", "/api/v1/sessions": "/sessions",
           "/api/v1/journey/sessions": "/journey", "/api/v1/journey/credits": "/journey"}


@pytest.mark.parametrize("path,query,parameter", BAD)
async def test_bad_input_is_a_400_naming_the_parameter(client, path, query, parameter):
    response = await client.get(f"{path}?{query}")
    assert response.status_code == 400, response.text
    body = response.json()
    assert parameter in [e["parameter"] for e in body["errors"]], body
    assert all(e["message"] for e in body["errors"])
    if parameter in ("sort",) or (path.endswith("sessions") and "guid" in parameter and not query):
        return  # not a control of the page (or a page that opens without it)
    page = await client.get(f"{PAGE_OF[path]}?{query}")
    assert page.status_code == 400
    assert f'data-parameter="{parameter}"' in page.text and 'role="alert"' in page.text


async def test_the_analyst_connection_cannot_write(pool):
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT current_user") == "touchstream_analyst"
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await conn.execute("DELETE FROM sessions")
        async with conn.transaction(readonly=False):  # even a read-write transaction: the role cannot
            await conn.execute("SET TRANSACTION READ WRITE")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("INSERT INTO conversion_events (name) VALUES ('signup')")
        with pytest.raises(asyncpg.PostgresError):
            await conn.execute("SELECT rollup_rebuild()")
        assert await conn.fetchval("SELECT count(*) FROM sessions") > 0  # it does read


async def test_a_login_role_with_only_the_analyst_grant_reads_and_cannot_write(filled, db):
    """The deployment the README describes: the dashboard's own DSN, a login holding the analyst role."""
    login = f"dash_{filled.schema}"
    password = uuid.uuid4().hex  # (the stack asks every login for its password)
    await db.execute(f"CREATE ROLE \"{login}\" LOGIN PASSWORD '{password}' IN ROLE touchstream_analyst")
    try:
        parts = urllib.parse.urlsplit(filled.dsn)
        dsn = urllib.parse.urlunsplit(parts._replace(netloc=f"{login}:{password}@{parts.hostname}:{parts.port}"))
        settings = dashboard_settings(filled, dashboard_pg_dsn=dsn, dashboard_set_role=False)
        from dashboard.db import create_pool

        p = await create_pool(settings)
        try:
            async with p.acquire() as conn:
                assert await conn.fetchval("SELECT count(*) FROM rollup_sessions_daily") > 0
                await conn.execute("SET default_transaction_read_only = off")
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute("UPDATE sessions SET pageviews = 0")
        finally:
            await p.close()
    finally:
        await db.execute(f'DROP ROLE "{login}"')


async def test_a_login_is_required_off_loopback(filled, pool):
    settings = dashboard_settings(filled, dashboard_host="0.0.0.0", dashboard_password_hash=hash_password("s3cret"))
    app = create_app(settings, pool=pool)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dash") as c:
        for path in ("/api/v1/overview/summary", "/api/v1/openapi.json", "/api/v1/sessions?format=csv"):
            response = await c.get(path)
            assert response.status_code == 401 and response.json() == {"error": "login required"}
        page = await c.get("/attribution")
        assert page.status_code == 401 and 'name="password"' in page.text
        wrong = await c.post("/login", data={"password": "guess", "next": "/attribution"})
        assert wrong.status_code == 401 and COOKIE not in wrong.headers.get("set-cookie", "")
        right = await c.post("/login", data={"password": "s3cret", "next": "/attribution"})
        assert right.status_code == 303 and right.headers["location"] == "/attribution"
        cookie = right.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert (await c.get("/api/v1/overview/summary")).status_code == 200
        c.cookies.set(COOKIE, c.cookies[COOKIE][:-2] + "xx")  # a forged signature
        assert (await c.get("/api/v1/overview/summary")).status_code == 401


def test_binding_off_loopback_without_a_password_is_refused():
    with pytest.raises(ValueError, match="not loopback"):
        DashboardSettings(dashboard_host="0.0.0.0")
    assert not DashboardSettings().login_required
    assert DashboardSettings(dashboard_password="x").login_required


async def test_the_openapi_document_is_the_code(client):
    served = (await client.get("/api/v1/openapi.json")).json()
    assert served == document()
    api_routes = {r.path for r in client._transport.app.routes if getattr(r, "path", "").startswith(api.PREFIX)}
    assert set(served["paths"]) == api_routes
    for endpoint in api.ENDPOINTS:
        op = served["paths"][endpoint.url]["get"]
        names = {p["name"] for p in op["parameters"]}
        assert names == {f.alias or n for n, f in endpoint.query.model_fields.items()}
        row_schema = served["components"]["schemas"][endpoint.row.__name__]
        assert set(row_schema["properties"]) == set(endpoint.row.model_fields)
