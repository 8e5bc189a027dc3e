"""The edge as a raw ASGI app: a handful of fixed routes in a table, no framework.

Why raw ASGI: under uvicorn a framework's routing and request objects cost about as much as the
edge's own work on a single-hit request (the README's measured section has the figures;
`bench/ingest_bench.py` measures the edge against a bare app). The public listener has five
fixed routes:

    POST    /v1/hits        hits (ingest.body -> ingest.intake -> ingest.fastpath; ingest.publisher)
    OPTIONS /v1/hits        CORS preflight
    GET     /v1/tracker.js  the tracker (ingest.tracker)
    GET     /healthz        liveness
    GET     /readyz         Kafka reachable (cached metadata check); no reason given
    GET     /openapi.json   ingest.openapi

and the admin listener (`TOUCHSTREAM_INGEST_ADMIN_PORT`, loopback by default) three:

    GET     /healthz        liveness
    GET     /readyz         Kafka reachable, and when not, why (its address, the error)
    GET     /metrics        Prometheus

The edge is public and unauthenticated: what it tells anyone is only what a client needs. Kafka's
addresses, exception text and the metrics are for operators, on a port the internet does not
reach; a 503's body names no cause. One app serves both listeners and tells them apart by the
local port a request arrived on (`scope["server"]`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import orjson

from ingest import fastpath
from ingest.body import BodyReader
from ingest.client_ip import ClientIp, forwarded_for
from ingest.connection import STATE_KEY, ConnectionLimits
from ingest.datacentre import data_centres
from ingest.deadletter_budget import DeadLetterBudget
from ingest.errors import FieldError, OriginNotAllowed, PublishUnavailable
from ingest.intake import Edge, Intake, Outcome, Record, Refusal
from ingest.metrics import CONTENT_TYPE as METRICS_TYPE
from ingest.metrics import Metrics
from ingest.openapi import document
from ingest.publisher import KafkaPublisher, Publisher
from ingest.settings import IngestSettings
from ingest.tracker import TrackerFile
from schemas.internals import require
from schemas.topics import Topics

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = (b"content-type", b"application/json")
# A 503's body on the public port: the same for every cause (SPEC section 2).
UNAVAILABLE = orjson.dumps({"accepted": 0, "rejected": [
    {"index": None, "errors": [{"field": "kafka", "message": "the pipeline cannot take hits now; retry later"}]}]})
NO_HEADERS: Headers = []  # shared, never appended to


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Cors:
    """The CORS headers of the edge's answers, built once from the allowed origins (SPEC
    section 2: any origin by default, never with credentials)."""

    def __init__(self, origins: Sequence[str]) -> None:
        expose = (b"access-control-expose-headers", b"retry-after")
        self.any_origin = "*" in origins
        self._any: Headers = [(b"access-control-allow-origin", b"*"), expose]
        self._listed: dict[bytes, Headers] = {
            o.encode(): [(b"access-control-allow-origin", o.encode()), expose, (b"vary", b"origin")]
            for o in origins
            if o != "*"
        }

    def headers(self, origin: bytes | None) -> Headers | None:
        """Headers for an answer to `origin` (shared: never append to them); None when that origin
        may not post here."""
        if origin is None:
            return NO_HEADERS  # not a browser (servers, curl): no CORS
        if self.any_origin:
            return self._any
        return self._listed.get(origin.rstrip(b"/"))


class Route(NamedTuple):
    """A path's handlers by method, and the Allow header of a 405."""

    handlers: dict[str, Handler]

    @property
    def allow(self) -> bytes:
        return ", ".join(self.handlers).encode()


