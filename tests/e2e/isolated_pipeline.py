"""A pipeline of real processes on the shared stack, isolated by a fresh topic prefix and schema.

    with isolated_pipeline(services, workdir, letter="a", env={...}) as env:   # edge + sessionizer + sink
    with isolated_pipeline(services, workdir, letter="a", full=False) as env:  # an edge alone

Everything it made (topics of the prefix, the schema) is removed afterwards. Used by the
end-to-end suites whose tests share one pipeline per module (bad input, abuse).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from schemas.topics import Topics, create_topics
from tests.conftest import delete_topics_with_prefix
from touchstream.pipeline import Pipeline


def run_async(coro: Awaitable[Any]) -> Any:
    """Run a coroutine from sync code on a loop of its own (the tests' loop is left alone)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)  # type: ignore[arg-type]
    finally:
        loop.close()


@dataclass
class Env:
    pipeline: Pipeline
    prefix: str
    schema: str
    dsn: str
    bootstrap: str
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix)

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn, timeout=30, server_settings={"search_path": self.schema})


async def _schema(dsn: str, schema: str, create: bool) -> None:
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        if create:
            await conn.execute(f'CREATE SCHEMA "{schema}"')
        else:
            await conn.execute("SET lock_timeout = '20s'")
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@contextlib.contextmanager
def isolated_pipeline(services: Any, workdir: Path, *, letter: str, partitions: int, full: bool = True,
                      env: dict[str, str] | None = None) -> Iterator[Env]:
    """Start the pipeline (`full`: edge, one sessionizer, one sink; else the edge alone, its hits
    left on Kafka) on topics `<letter><8 hex>.` and schema `<letter>_<8 hex>`; stop and remove
    it all afterwards."""
    prefix = f"{letter}{uuid.uuid4().hex[:8]}."
    schema = f"{letter}_{uuid.uuid4().hex[:8]}"
    run_async(create_topics(services.kafka_bootstrap, prefix, partitions))
    if full:
        run_async(_schema(services.pg_dsn, schema, True))
    pipeline = Pipeline(workdir=workdir, kafka_bootstrap=services.kafka_bootstrap, pg_dsn=services.pg_dsn,
                        topic_prefix=prefix, pg_schema=schema, partitions=partitions, extra_env=env or {})
    try:
        if full:
            pipeline.start(sessionizers=1, sinks=1)
        else:
            pipeline.add_ingest()
            pipeline.start()
        yield Env(pipeline, prefix, schema, services.pg_dsn, services.kafka_bootstrap)
    finally:
        pipeline.stop()
        with contextlib.suppress(Exception):
            run_async(asyncio.wait_for(delete_topics_with_prefix(services.kafka_bootstrap, prefix), 60))
        if full:
            with contextlib.suppress(Exception):
                run_async(_schema(services.pg_dsn, schema, False))
