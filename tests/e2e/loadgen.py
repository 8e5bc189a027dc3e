"""The load generator and the exact accounting of the fault suites (SPEC section 6), shared by
`test_faults.py` (one broker, faults of every component) and `test_broker_loss.py` (a 3-broker
cluster that loses one): realistic hits posted over HTTP with fresh hit_ids, only hits a 202
accepted counted as accepted, and every one of them looked for exactly once across
pageviews ∪ events ∪ late_hits ∪ deadletter."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg
import httpx

from touchstream import traffic
from touchstream.pipeline import Pipeline

RATE = 150.0  # hits/s offered by the load generator
SENDERS = 4  # concurrent HTTP senders
SPAN = timedelta(hours=4)  # created_at of the hits: spread over the last SPAN before the run
LATE_BY = timedelta(minutes=20)  # a tenth of the hits are posted up to this much (hit time) late
LAND_TIMEOUT = 90.0  # longest wait for accepted hits to land after a fault
TABLES = ("pageviews", "events", "late_hits", "deadletter")

# --- the load generator -------------------------------------------------------------------


@dataclass
class Request:
    ua: str
    hits: list[dict]
    accepted_at: float | None = None


@dataclass
class Load:
    """Posts `hits` in order at `rate` hits/s (batches of 1–50, one request per user agent of a
    batch), `senders` requests at a time. A request refused with a 503 or a transport error is
    retried with the same hit_ids until it gets a 202 (bounded per request). Only items a 202
    accepted count as accepted."""

    edge_url: str
    hits: list[dict]
    rate: float = RATE
    senders: int = SENDERS
    seed: int = 11
    accepted: Counter[str] = field(default_factory=Counter)  # hit_id -> 202s that accepted it
    sent: set[str] = field(default_factory=set)  # every hit_id ever posted
    statuses: Counter[str] = field(default_factory=Counter)
    answers: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, status) of every attempt
    done_requests: list[Request] = field(default_factory=list)
    given_up: int = 0
    last_refusal: str = ""
    last_accept: float = 0.0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _queue: asyncio.Queue | None = None
    _client: httpx.AsyncClient | None = None
    position: int = 0

    def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.senders * 4)
        self._client = httpx.AsyncClient(base_url=self.edge_url, timeout=httpx.Timeout(20.0),
                                         limits=httpx.Limits(max_connections=self.senders + 2))
        self._tasks = [asyncio.create_task(self._produce(), name="load-producer")]
        self._tasks += [asyncio.create_task(self._send_loop(), name=f"load-sender-{i}") for i in range(self.senders)]

    async def _produce(self) -> None:
        assert self._queue is not None
        rng = random.Random(self.seed)
        started = time.monotonic()
        offered = 0
        while not self._stop.is_set() and self.position < len(self.hits):
            size = rng.randint(1, 50)
            batch = self.hits[self.position:self.position + size]
            self.position += len(batch)
            groups: dict[str, list[dict]] = {}
            for hit in batch:
                hit = dict(hit)
                groups.setdefault(hit.pop("_ua"), []).append(hit)
            for ua, items in groups.items():
                await self._queue.put(Request(ua, items))  # blocks while the edge is refusing: back-pressure
            offered += len(batch)
            ahead = started + offered / self.rate - time.monotonic()
            if ahead > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), ahead)

    async def post(self, request: Request, *, retry_for: float = 240.0) -> bool:
        """Post until a 202 (True) or `retry_for` seconds of refusals (False)."""
        assert self._client is not None
        deadline = time.monotonic() + retry_for
        body = request.hits
        self.sent.update(h["hit_id"] for h in body)
        while True:
            try:
                response = await self._client.post("/v1/hits", json=body, headers={"user-agent": request.ua})
                status = str(response.status_code)
            except httpx.HTTPError as exc:
                response, status = None, type(exc).__name__
            self.statuses[status] += 1
            self.answers.append((time.monotonic(), status))
            if response is not None and response.status_code == 202:
                rejected = {r["index"] for r in response.json()["rejected"]}
                for i, hit in enumerate(body):
                    if i not in rejected:
                        self.accepted[hit["hit_id"]] += 1
                request.accepted_at = time.monotonic()
                self.last_accept = request.accepted_at
                self.done_requests.append(request)
                return True
            self.last_refusal = f"{status} {response.text[:300] if response is not None else ''}"
            if response is not None and response.status_code not in (503, 500, 502, 504):
                raise AssertionError(f"the edge refused a valid batch: {response.status_code} {response.text[:500]}")
            if time.monotonic() > deadline:
                self.given_up += 1
                return False
            await asyncio.sleep(random.uniform(0.3, 1.0))

    async def _send_loop(self) -> None:
        assert self._queue is not None
        while True:
            request = await self._queue.get()
            try:
                await self.post(request)
            finally:
                self._queue.task_done()

    async def stop(self) -> None:
        """Stop offering new hits; wait (bounded) for the requests already queued to finish."""
        self._stop.set()
        producer = self._tasks[0]
        await asyncio.wait_for(producer, 30)
        assert self._queue is not None
        await asyncio.wait_for(self._queue.join(), 90)
        for task in self._tasks[1:]:
            task.cancel()
        for task in self._tasks[1:]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert self._client is not None
        await self._client.aclose()

    def abandon(self) -> None:
        """Stop at once, leaving queued requests unsent (a run that failed)."""
        if not self._stop.is_set():
            self._stop.set()
            for task in self._tasks:
                task.cancel()

    def check(self) -> None:
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    def longest_refusal(self, since: float = 0.0) -> float:
        """The longest time (s) from a refused or failed attempt to the next 202, after `since`."""
        longest, refused_at = 0.0, None
        for at, status in sorted(a for a in self.answers if a[0] >= since):
            if status != "202":
                refused_at = at if refused_at is None else refused_at
            elif refused_at is not None:
                longest, refused_at = max(longest, at - refused_at), None
        return longest

    async def progressing(self, hits: int = 300, timeout: float = 60.0) -> float:
        """Wait until `hits` more hits were accepted; returns the seconds it took."""
        start, target = time.monotonic(), sum(self.accepted.values()) + hits
        while sum(self.accepted.values()) < target:
            self.check()
            if time.monotonic() - start > timeout:
                raise AssertionError(f"the load made no progress for {timeout:.0f}s: statuses {dict(self.statuses)}, "
                                     f"last refusal: {self.last_refusal}")
            await asyncio.sleep(0.2)
        return time.monotonic() - start


def make_hits(run: str, count: int, now: datetime) -> list[dict]:
    """About `count` realistic hits with fresh ids, created over the SPAN before `now`, posted in
    time order but for late ones (rule 6):

    - a tenth of them are posted up to LATE_BY (of hit time) after their time, as retries, tabs
      and beacons do: they extend sessions backwards or land inside them;
    - a fifth of the devices come back 45 minutes after their first hit (two more pageviews: a
      second session), and a hit of theirs from 22 minutes after it, posted after the second
      visit began, bridges the two: their sessions merge, the second one is retracted.
    """
    start = now - SPAN - timedelta(minutes=5)
    shape = traffic.TrafficShape(devices=max(50, count // 5), span=SPAN, crawler_pageviews=120)
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"touchstream-faults/{run}")
    rng = random.Random(7)
    keyed: list[tuple[datetime, int, dict]] = []
    seen: set[str] = set()

    def add(at: datetime, posted: datetime, hit: dict) -> None:
        keyed.append((posted, len(keyed), dict(hit, hit_id=str(uuid.uuid4()),
                                               created_at=at.isoformat().replace("+00:00", "Z"))))

    for hit in traffic.generate(start, shape, seed=2024):
        created = datetime.fromisoformat(hit["created_at"].replace("Z", "+00:00"))
        if created > start + SPAN:
            continue
        hit = dict(hit, guid=str(uuid.uuid5(namespace, hit["guid"])))
        add(created, created + (LATE_BY * rng.random() if rng.random() < 0.1 else timedelta(0)), hit)
        if hit["guid"] in seen or hit.get("type") == "event" or "Googlebot" in hit.get("_ua", ""):
            continue
        seen.add(hit["guid"])
        if rng.random() < 0.2:
            page = {k: v for k, v in hit.items() if k not in ("utm", "referrer")}
            add(created + timedelta(minutes=45), created + timedelta(minutes=45), page)
            add(created + timedelta(minutes=46), created + timedelta(minutes=46), page)
            add(created + timedelta(minutes=22), created + timedelta(minutes=47), page)
    return [hit for _, _, hit in sorted(keyed, key=lambda k: k[:2])]


# --- accounting ---------------------------------------------------------------------------


async def landed(conn: asyncpg.Connection) -> dict[str, Counter[str]]:
    """hit_id -> rows, per table (deadletter: rows whose hit_id is known)."""
    out: dict[str, Counter[str]] = {}
    for table in TABLES:
        try:
            rows = await conn.fetch(f"SELECT lower(hit_id::text) AS h FROM {table} WHERE hit_id IS NOT NULL")
        except asyncpg.UndefinedTableError:  # the sink has not run its migrations yet
            rows = []
        out[table] = Counter(r["h"] for r in rows)
    return out


@dataclass
class Accounting:
    expected: int
    per_table: dict[str, int]
    missing: list[str]
    duplicates: dict[str, dict[str, int]]
    where: str = ""  # `locate`'s answer for the missing ones, when asked

    def __str__(self) -> str:
        tables = ", ".join(f"{t}={n}" for t, n in self.per_table.items())
        text = (f"accepted {self.expected}: {tables}; found {sum(self.per_table.values())}, "
                f"missing {len(self.missing)}, duplicated {len(self.duplicates)}")
        if self.missing:
            text += f"\n  missing (first 20): {self.missing[:20]}"
        if self.where:
            text += f"\n  where they are:\n{self.where}"
        if self.duplicates:
            text += f"\n  duplicated (first 20): {dict(list(self.duplicates.items())[:20])}"
        return text


def account(expected: set[str], found: dict[str, Counter[str]]) -> Accounting:
    per_table = {t: sum(1 for h in expected if h in found[t]) for t in TABLES}
    missing = sorted(h for h in expected if not any(h in found[t] for t in TABLES))
    duplicates = {}
    for h in expected:
        where = {t: found[t][h] for t in TABLES if found[t][h]}
        if sum(where.values()) > 1:
            duplicates[h] = where
    return Accounting(len(expected), per_table, missing, duplicates)


async def wait_landed(conn: asyncpg.Connection, expected: set[str], pipeline: Pipeline,
                      timeout: float = LAND_TIMEOUT, settle: float = 3.0) -> Accounting:
    """Until every expected hit is found (bounded), then `settle` seconds more for late duplicates."""
    deadline = time.monotonic() + timeout
    while True:
        pipeline.check_alive()
        result = account(expected, await landed(conn))
        if not result.missing or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    if not result.missing:
        await asyncio.sleep(settle)
        result = account(expected, await landed(conn))
    return result


# --- the shared run -----------------------------------------------------------------------


async def create_schema(dsn: str) -> str:
    schema = f"f_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    return schema


async def drop_schema(dsn: str, schema: str) -> None:
    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(dsn, timeout=30)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def connect(dsn: str, schema: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, timeout=30, server_settings={"search_path": schema})


async def dismantle(pipeline: Pipeline, load: Load | None, conn: asyncpg.Connection | None, bootstrap: str,
                    prefix: str, dsn: str, schema: str) -> None:
    """The end of a run, whatever state it is in: load, connection, processes, topics, schema."""
    from tests.conftest import delete_topics_with_prefix

    if load is not None:
        load.abandon()
    if conn is not None:
        with contextlib.suppress(Exception):
            await conn.close()
    await asyncio.to_thread(pipeline.stop)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(delete_topics_with_prefix(bootstrap, prefix), 30)
    await drop_schema(dsn, schema)


# --- where a missing hit went -------------------------------------------------------------


async def locate(bootstrap: str, prefix: str, hit_ids: list[str]) -> str:
    """Where each of `hit_ids` is in the run's topics (topic, partition, offset) beside the
    committed offsets of the sessionizer and sink groups: a failure then says which stage lost
    a hit — not in `events`/`deadletter` is the sessionizer's, there below the sink's committed
    offset is the sink's."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    from schemas.topics import Topics

    topics = Topics(prefix)
    wanted = {h.encode(): h for h in hit_ids}
    found: dict[str, list[str]] = {h: [] for h in hit_ids}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    lines = []
    try:
        for topic in (topics.hits, topics.events, topics.deadletter):
            [described] = await admin.describe_topics([topic])
            tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            remaining = {tp for tp in tps if ends[tp] > 0}
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=2000, max_records=10000)
                if not batch:
                    break
                for tp, records in batch.items():
                    for rec in records:
                        value = (rec.value or b"").lower()
                        for raw, h in wanted.items():
                            if raw in value:
                                found[h].append(f"{topic.removeprefix(prefix)}[{tp.partition}]@{rec.offset}")
                        if rec.offset + 1 >= ends[tp]:
                            remaining.discard(tp)
        for h, where in found.items():
            lines.append(f"  {h}: {', '.join(where) or 'in no topic'}")
        for group in (f"{prefix}sessionizer", f"{prefix}sink"):
            offsets = await admin.list_consumer_group_offsets(group)
            shown = {f"{tp.topic.removeprefix(prefix)}[{tp.partition}]": meta.offset
                     for tp, meta in sorted(offsets.items()) if not tp.topic.endswith("-changelog")}
            lines.append(f"  committed by {group}: {shown}")
    finally:
        await consumer.stop()
        await admin.close()
    return "\n".join(lines)
