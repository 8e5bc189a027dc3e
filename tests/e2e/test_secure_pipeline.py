"""The whole pipeline over production connections (SPEC section 7), on a private stack started
with TLS: the edge, a sessionizer (Faust and its own clients) and a sink reach Kafka over
SASL_SSL (SCRAM-SHA-512, the stack's CA), the sink writes PostgreSQL over `verify-full` TLS as
a login holding only the writer role and migrates as the owner; hits posted over HTTP land as
rows, read back as the reader login; `journey` (reader) and `forget` (owner, SASL_SSL) work
too. No log line of any component, and no command's output, holds a password."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from schemas.kafka_security import KafkaConnection
from schemas.topics import create_topics
from touchstream.devstack.tls import SECRETS
from touchstream.devstack.tls import material as tls_material
from touchstream.pipeline import Pipeline

pytestmark = pytest.mark.e2e

PARTITIONS = 4
DEVICES = 20
PAGES = 5  # pageviews per device, then one event


def _hits(devices: list[str]) -> list[dict[str, Any]]:
    hits = []
    for guid in devices:
        for n in range(PAGES):
            hits.append({"guid": guid, "hit_id": str(uuid.uuid4()), "url": f"https://shop.example/p/{n}?utm_source=x"})
        hits.append({"guid": guid, "hit_id": str(uuid.uuid4()), "type": "event", "url": "https://shop.example/c",
                     "event": {"name": "lead", "module": "contact_form"}})
    return hits


async def _count(dsn: str, schema: str, expected: int, timeout: float = 120.0) -> int:
    conn = await asyncpg.connect(dsn, timeout=10, server_settings={"search_path": schema})
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                found = await conn.fetchval("SELECT (SELECT count(*) FROM pageviews) + (SELECT count(*) FROM events)")
            except asyncpg.UndefinedTableError:  # the sink has not migrated yet
                found = 0
            if found >= expected or time.monotonic() > deadline:
                return found
            await asyncio.sleep(1.0)
    finally:
        await conn.close()


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHSTREAM_")}
    return subprocess.run([sys.executable, "-m", "touchstream.cli", *args], env={**base, **env},
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.timeout(300)
async def test_hits_in_rows_out_over_sasl_ssl_and_verify_full(secure_services: Any, tmp_path: Any) -> None:
    secure = secure_services.secure
    tls = tls_material(secure_services.stack_config.root)
    secrets = [tls.secret(name) for name in SECRETS]
    prefix, schema = f"s{uuid.uuid4().hex[:6]}.", f"s_{uuid.uuid4().hex[:8]}"
    owner = await asyncpg.connect(secure["TOUCHSTREAM_PG_MIGRATE_DSN"], timeout=10)
    await owner.execute(f'CREATE SCHEMA "{schema}"')
    await owner.close()
    conn = KafkaConnection(secure["TOUCHSTREAM_KAFKA_BOOTSTRAP"], "SASL_SSL", "SCRAM-SHA-512", "touchstream",
                           secure["TOUCHSTREAM_KAFKA_SASL_PASSWORD"], cafile=tls.ca_cert)
    await create_topics(conn, prefix, PARTITIONS)
    env = {**secure, "TOUCHSTREAM_PG_SCHEMA": schema}
    pipeline = Pipeline(workdir=tmp_path / "pipeline", kafka_bootstrap=secure["TOUCHSTREAM_KAFKA_BOOTSTRAP"],
                        pg_dsn=secure["TOUCHSTREAM_PG_DSN"], topic_prefix=prefix, pg_schema=schema,
                        partitions=PARTITIONS, log_level="INFO", extra_env=env)
    devices = [str(uuid.uuid4()) for _ in range(DEVICES)]
    hits = _hits(devices)
    try:
        started = time.monotonic()
        await asyncio.to_thread(pipeline.start)
        async with httpx.AsyncClient(base_url=pipeline.edge_url, timeout=30) as client:
            accepted = 0
            for i in range(0, len(hits), 40):
                response = await client.post("/v1/hits", json=hits[i:i + 40])
                assert response.status_code == 202, response.text
                accepted += response.json()["accepted"]
        assert accepted == len(hits)
        found = await _count(secure["TOUCHSTREAM_PG_ANALYST_DSN"], schema, accepted)
        print(f"\n[secure pipeline] {accepted} hits accepted, {found} rows in {time.monotonic() - started:.1f}s "
              "(SASL_SSL SCRAM-SHA-512, verify-full, writer login)")
        assert found == accepted, f"{found} of {accepted} hits landed\n" + "\n".join(
            c.log_tail(20) for c in pipeline.components.values())
        pipeline.check_alive()
        journey = await asyncio.to_thread(_cli, ["journey", devices[0], "--format", "json"], env)
        assert journey.returncode == 0 and devices[0] in journey.stdout, journey.stderr[-2000:]
        forget = await asyncio.to_thread(_cli, ["forget", devices[1], "--yes"], {**env, "TOUCHSTREAM_TOPIC_PREFIX": prefix})
        assert forget.returncode == 0, forget.stderr[-2000:]
        outputs = journey.stdout + journey.stderr + forget.stdout + forget.stderr
    finally:
        await asyncio.to_thread(pipeline.stop)
        owner = await asyncpg.connect(secure["TOUCHSTREAM_PG_MIGRATE_DSN"], timeout=10)
        await owner.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await owner.close()
    logs = {name: c.log_path.read_text(errors="replace") for name, c in pipeline.components.items()}
    assert all("starting" in text for text in logs.values()), "the components' first lines (with settings) are missing"
    leaked = {name: [s for s in secrets if s in text] for name, text in logs.items()}
    leaked["commands"] = [s for s in secrets if s in outputs]
    assert not any(leaked.values()), f"secrets in the output of {[n for n, found in leaked.items() if found]}"
