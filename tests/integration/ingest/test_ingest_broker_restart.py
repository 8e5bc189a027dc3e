"""Broker down: the edge answers 503 with Retry-After within its bound, reports nothing as
accepted, and recovers by itself once the broker is back (the same app, never restarted).

The test stops and starts a *private* broker (the dev stack's own functions, on a
StackConfig with free ports and the shared jars), so that other tests running against the
shared broker at the same time are not disturbed, and so that whatever happens here the
shared broker stays up. The private broker is stopped in `finally`, pass or fail.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import orjson
import pytest
from ingest_edge_helpers import ADMIN, running_edge

from tests.topic_reader import read_topic

from schemas.topics import Topics, create_topics
from touchstream import devstack
from touchstream.devstack import StackConfig
from touchstream.devstack.process import free_port

TIMEOUT_S = 2.0
RETRY_AFTER = 3


def hit() -> dict[str, str]:
    return {"guid": str(uuid.uuid4()), "hit_id": str(uuid.uuid4()), "url": "https://e.com/"}


async def post_until_accepted(client: httpx.AsyncClient, body: Any, within: float) -> httpx.Response:
    deadline = time.monotonic() + within
    while True:
        response = await client.post("/v1/hits", json=body)
        if response.status_code == 202 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.5)


@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "sigkill"])
async def test_broker_stop_gives_bounded_503_and_restart_recovers(services: Any, tmp_path: Any, hard: bool) -> None:
    shared = services.stack_config or StackConfig.from_env()
    cfg = StackConfig(
        root=tmp_path / "stack",
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        pg_port=free_port(),
        kafka_libs=shared.kafka_libs_dir,
    )
    prefix = "restart."
    topics = Topics(prefix)
    accepted: list[str] = []
    try:
        await asyncio.to_thread(devstack.start_kafka, cfg)
        await create_topics(cfg.kafka_bootstrap, prefix, 8)
        async with running_edge(
            cfg.kafka_bootstrap,
            prefix,
            ingest_publish_timeout_s=TIMEOUT_S,
            ingest_retry_after_s=RETRY_AFTER,
            ingest_ready_cache_s=0,
        ) as (client, _):
            first = [hit() for _ in range(10)]
            response = await post_until_accepted(client, first, within=60)  # new topics: leaders settle
            assert response.status_code == 202, response.text
            accepted += [h["hit_id"] for h in first]

            await asyncio.to_thread(devstack.stop_kafka, cfg, hard=hard)
            for attempt in range(3):
                started = time.monotonic()
                response = await client.post("/v1/hits", json=[hit(), hit()])
                elapsed = time.monotonic() - started
                assert response.status_code == 503, (attempt, response.text)
                assert response.headers["retry-after"] == str(RETRY_AFTER)
                assert response.json()["accepted"] == 0
                assert response.json()["rejected"][0]["errors"][0]["field"] == "kafka"
                assert str(cfg.kafka_port) not in response.text, "a public answer names Kafka's address"
                assert elapsed < TIMEOUT_S + 1.5, f"503 took {elapsed:.1f} s, past the {TIMEOUT_S} s bound"
            public = await client.get("/readyz")
            assert public.status_code == 503 and public.json() == {"status": "unavailable"}
            why = await client.get(f"{ADMIN}/readyz")  # the operator's listener says why
            assert why.status_code == 503 and why.json()["reason"], why.text
            assert (await client.get("/healthz")).status_code == 200  # alive, just not ready

            await asyncio.to_thread(devstack.start_kafka, cfg)
            second = [hit() for _ in range(10)]
            response = await post_until_accepted(client, second, within=90)
            assert response.status_code == 202, f"no recovery after the broker came back: {response.text}"
            accepted += [h["hit_id"] for h in second]
            third = [hit() for _ in range(50)]
            response = await client.post("/v1/hits", json=third)
            assert response.status_code == 202 and response.json()["accepted"] == 50
            accepted += [h["hit_id"] for h in third]
            assert (await client.get("/readyz")).status_code == 200
            metrics = (await client.get(f"{ADMIN}/metrics")).text
            assert 'ingest_requests_refused_total{reason="unavailable"}' in metrics

        records = await read_topic(cfg.kafka_bootstrap, topics.hits, len(accepted))
        landed = {orjson.loads(r.value)["hit_id"] for r in records}
        assert set(accepted) <= landed, "a hit answered 202 is missing from Kafka"
    finally:
        await asyncio.to_thread(devstack.stop_kafka, cfg)
