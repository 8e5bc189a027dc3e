"""The edge as a raw ASGI app: a handful of fixed routes, no framework.

Why raw ASGI: measured under uvicorn (uvloop, httptools, 1 worker, wrk -c64) on this
machine, a bare ASGI "hello" served 12,800 req/s, the same with a Starlette route 6,900 and
with FastAPI 3,500. The edge has six fixed routes; a framework would cost half the budget.

    POST    /v1/hits        hits (ingest.body, ingest.intake, ingest.publisher)
    OPTIONS /v1/hits        CORS preflight
    GET     /v1/tracker.js  the tracker (ingest.tracker)
    GET     /healthz        liveness
    GET     /readyz         Kafka reachable (cached metadata check)
    GET     /metrics        Prometheus
    GET     /openapi.json   ingest.openapi
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime, timezone
from typing import Any

import orjson

from ingest import fastpath
from ingest.body import Format, check_content_length, media_format, parse, read_body, too_large
from ingest.client_ip import ClientIp, forwarded_for
from ingest.errors import BodyRefused, FieldError, OriginNotAllowed, PublishUnavailable
from ingest.intake import Edge, Intake, Record, refusal_body
from ingest.metrics import CONTENT_TYPE as METRICS_TYPE
from ingest.metrics import Metrics
from ingest.openapi import document
from ingest.publisher import KafkaPublisher, Publisher
from ingest.settings import IngestSettings
from ingest.tracker import TrackerFile
from schemas.topics import Topics

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON = (b"content-type", b"application/json")
NO_HEADERS: Headers = []  # shared, never appended to
GET_METHODS = frozenset({"GET", "HEAD"})


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


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
            deadletter_payload_bytes=settings.ingest_deadletter_payload_bytes,
        )
        self.client_ip = ClientIp(
            settings.ingest_trusted_proxies, settings.ingest_ip_mode, settings.ingest_ip_hash_salt.get_secret_value()
        )
        self.peer_ip = self.client_ip.peer  # the stored form of a socket peer (remembered)
        self.tracker = TrackerFile(settings.ingest_tracker_file, settings.ingest_tracker_max_age_s)
        self.openapi = orjson.dumps(document(settings))
        origins = settings.ingest_cors_origins
        self.any_origin = "*" in origins
        self.origins = frozenset(o.encode() for o in origins if o != "*")
        self.max_body = settings.ingest_max_body_bytes
        self.max_items = settings.ingest_max_items
        self.timeout = settings.ingest_publish_timeout_s
        self.retry_after = str(settings.ingest_retry_after_s).encode()
        self.hits_topic = self.topics.hits
        self.deadletter_topic = self.topics.deadletter
        self.started = False
        self._sync_task: asyncio.Task[None] | None = None
        self._formats: dict[tuple[bytes | None, bytes | None], Format] = {}
        # The answer to a request whose every hit was accepted, by count: no need to encode it.
        self._all_accepted = [b'{"accepted":%d,"rejected":[]}' % n for n in range(settings.ingest_max_items + 1)]

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

    async def _lifespan(self, receive: Receive, send: Send) -> None:
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
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            if path == "/v1/hits":
                if method == "POST":
                    await self.post_hits(scope, receive, send)
                elif method == "OPTIONS":
                    await self.preflight(scope, send)
                else:
                    await self.not_allowed(send, b"POST, OPTIONS")
            elif path == "/v1/tracker.js":
                if method in GET_METHODS:
                    await self.get_tracker(scope, send, head=method == "HEAD")
                else:
                    await self.not_allowed(send, b"GET, HEAD")
            elif path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
                if method in GET_METHODS:
                    await self.get_info(path, send, head=method == "HEAD")
                else:
                    await self.not_allowed(send, b"GET, HEAD")
            else:
                await respond(send, 404, {"error": f"no route {path}"})
        except Exception:  # a bug must cost one request, with a log line, never the worker
            log.exception("unhandled error; answered 500", extra={"method": method, "path": path})
            with contextlib.suppress(Exception):  # (the response may have started already)
                await respond(send, 500, {"error": "internal error"})

    # --- POST /v1/hits ------------------------------------------------------------------

    async def post_hits(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The hot path: written flat (few calls, cached lookups) because a single-hit request
        # spends as much here as in validating its hit.
        received_at = self.clock()
        raw_headers = scope["headers"]
        headers = dict(raw_headers)  # in C; the repeatable X-Forwarded-For is read from the list
        get = headers.get
        origin = get(b"origin")
        user_agent = get(b"user-agent")
        client = scope.get("client")
        peer = client[0] if client else None
        if b"x-forwarded-for" in headers and self.client_ip.trusts_proxies:
            ip = self.client_ip(peer, forwarded_for([v for k, v in raw_headers if k == b"x-forwarded-for"]))
        else:
            ip = self.peer_ip(peer)
        edge = Edge(received_at, ip, user_agent.decode("utf-8", "replace") if user_agent else "")
        cors = NO_HEADERS if origin is None else self.cors_headers(origin)
        body = b""
        try:
            if cors is None:
                raise OriginNotAllowed(
                    "origin not allowed",
                    [FieldError("origin", f"{origin.decode('latin-1')!r} may not post hits here")],  # type: ignore[union-attr]
                )
            key = (get(b"content-type"), get(b"content-encoding"))
            fmt = self._formats.get(key) or self.media_format(*key)
            content_length = get(b"content-length")
            if content_length is not None:
                check_content_length(content_length, self.max_body)
            message = await receive()
            if message.get("more_body", False) or message["type"] != "http.request":
                body = await read_body(_replay(message, receive), self.max_body)
            else:
                body = message.get("body", b"")
                if len(body) > self.max_body:
                    raise too_large(self.max_body)
            items = parse(body, fmt, self.max_items)
        except BodyRefused as exc:
            await self.refuse(send, exc, body, edge, cors or [])
            return

        out = self.intake.process(items, edge)
        metrics = self.metrics
        accepted = out.accepted
        metrics.request_hits.observe(len(items.values))
        # From here on the answer needs only counts and per-item errors. A request waiting for
        # Kafka must not also keep its body and parsed items alive (several times the size of
        # its records): a slow broker would multiply them by every request in flight.
        del items, body, message
        if out.refused:
            for reason, count in out.refused.items():
                metrics.hit_refusal[reason].inc(count)
        if accepted:
            dead_letters = len(out.dead_letters)
            started = time.perf_counter()
            try:
                await self.publisher.publish(out.take_records(self.hits_topic, self.deadletter_topic), self.timeout)
            except PublishUnavailable as exc:
                await self.unavailable(send, exc, accepted, cors)
                return
            metrics.publish_seconds.observe(time.perf_counter() - started)
            metrics.hits_accepted.inc(accepted)
            if dead_letters:
                metrics.dead_letters.inc(dead_letters)
            status = 202
        else:
            if out.dead_letters:
                await self.publish_dead_letters(out.dead_letters)
            status = 400
        metrics.count_status(status)
        payload = self._all_accepted[accepted] if not out.rejected else orjson.dumps(out.body())
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [JSON, (b"content-length", b"%d" % len(payload)), *cors],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def refuse(self, send: Send, exc: BodyRefused, body: bytes, edge: Edge, cors: Headers) -> None:
        self.metrics.request_refusal[exc.refusal].inc()
        self.metrics.count_status(exc.status)
        letters = self.intake.refuse_body(exc, body, edge)
        if letters:
            await self.publish_dead_letters(letters)
        await respond_bytes(send, exc.status, orjson.dumps(refusal_body(exc)), [JSON, *cors])

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
        body = {"accepted": 0, "rejected": [{"index": None, "errors": [{"field": "kafka", "message": exc.reason}]}]}
        await respond_bytes(send, 503, orjson.dumps(body), [JSON, (b"retry-after", self.retry_after), *cors])

    def media_format(self, content_type: bytes | None, content_encoding: bytes | None) -> Format:
        """`body.media_format`, remembered: clients send a handful of distinct headers."""
        key = (content_type, content_encoding)
        fmt = self._formats.get(key)
        if fmt is None:
            fmt = media_format(content_type, content_encoding)  # raises for what is refused
            if len(self._formats) < 256:
                self._formats[key] = fmt
        return fmt

    # --- CORS ---------------------------------------------------------------------------

    def cors_headers(self, origin: bytes | None) -> Headers | None:
        """Headers for a response to `origin`; None when that origin may not post here."""
        if origin is None:
            return []
        if self.any_origin:
            return [(b"access-control-allow-origin", b"*"), (b"access-control-expose-headers", b"retry-after")]
        if origin.rstrip(b"/") in self.origins:
            return [
                (b"access-control-allow-origin", origin),
                (b"access-control-expose-headers", b"retry-after"),
                (b"vary", b"origin"),
            ]
        return None

    async def preflight(self, scope: Scope, send: Send) -> None:
        origin = requested = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
            elif name == b"access-control-request-headers":
                requested = value
        allow = [(b"allow", b"POST, OPTIONS")]
        if origin is None:
            await respond_bytes(send, 204, b"", allow)
            return
        cors = self.cors_headers(origin)
        if cors is None:
            await respond(send, 403, {"error": "origin not allowed"}, [(b"vary", b"origin")])
            return
        headers = [
            *allow,
            *cors,
            (b"access-control-allow-methods", b"POST, OPTIONS"),
            (b"access-control-allow-headers", requested or b"content-type"),
            (b"access-control-max-age", b"86400"),
        ]
        await respond_bytes(send, 204, b"", headers)

    # --- the rest -----------------------------------------------------------------------

    async def get_tracker(self, scope: Scope, send: Send, *, head: bool) -> None:
        if_none_match = next((v for k, v in scope["headers"] if k == b"if-none-match"), None)
        reply = self.tracker.get(if_none_match)
        headers = [*reply.headers, (b"access-control-allow-origin", b"*")]
        await respond_bytes(send, reply.status, reply.body, headers, head=head)

    async def get_info(self, path: str, send: Send, *, head: bool) -> None:
        if path == "/healthz":
            await respond(send, 200, {"status": "ok"}, head=head)
        elif path == "/readyz":
            if await self.publisher.ready():
                await respond(send, 200, {"status": "ready"}, head=head)
            else:
                reason = getattr(self.publisher, "last_error", "") or "Kafka is not reachable"
                await respond(
                    send,
                    503,
                    {"status": "unavailable", "reason": reason},
                    [(b"retry-after", self.retry_after)],
                    head=head,
                )
        elif path == "/metrics":
            await respond_bytes(send, 200, self.metrics.render(), [(b"content-type", METRICS_TYPE.encode())], head=head)
        else:
            await respond_bytes(send, 200, self.openapi, [JSON], head=head)

    async def not_allowed(self, send: Send, allow: bytes) -> None:
        await respond(send, 405, {"error": "method not allowed"}, [(b"allow", allow)])


async def respond(send: Send, status: int, body: Any, headers: Headers | None = None, *, head: bool = False) -> None:
    await respond_bytes(send, status, orjson.dumps(body), [JSON, *(headers or [])], head=head)


async def respond_bytes(send: Send, status: int, body: bytes, headers: Headers, *, head: bool = False) -> None:
    if status != 204 and status != 304:  # those two never carry a body, nor its length
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


def _replay(first: MutableMapping[str, Any], receive: Receive) -> Receive:
    """`receive`, with a message already taken from it put back in front."""
    pending = [first]

    async def replay() -> MutableMapping[str, Any]:
        return pending.pop() if pending else await receive()

    return replay


def create_app(
    settings: IngestSettings,
    publisher: Publisher | None = None,
    *,
    metrics: Metrics | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> IngestApp:
    """The edge. Without a publisher, a KafkaPublisher for `settings` (started by the lifespan)."""
    metrics = metrics or Metrics()
    topics = Topics(settings.topic_prefix)
    if publisher is None:
        publisher = KafkaPublisher(settings, [topics.hits, topics.deadletter], metrics=metrics)
    return IngestApp(settings, publisher, metrics=metrics, clock=clock, topics=topics)
