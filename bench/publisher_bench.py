"""Benchmark of the edge's Kafka publisher alone, against plain aiokafka, in the same run.

    .venv/bin/python bench/publisher_bench.py [--concurrency 16,64,256] [--hits-per-request 1]
                                              [--duration 8] [--compression zstd]

What a request of the edge costs in Kafka, without HTTP: N concurrent "requests" (asyncio
tasks) each publish `--hits-per-request` 900-byte records keyed by one of 10,000 devices and
wait until Kafka acknowledged them, in a loop, for `--duration` seconds after a 2 s warm-up.
Both contenders get the settings the edge uses: idempotent, acks=all, the edge's compression
and linger, 8 partitions on the dev stack's broker.

- `publisher`: `ingest.publisher.KafkaPublisher.publish()`, as the edge calls it;
- `aiokafka`: `AIOKafkaProducer.send()` per record and `asyncio.gather` of the futures (the
  library's own batching, linger_ms = the edge's).

Printed per concurrency: records/s, CPU of this process per record (the figure that limits
an edge: everything runs on one event loop) and the publisher/aiokafka ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aiokafka import AIOKafkaProducer  # noqa: E402

from ingest.publisher import KafkaPublisher  # noqa: E402
from ingest.settings import IngestSettings  # noqa: E402
from schemas.runtime import tune_gc  # noqa: E402
from schemas.topics import Topics, create_topics, delete_topics  # noqa: E402
from touchstream.devstack import ensure_up  # noqa: E402

Publish = Callable[[list[tuple[bytes, bytes]]], Awaitable[None]]


async def drive(publish: Publish, concurrency: int, per_request: int, seconds: float) -> tuple[float, float]:
    """(records/s, CPU seconds per record) of `concurrency` request loops over `seconds`."""
    keys = [str(uuid.UUID(int=i * 7919 + 1, version=4)).encode() for i in range(10_000)]
    value = bytes(900)
    done = 0
    stop = False

    async def requester(offset: int) -> None:
        nonlocal done
        i = offset
        while not stop:
            records = []
            for _ in range(per_request):
                i += 7
                records.append((keys[i % len(keys)], value))
            await publish(records)
            done += per_request

    tasks = [asyncio.create_task(requester(n)) for n in range(concurrency)]
    await asyncio.sleep(2.0)  # warm-up: connections, batches, allocator
    start_done, cpu0, wall0 = done, time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall, count = time.process_time() - cpu0, time.monotonic() - wall0, done - start_done
    stop = True
    await asyncio.gather(*tasks)
    return count / wall, cpu / max(count, 1)


async def with_publisher(settings: IngestSettings, topics: Topics, concurrency: int, per: int, seconds: float):
    publisher = KafkaPublisher(settings, [topics.hits, topics.deadletter])
    await publisher.start()
    try:
        timeout = settings.ingest_publish_timeout_s

        async def publish(records: list[tuple[bytes, bytes]]) -> None:
            await publisher.publish([(topics.hits, records)], timeout)

        return await drive(publish, concurrency, per, seconds)
    finally:
        await publisher.stop()


async def with_aiokafka(settings: IngestSettings, topics: Topics, concurrency: int, per: int, seconds: float):
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=settings.ingest_linger_ms,
        max_batch_size=settings.ingest_max_batch_bytes,
        compression_type=None if settings.ingest_compression == "none" else settings.ingest_compression,
    )
    await producer.start()
    try:

        async def publish(records: list[tuple[bytes, bytes]]) -> None:
            futures = [await producer.send(topics.hits, value, key=key) for key, value in records]
            await asyncio.gather(*futures)

        return await drive(publish, concurrency, per, seconds)
    finally:
        await producer.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="16,64,256", help="comma-separated request loops")
    parser.add_argument("--hits-per-request", type=int, default=1)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--compression", choices=["none", "snappy", "lz4", "zstd", "gzip"])
    args = parser.parse_args(argv)

    import uvloop

    info = ensure_up()
    prefix = f"pubbench{uuid.uuid4().hex[:6]}."
    topics = Topics(prefix)
    asyncio.run(create_topics(info.kafka_bootstrap, prefix, 8))
    env = {"kafka_bootstrap": info.kafka_bootstrap, "topic_prefix": prefix}
    if args.compression:
        env["ingest_compression"] = args.compression
    settings = IngestSettings(**env)  # type: ignore[arg-type]
    tune_gc(settings)  # as the edge process does
    rows = []
    try:
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            for name, run in (("aiokafka", with_aiokafka), ("publisher", with_publisher)):
                rate, cpu = uvloop.run(run(settings, topics, concurrency, args.hits_per_request, args.duration))
                rows.append((concurrency, name, rate, cpu))
                print(f"  {name:9} concurrency {concurrency:4}: {rate:>9,.0f} records/s  {cpu * 1e6:7.1f} us CPU/record", flush=True)
    finally:
        asyncio.run(delete_topics(info.kafka_bootstrap, topics.all()))
    print()
    print(
        f"{os.cpu_count()} cores, broker on the same machine; {args.hits_per_request} record(s) of 900 bytes per request,"
        f" compression {settings.ingest_compression}, linger {settings.ingest_linger_ms} ms, acks=all, idempotent"
    )
    head = f"{'requests':>8} {'contender':<10} {'records/s':>10} {'CPU us/record':>14}"
    print(head)
    print("-" * len(head))
    for concurrency, name, rate, cpu in rows:
        print(f"{concurrency:>8} {name:<10} {rate:>10,.0f} {cpu * 1e6:>14.1f}")
    print()
    for concurrency in dict.fromkeys(r[0] for r in rows):
        base = next(r for r in rows if r[0] == concurrency and r[1] == "aiokafka")
        ours = next(r for r in rows if r[0] == concurrency and r[1] == "publisher")
        print(
            f"concurrency {concurrency}: publisher/aiokafka = {ours[2] / base[2]:.2f}x records/s,"
            f" {ours[3] / base[3]:.2f}x CPU per record"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