class IngestApp:
    """ASGI app of the edge. Settings, publisher, clock and metrics are injected."""

    def __init__(
        self,
        settings: IngestSettings,
        publisher: Publisher,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = utc_now,
        topics: Topics | None = None,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.topics = topics or Topics(settings.topic_prefix)
        self.intake = Intake(
            allowed_sites=frozenset(settings.ingest_allowed_sites),
            max_hit_age=timedelta(days=settings.ingest_max_hit_age_days),
            deadletter_payload_bytes=settings.ingest_deadletter_payload_bytes,
            deadletter_budget=DeadLetterBudget(settings.ingest_deadletter_bytes_per_minute),
        )
        self.connection_limits = ConnectionLimits(settings.ingest_read_timeout_s, settings.ingest_max_header_bytes,
                                                  settings.ingest_read_timeout_spread)
        self.body = BodyReader(
            self.intake, max_body=settings.ingest_max_body_bytes, max_items=settings.ingest_max_items
        )
        self.client_ip = ClientIp(
            settings.ingest_trusted_proxies, settings.ingest_ip_mode, settings.ingest_ip_hash_salt.get_secret_value(),
            datacentres=data_centres(settings.ingest_datacenter_ranges, settings.ingest_datacenter_file),
            rotate_hours=settings.ingest_ip_hash_rotate_hours,
        )
        self.peer_client = self.client_ip.peer_client  # a socket peer's stored form and data-centre flag (remembered)
        self.cors = Cors(settings.ingest_cors_origins)
        self.tracker = TrackerFile(settings.ingest_tracker_file, settings.ingest_tracker_max_age_s)
        self.openapi = orjson.dumps(document(settings))
        self.timeout = settings.ingest_publish_timeout_s
        self.retry_after = str(settings.ingest_retry_after_s).encode()
        self.hits_topic = self.topics.hits
        self.deadletter_topic = self.topics.deadletter
        self.started = False
        self._sync_task: asyncio.Task[None] | None = None
        # The answer to a request whose every hit was accepted, by count: no need to encode it.
        self._all_accepted = [b'{"accepted":%d,"rejected":[]}' % n for n in range(settings.ingest_max_items + 1)]
        self.admin_port = settings.ingest_admin_port or -1  # -1: no request arrives there
        self.routes, self.admin_routes = self._routes()

    def _routes(self) -> tuple[dict[str, Route], dict[str, Route]]:
        """Path -> handlers by method, of the public and the admin listener (the module docstring
        lists them)."""

        def get(handler: Handler) -> Route:
            return Route({"GET": handler, "HEAD": handler})

        public = {
            "/v1/hits": Route({"POST": self.post_hits, "OPTIONS": self.preflight}),
            "/v1/tracker.js": get(self.get_tracker),
            "/healthz": get(self.get_health),
            "/readyz": get(self.get_ready),
            "/openapi.json": get(self.get_openapi),
        }
        admin = {"/healthz": get(self.get_health), "/readyz": get(self.get_ready_why), "/metrics": get(self.get_metrics)}
        return public, admin

    # --- lifecycle ----------------------------------------------------------------------

    async def startup(self) -> None:
        if self.started:
            return
        if not fastpath.self_check(self.clock()):
            log.warning("serving with the pydantic path only (slower)")
        await self.publisher.start()
        if self.metrics.multiprocess:  # other workers serve /metrics too: keep this one's values fresh
            self._sync_task = asyncio.get_running_loop().create_task(self._sync_metrics(), name="ingest-metrics-sync")
        self.started = True

    async def shutdown(self) -> None:
        if self.started:
            self.started = False
            if self._sync_task is not None:
                self._sync_task.cancel()
            await self.publisher.stop()
            self.metrics.sync()

    async def _sync_metrics(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.metrics.sync()

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        # uvicorn hands the lifespan state to each connection: the edge's protocol reads its
        # limits there (ingest.connection).
        if "state" in scope:
            scope["state"][STATE_KEY] = self.connection_limits
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("edge start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return

    # --- routing ------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(scope, receive, send)
            return
        path: str = scope["path"]
        server = scope.get("server")
        routes = self.admin_routes if server is not None and server[1] == self.admin_port else self.routes
        route = routes.get(path)
        try:
            if route is None:
                await respond(send, 404, {"error": f"no route {path}"})
                return
            handler = route.handlers.get(scope["method"])
            if handler is None:
                await respond(send, 405, {"error": "method not allowed"}, [(b"allow", route.allow)])
                return
            await handler(scope, receive, send)
        except Exception:  # a bug must cost one request, with a log line, never the worker
            log.exception("unhandled error; answered 500", extra={"method": scope["method"], "path": path})
            with contextlib.suppress(Exception):  # (the response may have started already)
                await respond(send, 500, {"error": "internal error"})

    # --- POST /v1/hits ------------------------------------------------------------------

    async def post_hits(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the request (its headers here, its body down through `ingest.body`, the intake and
        the fast path), then answer its outcome. Kept to dict lookups and few calls: a single-hit
        request spends about as much here as in validating its hit."""
        raw_headers = scope["headers"]
        headers = dict(raw_headers)  # in C; the repeatable X-Forwarded-For is read from the list
        get = headers.get
        client = scope.get("client")
        peer = client[0] if client else None
        client = peer
        received_at = self.clock()
        if self.client_ip.rotates:
            self.client_ip.rotate(received_at)  # the key of received_at's day hashes this request's address
        if b"x-forwarded-for" in headers and self.client_ip.trusts_proxies:
            address = self.client_ip.resolve(peer, forwarded_for([v for k, v in raw_headers if k == b"x-forwarded-for"]))
            ip, datacenter = self.client_ip.stored(address), self.client_ip.in_datacentre(address)
            client = None if address is None else str(address)
        else:
            ip, datacenter = self.peer_client(peer)
        user_agent = get(b"user-agent")
        edge = Edge(received_at, ip, user_agent.decode("utf-8", "replace") if user_agent else "", client, datacenter)
        origin = get(b"origin")
        cors = NO_HEADERS if origin is None else self.cors.headers(origin)
        if cors is None:
            why = FieldError("origin", f"{origin.decode('latin-1')!r} may not post hits here")  # type: ignore[union-attr]
            outcome: Outcome | Refusal = self.intake.refuse(OriginNotAllowed("origin not allowed", [why]), b"", edge)
        else:
            outcome = await self.body.take(headers, receive, edge)
        if type(outcome) is Outcome:
            await self.answer(outcome, cors, send)
        else:
            await self.answer_refusal(outcome, cors or NO_HEADERS, send)  # type: ignore[arg-type]

    async def answer(self, out: Outcome, cors: Headers, send: Send) -> None:
        """202 once Kafka acknowledged every accepted hit (503 when it did not), 400 when nothing
        was valid. The outcome holds no body or items: a request waiting for Kafka keeps only
        what it publishes (a slow broker would multiply them by every request in flight)."""
        metrics = self.metrics
        metrics.request_hits.observe(out.items)
        if out.refused:
            for reason, count in out.refused.items():
                metrics.hit_refusal[reason].inc(count)
            if out.payloads_dropped:
                metrics.dead_letter_payloads_dropped.inc(out.payloads_dropped)
        if out.accepted:
            dead_letters = len(out.dead_letters)
            started = time.perf_counter()
            try:
                await self.publisher.publish(out.take_records(self.hits_topic, self.deadletter_topic), self.timeout)
            except PublishUnavailable as exc:
                await self.unavailable(send, exc, out.accepted, cors)
                return
            metrics.publish_seconds.observe(time.perf_counter() - started)
            metrics.hits_accepted.inc(out.accepted)
            if dead_letters:
                metrics.dead_letters.inc(dead_letters)
        elif out.dead_letters:
            await self.publish_dead_letters(out.dead_letters)
        status = out.status
        metrics.count_status(status)
        payload = self._all_accepted[out.accepted] if not out.rejected else orjson.dumps(out.body())
        await send({"type": "http.response.start", "status": status,
                    "headers": [JSON, (b"content-length", b"%d" % len(payload)), *cors]})
        await send({"type": "http.response.body", "body": payload})

    async def answer_refusal(self, refusal: Refusal, cors: Headers, send: Send) -> None:
        """The whole request refused: its status, and its dead letter when it has one."""
        error = refusal.error
        self.metrics.request_refusal[error.refusal].inc()
        self.metrics.count_status(error.status)
        if refusal.payloads_dropped:
            self.metrics.dead_letter_payloads_dropped.inc(refusal.payloads_dropped)
        if refusal.dead_letters:
            await self.publish_dead_letters(refusal.dead_letters)
        await respond_bytes(send, error.status, orjson.dumps(refusal.body()), [JSON, *cors])

    async def publish_dead_letters(self, letters: list[Record]) -> None:
        """For a request answered 4xx: the answer does not depend on it, so failure is only counted."""
        try:
            await self.publisher.publish([(self.deadletter_topic, letters)], self.timeout)
        except PublishUnavailable as exc:
            self.metrics.dead_letter_failures.inc(len(letters))
            log.warning("dead letters not written", extra={"dead_letters": len(letters), "reason": exc.reason})
        else:
            self.metrics.dead_letters.inc(len(letters))

    async def unavailable(self, send: Send, exc: PublishUnavailable, hits: int, cors: Headers) -> None:
        self.metrics.request_refusal["unavailable"].inc()
        self.metrics.hit_refusal["unavailable"].inc(hits)
        self.metrics.count_status(503)
        # exc.reason may name Kafka's addresses or an exception: the admin /readyz tells it.
        log.debug("answered 503", extra={"reason": exc.reason, "hits": hits})
        await respond_bytes(send, 503, UNAVAILABLE, [JSON, (b"retry-after", self.retry_after), *cors])

    async def preflight(self, scope: Scope, receive: Receive, send: Send) -> None:
        """OPTIONS /v1/hits: the CORS preflight."""
        origin = requested = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
            elif name == b"access-control-request-headers":
                requested = value
        allow = (b"allow", b"POST, OPTIONS")
        if origin is None:
            await respond_bytes(send, 204, b"", [allow])
            return
        cors = self.cors.headers(origin)
        if cors is None:
            await respond(send, 403, {"error": "origin not allowed"}, [(b"vary", b"origin")])
            return
        headers = [
            allow,
            *cors,
            (b"access-control-allow-methods", b"POST, OPTIONS"),
            (b"access-control-allow-headers", requested or b"content-type"),
            (b"access-control-max-age", b"86400"),
        ]
        await respond_bytes(send, 204, b"", headers)

    # --- the rest (GET and HEAD) --------------------------------------------------------

    async def get_tracker(self, scope: Scope, receive: Receive, send: Send) -> None:
        if_none_match = next((v for k, v in scope["headers"] if k == b"if-none-match"), None)
        reply = self.tracker.get(if_none_match)
        headers = [*reply.headers, (b"access-control-allow-origin", b"*")]
        await respond_bytes(send, reply.status, reply.body, headers, head=_head(scope))

    async def get_health(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, {"status": "ok"}, head=_head(scope))

    async def get_ready(self, scope: Scope, receive: Receive, send: Send, *, why: bool = False) -> None:
        if await self.publisher.ready():
            await respond(send, 200, {"status": "ready"}, head=_head(scope))
            return
        body = {"status": "unavailable"}
        if why:
            body["reason"] = getattr(self.publisher, "last_error", "") or "Kafka is not reachable"
        await respond(send, 503, body, [(b"retry-after", self.retry_after)], head=_head(scope))

    async def get_ready_why(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The admin listener's /readyz: with the reason when not ready."""
        await self.get_ready(scope, receive, send, why=True)

    async def get_metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", METRICS_TYPE.encode())]
        await respond_bytes(send, 200, self.metrics.render(), headers, head=_head(scope))

    async def get_openapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond_bytes(send, 200, self.openapi, [JSON], head=_head(scope))


def _head(scope: Scope) -> bool:
    return scope["method"] == "HEAD"


async def respond(send: Send, status: int, body: Any, headers: Headers | None = None, *, head: bool = False) -> None:
    await respond_bytes(send, status, orjson.dumps(body), [JSON, *(headers or [])], head=head)


async def respond_bytes(send: Send, status: int, body: bytes, headers: Headers, *, head: bool = False) -> None:
    if status != 204 and status != 304:  # those two never carry a body, nor its length
        headers = [*headers, (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


def create_app(
    settings: IngestSettings,
    publisher: Publisher | None = None,
    *,
    metrics: Metrics | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> IngestApp:
    """The edge. Without a publisher, a KafkaPublisher for `settings` (started by the lifespan)."""
    require("prometheus-client")  # the edge's metrics add to prometheus-client's histograms directly
    metrics = metrics or Metrics()
    topics = Topics(settings.topic_prefix)
    if publisher is None:
        publisher = KafkaPublisher(settings, [topics.hits, topics.deadletter], metrics=metrics)
    return IngestApp(settings, publisher, metrics=metrics, clock=clock, topics=topics)
