"""Sessionizer workers as a consumer group, crashes, recovery and replay, on the real broker.

One reference run (a single worker, all hits published up front) gives the sessions and event
records every other run must reproduce:

- two workers in one group, the second started mid-stream, then one killed with SIGKILL;
- one worker killed with SIGKILL and restarted on an *empty* data directory, so its table can
  only come back from the changelog topic (which this project writes without Faust's
  `Table.__setitem__`: this proves Faust's recovery reads it);
- a replay of the same `hits` from the start into fresh state (new app id, new data dir).

Compared: the latest snapshot of every session (all fields but `version`, which counts
publishes and may differ when sessions were closed at other moments), and for every hit_id
its record on `events` — none missing, and duplicates only byte-identical.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from sessionizer_helpers import Worker, end_offsets, latest_sessions, produce, read_all, wait_for, without

from bench.hitgen import Shape, generate
from schemas.topics import Topics, create_topics, delete_topics

START = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)
SHAPE = Shape(hits=24_000, devices=2_400, seed=23)


@dataclass
class Run:
    sessions: dict[str, dict[str, Any]]    # session_id -> latest snapshot
    events: dict[str, bytes]               # hit_id -> the record on `events` (raw)


def _hits() -> list[tuple[bytes, bytes]]:
    return generate(SHAPE, START)


HIT_IDS = {orjson.loads(v)["hit_id"] for _, v in _hits()}


async def _collect(bootstrap: str, topics: Topics, sessions_from: dict[int, int] | None = None,
                   events_from: dict[int, int] | None = None) -> Run:
    # Events first: a session an event names was written in the same round, so it is there by
    # the time `sessions` is read (and `done` below checks it is).
    by_hit: dict[str, set[bytes]] = defaultdict(set)
    for r in await read_all(bootstrap, topics.events, events_from):
        rec = orjson.loads(r.value)
        assert r.key.decode() == rec["guid"], "events are keyed by guid"
        by_hit[rec["hit_id"]].add(r.value)
    sessions = await latest_sessions(bootstrap, topics, sessions_from)
    differing = {h: v for h, v in by_hit.items() if len(v) > 1}
    assert not differing, f"{len(differing)} hits have differing records on events"
    return Run(sessions, {h: next(iter(v)) for h, v in by_hit.items()})


async def _until_done(bootstrap: str, topics: Topics, workers: list[Worker], timeout: float = 120.0,
                      sessions_from: dict[int, int] | None = None, events_from: dict[int, int] | None = None) -> Run:
    """Until every hit has its record on `events` and every session is closed."""
    result: list[Run] = []

    async def done() -> bool:
        for w in workers:
            assert w.alive(), f"worker {w.name} died:\n{w.log_tail()}"
        run = await _collect(bootstrap, topics, sessions_from, events_from)
        if set(run.events) != HIT_IDS:
            return False
        # Every session an event names must have been read: the two topics are read one after
        # the other while the worker may still be writing the last round.
        named = {orjson.loads(raw).get("session_id") for raw in run.events.values()} - {None}  # (late hits: none)
        if not named <= set(run.sessions):
            return False
        if not run.sessions or any(s["status"] != "closed" for s in run.sessions.values()):
            return False
        result[:] = [run]
        return True

    await wait_for(done, timeout, "every hit on events and every session closed", every=1.0)
    return result[0]


def _same_as(run: Run, reference: Run) -> None:
    assert set(run.events) == HIT_IDS
    missing = set(reference.sessions) - set(run.sessions)
    extra = set(run.sessions) - set(reference.sessions)
    assert not missing and not extra, (
        f"same session ids: {len(missing)} of the reference's {len(reference.sessions)} missing, e.g. "
        f"{[reference.sessions[s] for s in sorted(missing)[:2]]}; {len(extra)} extra, e.g. "
        f"{[run.sessions[s] for s in sorted(extra)[:2]]}"
    )
    for sid, snap in reference.sessions.items():
        assert without(run.sessions[sid], "version") == without(snap, "version"), sid
    for hit_id, raw in reference.events.items():
        assert orjson.loads(run.events[hit_id]) == orjson.loads(raw), hit_id


@pytest_asyncio.fixture(scope="module")
async def reference(services: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One worker, all hits published before it starts, run to the end."""
    prefix = f"r{uuid.uuid4().hex[:8]}."
    topics = Topics(prefix)
    await create_topics(services.kafka_bootstrap, prefix, 8)
    workdir = tmp_path_factory.mktemp("reference")
    await produce(services.kafka_bootstrap, topics.hits, _hits())
    worker = Worker("ref", services.kafka_bootstrap, prefix, f"{prefix}sessionizer", workdir).start()
    try:
        run = await _until_done(services.kafka_bootstrap, topics, [worker])
    finally:
        worker.stop()
    assert len(run.sessions) > SHAPE.devices  # devices come back for second visits
    yield prefix, run, workdir
    try:
        names = [n for n in [*topics.all(), f"{prefix}sessionizer-devices-changelog",
                             f"{prefix}replay-devices-changelog"]]
        await asyncio.wait_for(delete_topics(services.kafka_bootstrap, names), 30)
    except Exception:
        pass


