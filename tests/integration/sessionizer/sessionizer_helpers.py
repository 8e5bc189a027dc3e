"""Helpers of the sessionizer's integration tests: run workers as real processes (so `kill -9`
is real), publish hits as the edge does, read the output topics.

Imported by module name: this folder has no __init__.py, so pytest puts it on sys.path.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from schemas.hit import HitIn, enrich
from schemas.topics import Topics
from schemas.wire import encode
from tests.topic_reader import end_offsets, read_all  # noqa: F401  (re-exported for the tests here)
from tests.polling import wait_for  # noqa: F401  (re-exported for the tests here)

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker:
    """One `python -m sessionizer` process with its own data dir, web port and stats file."""

    def __init__(self, name: str, bootstrap: str, prefix: str, app_id: str, workdir: Path, **env: str) -> None:
        self.name = name
        self.data_dir = workdir / f"{name}-data"
        self.stats_file = workdir / f"{name}-stats.json"
        self.log_file = workdir / f"{name}.log"
        self.env = dict(os.environ)
        self.env.update({
            "PYTHONPATH": str(REPO),
            "TOUCHSTREAM_KAFKA_BOOTSTRAP": bootstrap,
            "TOUCHSTREAM_TOPIC_PREFIX": prefix,
            "TOUCHSTREAM_SESSIONIZER_APP_ID": app_id,
            "TOUCHSTREAM_SESSIONIZER_WEB_PORT": str(free_port()),
            "TOUCHSTREAM_SESSIONIZER_DATA_DIR": str(self.data_dir),
            "TOUCHSTREAM_SESSIONIZER_STATS_FILE": str(self.stats_file),
            "TOUCHSTREAM_LOG_LEVEL": "INFO",
            "TOUCHSTREAM_SESSIONIZER_COMMIT_INTERVAL_S": "1.0",
            "TOUCHSTREAM_SESSIONIZER_TICK_MS": "300",
            # These tests' hits carry received_at = created_at, in March 2026: once a partition is
            # caught up, its event time runs on to the wall clock (rule 7), which closes their
            # sessions at once — and would make every hit produced after that too late for the
            # default 24 h of allowed lateness (rule 6). Live hits arrive with received_at now.
            "TOUCHSTREAM_SESSION_ALLOWED_LATENESS_MS": str(3650 * 86_400_000),
        })
        self.env.update(env)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        self.stats_file.unlink(missing_ok=True)
        log = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen([sys.executable, "-m", "sessionizer"], cwd=REPO, env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    def stats(self) -> dict[str, Any]:
        try:
            return json.loads(self.stats_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"

    async def wait_partitions(self, count: int | None = None, timeout: float = 90.0) -> None:
        """Until the worker has set up `count` hits partitions (any, if None)."""
        async def check() -> bool:
            if not self.alive():
                raise AssertionError(f"worker {self.name} exited:\n{self.log_tail()}")
            parts = self.stats().get("partitions", [])
            return len(parts) == count if count is not None else bool(parts)

        try:
            await wait_for(check, timeout, f"worker {self.name} to own {count or 'some'} partitions")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout: float = 40.0) -> int:
        """SIGTERM (graceful: finish the round, commit), SIGKILL if it hangs; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"worker {self.name} did not stop within {timeout}s:\n{self.log_tail()}") from None


def edge_records(raw_hits: Iterable[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    """Hits as the edge publishes them: validated (`HitIn`), enriched with received_at =
    created_at (so occurred_at = created_at), keyed by guid; plus the close record of a hit
    that names a previous guid (keyed by that guid)."""
    out: list[tuple[bytes, bytes]] = []
    for raw in raw_hits:
        hit = HitIn.model_validate(raw)
        received = hit.created_at
        assert isinstance(received, datetime), "test hits carry created_at"
        record, close = enrich(hit, received_at=received, ip="203.0.113.0", user_agent=raw.get("_ua", "Mozilla/5.0 (X11; Linux x86_64) Firefox/127.0"))
        out.append((record["guid"].encode(), encode(record)))
        if close is not None:
            out.append((close["guid"].encode(), encode(close)))
    return out


async def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
                                max_batch_size=256 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def latest_sessions(bootstrap: str, topics: Topics, start: dict[int, int] | None = None) -> dict[str, dict[str, Any]]:
    """session_id -> the snapshot with the highest version."""
    latest: dict[str, dict[str, Any]] = {}
    for r in await read_all(bootstrap, topics.sessions, start):
        snap = orjson.loads(r.value)
        assert r.key.decode() == snap["session_id"], "sessions are keyed by session_id"
        prev = latest.get(snap["session_id"])
        if prev is None or snap["version"] > prev["version"]:
            latest[snap["session_id"]] = snap
    return latest


async def event_records(bootstrap: str, topics: Topics) -> list[tuple[bytes, dict[str, Any], bytes]]:
    """(key, decoded, raw value) of every record on `events`."""
    return [(r.key, orjson.loads(r.value), r.value) for r in await read_all(bootstrap, topics.events)]


def without(snap: dict[str, Any], *fields: str) -> dict[str, Any]:
    return {k: v for k, v in snap.items() if k not in fields}


def namespaced(namespace: str, value: str) -> str:
    """A uuid derived from (namespace, value), in the case of `value` (scenarios test guid case)."""
    new = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}:{value.lower()}"))
    return new.upper() if value != value.lower() else new
