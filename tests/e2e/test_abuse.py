"""The abuse suite (issue 17): what an anonymous client can do to the public edge, each attack
with a measured, bounded effect, through real processes on the shared stack.

Two pipelines, each on a fresh topic prefix: `full` (edge, sessionizer, sink, own schema; the
edge trusts 127.0.0.1 as a proxy, so X-Forwarded-For names a test's own client) and `edge`
(an edge alone, its hits left on Kafka: the attacks on the edge's memory need no database).

    far timestamps      500 hits dated decades back over HTTP, 500 such records straight onto
                        `events`: refused / dead-lettered, the day partitions unchanged
    client-keyed memos  100,000 distinct long URLs, referrers and query strings: the edge's RSS
    NUL characters      1,000 in a 5,000-hit batch: refused with the field; the sink's time to
                        land the batch against a clean one
    slowloris           200 slow connections while 4 clients post: their p99, the edge's RSS,
                        how long a slow connection is held
    dead-letter flood   100 malformed 1 MiB bodies from one client: the bytes kept; retention
                        deleting old rows in batches

Each test prints its figures (`pytest -s` shows them) before it asserts the bound, so the same
file run against an older edge (PYTHONPATH) gives the "before" figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas.timefmt import UTC, iso
from sink.settings import SinkSettings
from sink.testing import pageview
from tests.e2e.isolated_pipeline import Env, isolated_pipeline
from tests.e2e.slowloris import normal_clients
from tests.polling import wait_for

pytestmark = pytest.mark.e2e

PARTITIONS = 4
SITE = "www.oakridge-apts.com"
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0"
MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]  # where `python -m tests.e2e.slowloris` runs


def memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (the peak) of a process, in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0]) / 1024
    return out


def good_hit(**extra: Any) -> dict[str, Any]:
    return {"hit_id": str(uuid.uuid4()), "guid": str(uuid.uuid4()), "url": f"https://{SITE}/floorplans",
            "title": "Floor plans", **extra}


@pytest.fixture(scope="module")
def full(services, tmp_path_factory):
    env = {"TOUCHSTREAM_INGEST_TRUSTED_PROXIES": "127.0.0.1/32",
           "TOUCHSTREAM_SINK_MAINTENANCE_INTERVAL_S": "5",  # (retention's pace when nothing is waiting)
           "TOUCHSTREAM_SINK_SESSION_TIMEOUT_MS": "120000"}  # (a sink paused for a while keeps its partitions)
    with isolated_pipeline(services, tmp_path_factory.mktemp("abuse-full"), letter="a", partitions=PARTITIONS,
                           env=env) as pipeline_env:
        yield pipeline_env


@pytest.fixture(scope="module")
def edge(services, tmp_path_factory):
    with isolated_pipeline(services, tmp_path_factory.mktemp("abuse-edge"), letter="a", partitions=PARTITIONS,
                           full=False) as pipeline_env:
        yield pipeline_env


async def partition_count(conn: asyncpg.Connection) -> int:
    return await conn.fetchval(
        "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent "
        "JOIN pg_namespace n ON n.oid = p.relnamespace "
        "WHERE n.nspname = current_schema() AND p.relname IN ('pageviews', 'events')")


# Day partitions a sink keeps ready with the default settings (days behind .. ahead, two tables).
_SINK = SinkSettings.model_fields
READY_PARTITIONS = 2 * (_SINK["sink_partitions_behind_days"].default + _SINK["sink_partitions_ahead_days"].default + 1)


async def events_on_kafka(env: Env) -> int:
    """Records on the `events` topic (one per hit the sessionizer placed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=env.bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(env.topics.events, p) for p in range(PARTITIONS)]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