async def test_two_workers_mid_stream_then_kill9_equal_one_worker(
    services: Any, topic_prefix: str, tmp_path: Path, reference: Any
) -> None:
    _, ref, _ = reference
    bootstrap = services.kafka_bootstrap
    topics = Topics(topic_prefix)
    hits = _hits()
    third = len(hits) // 3
    app_id = f"{topic_prefix}sessionizer"

    a = Worker("a", bootstrap, topic_prefix, app_id, tmp_path).start()
    b = Worker("b", bootstrap, topic_prefix, app_id, tmp_path)
    try:
        await produce(bootstrap, topics.hits, hits[:third])
        await a.wait_partitions(8)
        await wait_for(lambda: _processed(a, 1000), 60, "worker a to process hits")

        b.start()  # mid-stream: joins the group while hits keep coming
        await wait_for(lambda: _split(a, b), 90, "the partitions to be shared by a and b")
        await produce(bootstrap, topics.hits, hits[third:2 * third])
        await wait_for(lambda: _processed(b, 1), 60, "worker b to process hits")
        await wait_for(lambda: _processed(a, third + 1), 60, "worker a to process hits of the second third")

        b.kill9()  # mid-work, no goodbye: a takes over b's partitions from the changelog
        await produce(bootstrap, topics.hits, hits[2 * third:])
        await a.wait_partitions(8, timeout=120)
        run = await _until_done(bootstrap, topics, [a], timeout=180)
    finally:
        a.stop()
        if b.alive():
            b.kill9()
    _same_as(run, ref)


async def _processed(worker: Worker, n: int) -> bool:
    assert worker.alive(), worker.log_tail()
    return worker.stats().get("records_in", 0) >= n


async def _split(a: Worker, b: Worker) -> bool:
    pa, pb = a.stats().get("partitions", []), b.stats().get("partitions", [])
    return bool(pa) and bool(pb) and sorted(pa + pb) == list(range(8))


async def test_kill9_and_restart_on_empty_data_dir_recovers_from_changelog(
    services: Any, topic_prefix: str, tmp_path: Path, reference: Any
) -> None:
    _, ref, _ = reference
    bootstrap = services.kafka_bootstrap
    topics = Topics(topic_prefix)
    hits = _hits()
    half = len(hits) // 2
    app_id = f"{topic_prefix}sessionizer"
    env = {"TOUCHSTREAM_SESSIONIZER_STANDBY_REPLICAS": "0"}

    first = Worker("first", bootstrap, topic_prefix, app_id, tmp_path, **env).start()
    try:
        await first.wait_partitions(8)
        await produce(bootstrap, topics.hits, hits[:half])
        await wait_for(lambda: _processed(first, half), 90, "the first half to be processed")
        await asyncio.sleep(2.5)  # past a commit (interval 1 s): the restart resumes, not restarts
        first.kill9()
    finally:
        if first.alive():
            first.kill9()
    shutil.rmtree(first.data_dir)  # nothing local survives: the table can only come from Kafka

    second = Worker("second", bootstrap, topic_prefix, app_id, tmp_path, **env)
    second.data_dir = first.data_dir
    second.env["TOUCHSTREAM_SESSIONIZER_DATA_DIR"] = str(first.data_dir)
    second.start()
    try:
        await second.wait_partitions(8, timeout=120)
        await produce(bootstrap, topics.hits, hits[half:])
        run = await _until_done(bootstrap, topics, [second], timeout=180)
        resumed = second.stats()["records_in"]
    finally:
        second.stop()
    # It resumed from committed offsets (did not read everything again) ...
    assert resumed < len(hits) - half // 2
    # ... and with the devices' state of the first half, or sessions would have split differently.
    _same_as(run, ref)


async def test_replay_from_the_start_into_fresh_state_gives_the_same_sessions(
    services: Any, tmp_path: Path, reference: Any
) -> None:
    prefix, ref, _ = reference
    bootstrap = services.kafka_bootstrap
    topics = Topics(prefix)
    sessions_from = await end_offsets(bootstrap, topics.sessions)
    events_from = await end_offsets(bootstrap, topics.events)
    # New app id (consumer group, changelog) and new data dir: nothing of the first run's state.
    replay = Worker("replay", bootstrap, prefix, f"{prefix}replay", tmp_path).start()
    try:
        run = await _until_done(bootstrap, topics, [replay], sessions_from=sessions_from, events_from=events_from)
    finally:
        replay.stop()
    _same_as(run, ref)