async def post(client: httpx.AsyncClient, body: Any, client_ip: str, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return await client.post("/v1/hits", content=content, headers={
        "content-type": "application/json", "user-agent": UA, "x-forwarded-for": client_ip, **headers})


async def landed(conn: asyncpg.Connection, hit_ids: list[str]) -> Counter[str]:
    """Rows per table for `hit_ids` (pageviews, events, deadletter)."""
    found: Counter[str] = Counter()
    for table in ("pageviews", "events"):
        found[table] = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE hit_id = ANY($1::uuid[])", hit_ids)
    found["deadletter"] = await conn.fetchval("SELECT count(DISTINCT hit_id) FROM deadletter WHERE hit_id = ANY($1)",
                                              hit_ids)
    return found


# --- 1. timestamps far from now ---------------------------------------------------------------


@pytest.mark.timeout(300)
async def test_hits_dated_far_from_now_leave_the_day_partitions_unchanged(full: Env) -> None:
    rng = random.Random(17)
    conn = await full.connect()
    try:
        # The sink makes its window of days ready at start, one table after the other: wait for all of it.
        await wait_for(lambda: _at_least(partition_count(conn), READY_PARTITIONS), 60, "the sink's day partitions",
                       alive=full.pipeline.check_alive)
        before = await partition_count(conn)
        # Over HTTP: created_at in 2000 and sent_at in 2199 put a hit in 1827; others any day back to 2000.
        hits = []
        for n in range(500):
            created = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(days=rng.randrange(9_000))
            sent = datetime(2199, 1, 1, tzinfo=UTC) if n % 2 else None
            hits.append(good_hit(created_at=iso(created), **({"sent_at": iso(sent)} if sent else {})))
        async with httpx.AsyncClient(base_url=full.pipeline.edge_url, timeout=30) as client:
            response = await post(client, hits, "198.51.100.10")
        # Straight onto `events`, as a faulty or hostile producer would: one record per day back to 1900.
        direct = [pageview(occurred_at=datetime(1900, 1, 1, tzinfo=UTC) + timedelta(days=37 * n)) for n in range(500)]
        producer = AIOKafkaProducer(bootstrap_servers=full.bootstrap, acks="all")
        await producer.start()
        try:
            for record in direct:
                await producer.send(full.topics.events, record.model_dump_json().encode(), key=record.guid.encode())
            await producer.flush()
        finally:
            await producer.stop()
        ids = [h["hit_id"] for h in hits] + [r.hit_id for r in direct]

        async def all_accounted() -> Counter[str] | None:  # (as rows or as dead letters: asserted below)
            found = await landed(conn, ids)
            return found if sum(found.values()) >= len(ids) else None

        found = await wait_for(all_accounted, 120, "1,000 hits in PostgreSQL", every=1.0,
                               alive=full.pipeline.check_alive)
        after = await partition_count(conn)
        reasons = Counter(r["reason"] for r in await conn.fetch(
            "SELECT reason FROM deadletter WHERE hit_id = ANY($1)", ids))
    finally:
        await conn.close()
    fields = Counter(e["field"] for r in response.json()["rejected"] for e in r["errors"])
    print(f"\nfar timestamps: 500 hits over HTTP -> {response.status_code}, refused by field {dict(fields)}; "
          f"500 records straight onto events -> dead letters {dict(reasons)}; rows written "
          f"{found['pageviews'] + found['events']}; day partitions {before} -> {after} (unbounded: up to +1,000)")
    assert response.status_code == 400 and fields == {"created_at": 500}
    assert found["pageviews"] == found["events"] == 0 and found["deadletter"] == 1_000
    assert after == before


# --- 2. memos keyed by client input -----------------------------------------------------------


@pytest.mark.timeout(600)
async def test_distinct_long_urls_referrers_and_queries_grow_the_edge_by_less_than_100_mb(edge: Env) -> None:
    proc = edge.pipeline.components["ingest"].process
    assert proc is not None
    total, per_request = 100_000, 200
    guids = [str(uuid.uuid4()) for _ in range(1_000)]

    def hit(n: int) -> dict[str, Any]:
        tag = f"{n:06d}{uuid.uuid4().hex}"
        return {"guid": guids[n % len(guids)], "hit_id": str(uuid.uuid4()),
                "url": f"https://{SITE}/{tag}/{'p' * 1200}?utm_source={tag}&utm_campaign={'c' * 600}&q={tag}",
                "referrer": f"https://{tag}.example.org/{'r' * 1000}?q={tag}"}

    limits = httpx.Limits(max_connections=4)
    async with httpx.AsyncClient(base_url=edge.pipeline.edge_url, timeout=60, limits=limits) as client:
        warm = await post(client, [hit(-n) for n in range(1, 201)], "198.51.100.20")  # import, Kafka, first memos
        assert warm.status_code == 202, warm.text
        before = memory(proc.pid)
        started = time.monotonic()
        statuses: Counter[int] = Counter()
        sent = 0

        async def sender(first: int) -> None:
            nonlocal sent
            for start in range(first, total, per_request * 4):
                response = await post(client, [hit(n) for n in range(start, min(start + per_request, total))],
                                      "198.51.100.20")
                statuses[response.status_code] += 1
                sent += per_request

        await asyncio.gather(*(sender(k * per_request) for k in range(4)))
        took = time.monotonic() - started
    after = memory(proc.pid)
    edge.pipeline.check_alive()
    grown = after["VmHWM"] - before["VmRSS"]
    print(f"\nclient-keyed memos: {total:,} hits with distinct ~2 KB URLs, ~1 KB referrers and query strings in "
          f"{took:.0f}s {dict(statuses)}; edge RSS {before['VmRSS']:.0f} -> {after['VmRSS']:.0f} MiB, "
          f"peak {after['VmHWM']:.0f} MiB: grew {grown:.0f} MiB (bound 100)")
    assert statuses == {202: total // per_request}
    assert grown < 100


# --- 3. characters PostgreSQL refuses ---------------------------------------------------------


NUL_FIELDS = (
    lambda h: {**h, "title": "Floor\x00plans"},
    lambda h: {**h, "utm": {"source": "goo\x00gle"}},
    lambda h: {**h, "site": SITE + "\x00"},
    lambda h: {**h, "type": "event", "event": {"name": "le\x00ad"}},
    lambda h: {**h, "type": "event", "event": {"name": "lead", "properties": {"unit": "2B\x00"}}},
)


async def _land_with_the_sink_paused(env: Env, hits: list[dict[str, Any]], client_ip: str) -> dict[str, Any]:
    """Post `hits` (500 a request) while the sink is paused (SIGSTOP: it stays in its consumer
    group, whose session timeout the fixture raised), wait until the sessionizer placed the
    accepted ones, then resume it and time it until every hit is in PostgreSQL (its row, or its
    dead letter): the sink's time for the batch, without its start-up."""
    sink = env.pipeline.components["sink-0"].process
    assert sink is not None
    on_kafka = await events_on_kafka(env)
    os.kill(sink.pid, signal.SIGSTOP)
    try:
        accepted, rejected = await _post_all(env, hits, client_ip)

        def others_alive() -> None:
            for name in ("ingest", "sessionizer-0"):
                assert env.pipeline.components[name].running, env.pipeline.components[name].log_tail()

        await wait_for(lambda: _at_least(events_on_kafka(env), on_kafka + accepted), 120, "the sessionizer's records",
                       alive=others_alive)
    finally:
        os.kill(sink.pid, signal.SIGCONT)
        started = time.monotonic()
    ids = [h["hit_id"] for h in hits]
    conn = await env.connect()
    try:
        async def all_there() -> Counter[str] | None:
            found = await landed(conn, ids)
            return found if sum(found.values()) >= len(ids) else None

        found = await wait_for(all_there, 300, "the batch to land", every=0.05, alive=env.pipeline.check_alive)
        took = time.monotonic() - started
    finally:
        await conn.close()
    return {"accepted": accepted, "rejected": rejected, "found": found, "seconds": took}


async def _post_all(env: Env, hits: list[dict[str, Any]], client_ip: str) -> tuple[int, int]:
    """Post `hits` 500 a request; (accepted, rejected)."""
    accepted, rejected = 0, 0
    async with httpx.AsyncClient(base_url=env.pipeline.edge_url, timeout=60) as client:
        for start in range(0, len(hits), 500):
            response = await post(client, hits[start:start + 500], client_ip)
            assert response.status_code == 202, response.text
            accepted += response.json()["accepted"]
            rejected += len(response.json()["rejected"])
    return accepted, rejected


async def _at_least(count: Awaitable[int], want: int) -> bool:
    return await count >= want


@pytest.mark.timeout(900)
async def test_nul_characters_are_refused_at_the_edge_and_the_sink_keeps_its_pace(full: Env) -> None:
    """Three rounds each of a clean 5,000-hit batch and one with 1,000 NUL characters, alternating
    (the machine is shared: medians of paired runs), each landed by a sink resumed on it."""
    rounds: dict[str, list[dict[str, Any]]] = {"clean": [], "dirty": []}
    reasons: Counter[str] = Counter()
    for n in range(3):
        clean = [good_hit() for _ in range(5_000)]
        dirty = [good_hit() for _ in range(5_000)]
        for i in range(0, 5_000, 5):  # every fifth hit: 1,000, across five fields
            dirty[i] = NUL_FIELDS[(i // 5) % len(NUL_FIELDS)](dirty[i])
        rounds["clean"].append(await _land_with_the_sink_paused(full, clean, f"198.51.100.{30 + n}"))
        rounds["dirty"].append(await _land_with_the_sink_paused(full, dirty, f"198.51.100.{40 + n}"))
        conn = await full.connect()
        try:
            reasons.update(r["reason"] for r in await conn.fetch(
                "SELECT reason FROM deadletter WHERE hit_id = ANY($1)", [h["hit_id"] for h in dirty]))
        finally:
            await conn.close()
    clean_s = statistics.median(r["seconds"] for r in rounds["clean"])
    dirty_s = statistics.median(r["seconds"] for r in rounds["dirty"])
    last = rounds["dirty"][-1]
    print(f"\nNUL: a sink resumed on 5,000 clean hits landed them in {clean_s:.2f}s ({5000 / clean_s:.0f} hits/s); "
          f"on 5,000 with 1,000 NUL ({last['accepted']} accepted, {last['rejected']} refused by the edge) in "
          f"{dirty_s:.2f}s ({5000 / dirty_s:.0f} hits/s): {dirty_s / clean_s:.2f}x (bound 2x; medians of 3 "
          f"alternating rounds: clean {[round(r['seconds'], 2) for r in rounds['clean']]}, NUL "
          f"{[round(r['seconds'], 2) for r in rounds['dirty']]}); landed {dict(last['found'])}; dead-letter "
          f"reasons {dict(reasons)}")
    assert all(r["accepted"] == 5_000 for r in rounds["clean"])
    for r in rounds["dirty"]:
        assert (r["accepted"], r["rejected"]) == (4_000, 1_000)
        assert r["found"]["pageviews"] + r["found"]["events"] == 4_000 and r["found"]["deadletter"] == 1_000
    assert set(reasons) == {"invalid hit"}
    assert dirty_s / clean_s < 2


# --- 4. slow clients --------------------------------------------------------------------------


async def _normal_clients(host: str, port: int, seconds: float) -> list[float]:
    """4 keep-alive clients posting single hits in a loop (`tests.e2e.slowloris.normal_clients`:
    plain HTTP/1.1, so that the measuring client's own CPU stays out of the figures); each
    request's latency."""
    return await normal_clients(host, port, seconds, good_hit)


async def _sample_rss(pid: int, samples: list[float]) -> None:
    while True:
        samples.append(memory(pid)["VmRSS"])
        await asyncio.sleep(0.2)


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


@pytest.mark.timeout(300)
async def test_slow_clients_neither_slow_others_nor_hold_the_edge(edge: Env) -> None:
    proc = edge.pipeline.components["ingest"].process
    assert proc is not None
    host, port = "127.0.0.1", edge.pipeline.ingest_port
    quiet = await _normal_clients(host, port, 5)  # the same clients without the attack: before and after it
    before = memory(proc.pid)
    slow = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.e2e.slowloris", host, str(port), "200", cwd=ROOT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert slow.stdin is not None and slow.stdout is not None
    rss: list[float] = []
    sampler = asyncio.create_task(_sample_rss(proc.pid, rss))  # (VmHWM may hold an earlier test's peak)
    try:
        assert await asyncio.wait_for(slow.stdout.readline(), 30) == b"ready\n"
        loaded = await _normal_clients(host, port, 25)  # longer than the read deadline (10 s): slow ones cycle
        slow.stdin.close()
        report = orjson.loads(await asyncio.wait_for(slow.stdout.readline(), 30))
    finally:
        sampler.cancel()
        if slow.returncode is None:
            slow.kill()
        await slow.wait()
    held, answers = report["held"], Counter(report["answers"])
    after = memory(proc.pid)
    after["VmHWM"] = max(rss, default=after["VmRSS"])  # the peak during the attack
    quiet += await _normal_clients(host, port, 5)
    edge.pipeline.check_alive()
    grown = after["VmHWM"] - before["VmRSS"]
    print(f"\nslowloris: 4 clients alone p50 {statistics.median(quiet) * 1000:.1f} ms, p99 {p99(quiet) * 1000:.1f} ms "
          f"({len(quiet)} requests); with 200 slow connections p50 {statistics.median(loaded) * 1000:.1f} ms, "
          f"p99 {p99(loaded) * 1000:.1f} ms ({len(loaded)} requests, bound 100 ms); "
          f"slow connections held {min(held, default=0):.1f}-{max(held, default=0):.1f}s ({len(held)} closed by the edge: {dict(answers)}); "
          f"edge RSS {before['VmRSS']:.0f} -> {after['VmRSS']:.0f} MiB, peak {after['VmHWM']:.0f} MiB: "
          f"grew {grown:.0f} MiB")
    # The bound. (With httpx as the measuring client its own CPU on the shared 2-core
    # machine made most of the latency and the bound was loosened; bench/slowloris_bench.py
    # measures both clients.) The p99 without the attack is printed above to read a failure by.
    assert p99(loaded) < 0.100, f"p99 {p99(loaded) * 1000:.1f} ms under the attack ({p99(quiet) * 1000:.1f} ms without)"
    assert len(held) >= 200 and max(held) < 10 + 2.5, "every slow connection is closed at the read deadline"
    assert min(held) > 10 * 0.8 - 0.5, "no slow connection is closed before its deadline (spread down to 80 %)"
    assert answers["HTTP/1.1 408 Request Timeout"] >= 200
    assert grown < 64


# --- 5. dead-letter floods --------------------------------------------------------------------


@pytest.mark.timeout(300)
async def test_a_dead_letter_flood_keeps_a_bounded_number_of_bytes(full: Env) -> None:
    flooder, bystander = "198.51.100.40", "198.51.100.41"
    marker = uuid.uuid4().hex

    def body(n: int) -> bytes:  # not JSON: refused as a whole, dead-lettered with its bytes
        return f'{{"flood": "{marker}", "n": {n}, '.encode() + b"x" * (MiB - 100)

    minutes = set()
    statuses: Counter[int] = Counter()
    async with httpx.AsyncClient(base_url=full.pipeline.edge_url, timeout=60) as client:
        for n in range(100):
            minutes.add(int(time.time()) // 60)
            statuses[(await post(client, body(n), flooder)).status_code] += 1
        for n in range(100, 103):
            minutes.add(int(time.time()) // 60)
            statuses[(await post(client, body(n), bystander)).status_code] += 1
    conn = await full.connect()
    try:
        async def rows() -> list[asyncpg.Record] | None:
            found = await conn.fetch(
                "SELECT reason, octet_length(payload) AS kept, substring(payload FROM 1 FOR 64) AS head, "
                "date_trunc('minute', refused_at) AS minute FROM deadletter WHERE source = 'ingest' "
                "AND reason LIKE 'not valid JSON%' AND refused_at > now() - interval '10 minutes' "
                "AND (payload = '' OR position($1::bytea IN substring(payload FROM 1 FOR 64)) > 0)",
                marker.encode())
            return found if len(found) >= 103 else None

        found = await wait_for(rows, 120, "103 dead letters", every=1.0, alive=full.pipeline.check_alive)
    finally:
        await conn.close()
    kept = {int(r["head"].split(b'"n": ')[1].split(b",")[0]): r for r in found if r["kept"]}  # by body number
    dropped = [r for r in found if not r["kept"]]
    per_minute: Counter[datetime] = Counter()
    for n, r in kept.items():
        if n < 100:
            per_minute[r["minute"]] += r["kept"]
    print(f"\ndead-letter flood: 100 malformed 1 MiB bodies from one client, 3 from another -> {dict(statuses)}; "
          f"{len(found)} dead letters, {len(kept)} with their bytes ({sum(r['kept'] for r in kept.values()) / MiB:.2f} "
          f"MiB kept; the flooder's per minute {[round(b / MiB, 2) for b in per_minute.values()]} MiB, bound 1), "
          f"{len(dropped)} without (unbounded: 103 x 64 KiB = {103 * 64 / 1024:.1f} MiB); minutes spanned "
          f"{len(minutes)}")
    assert statuses == {400: 103}
    assert len(found) == 103, "every refusal is still dead-lettered with its reason"
    assert max(per_minute.values()) <= MiB, "the flooder's kept bytes per minute are bounded"
    assert {100, 101, 102} <= set(kept), "another client's dead letters keep their bytes"
    assert len(dropped) >= 100 - len(minutes) * MiB // (64 * 1024)
    assert all("not kept" in r["reason"] for r in dropped)


@pytest.mark.timeout(300)
async def test_retention_deletes_old_dead_letters_and_late_hits_in_small_batches(full: Env) -> None:
    """Rows written 60 days ago (inserted here as the superuser) are deleted by the running sink
    (default retention 30 days, 2,000 rows a statement); today's rows stay."""
    old = datetime.now(UTC) - timedelta(days=60)
    conn = await full.connect()
    try:
        await conn.executemany(
            "INSERT INTO deadletter (consumed_topic, consumed_partition, consumed_offset, consumed_timestamp, source, "
            "reason, refused_at, payload) VALUES ('old.deadletter', 0, $1, $2, 'ingest', 'invalid hit', $2, $3)",
            [(n, old, b"x" * 1024) for n in range(20_000)])
        await conn.executemany(
            "INSERT INTO late_hits (hit_id, guid, occurred_at, received_at, reason, hit) "
            "VALUES ($1, $2, $3, $3, 'too_late', '{}')",
            [(str(uuid.uuid4()), str(uuid.uuid4()), old) for _ in range(20_000)])
        young = await conn.fetchval("SELECT count(*) FROM deadletter WHERE refused_at > now() - interval '1 day'")
        started = time.monotonic()

        async def gone() -> bool:
            left = await conn.fetchval("SELECT (SELECT count(*) FROM deadletter WHERE refused_at < now() - "
                                       "interval '30 days') + (SELECT count(*) FROM late_hits WHERE received_at < "
                                       "now() - interval '30 days')")
            return left == 0

        with contextlib.suppress(AssertionError):  # (a sink without retention: the figure, then the assertion)
            await wait_for(gone, 60, "the old rows to be deleted", every=0.5, alive=full.pipeline.check_alive)
        took = time.monotonic() - started
        left = await conn.fetchval("SELECT (SELECT count(*) FROM deadletter WHERE refused_at < now() - "
                                   "interval '30 days') + (SELECT count(*) FROM late_hits WHERE received_at < "
                                   "now() - interval '30 days')")
        still = await conn.fetchval("SELECT count(*) FROM deadletter WHERE refused_at > now() - interval '1 day'")
    finally:
        await conn.close()
    print(f"\nretention: 20,000 dead letters and 20,000 late hits 60 days old: {40_000 - left:,} deleted by the "
          f"running sink in {took:.1f}s (statements of 2,000 rows between batches), {left:,} left; {still} recent "
          f"dead letters kept")
    assert left == 0
    assert still >= young
