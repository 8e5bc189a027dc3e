"""Where a Faust sessionizer's time goes: the same work with fewer Faust operations per hit, step by step.

    python -m bench.faust_variants [--hits 100000] [--devices 10000] [--variants a,b,...]

Pre-fills a `hits` topic once, measures the raw aiokafka loop on it, then runs each variant as
its own worker process (fresh consumer group and data dir) over the same records, timed from
the first record it took to the last output acknowledged. Every variant that writes runs the
real session core (`sessionizer.machine`) and keeps at-least-once order (outputs and state
acknowledged before the offsets of the hits are acked). Variants:

  agent          the straightforward agent: per hit a table read and write and a `topic.send`
                 per output record (Faust acks each event after the loop body; the producer is
                 flushed every 5,000 hits, as Faust flushes it before each commit)
  take-decode    `stream.take_events(N, within)`, raw values decoded with the shared codec, nothing else
  take-table     take_events + core + ONE table write per device per batch (`Table.__setitem__`
                 with Faust's current event set to one of the device's events) + `topic.send`
                 per output (latest snapshot per session, every event record)
  take-batchout  as take-table, but outputs through aiokafka `send_batch` per partition
  bulk-decode    the bulk transport (`sessionizer.transport`): whole fetches, decode only
  sessionizer    the real worker: bulk transport + core + direct table writes + batched outputs
"""

from __future__ import annotations

import argparse
import functools
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
import weakref
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bench import kafkabench as kb
from bench.hitgen import Shape, generate
from bench.sessionizer_bench import free_port, load, run_worker

REPO = Path(__file__).resolve().parent.parent
print = functools.partial(print, flush=True)  # noqa: A001 - progress lines as they come
VARIANTS = ("agent", "take-decode", "take-table", "take-batchout", "bulk-decode", "sessionizer")


# --- the variant worker (runs in its own process) ------------------------------------------


class Progress:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.records = 0
        self.first: float | None = None
        self.last: float | None = None

    def taken(self) -> None:
        if self.first is None:
            self.first = time.time()

    def done(self, n: int) -> None:
        self.records += n
        self.last = time.time()
        self.path.write_text(json.dumps({"records_in": self.records, "first_taken": self.first,
                                         "last_records_durable": self.last}))


def variant_worker(variant: str) -> None:
    import faust
    from faust.streams import _current_event

    from schemas.timefmt import to_ms
    from schemas.topics import Topics
    from schemas.wire import encode, hit_codec
    from sessionizer.machine import DeviceState, Emitted, on_hit
    from schemas.partitioning import Partitioner
    from sessionizer.output import BatchWriter, Sender
    from sessionizer.rules import Rules
    from sessionizer.useragent import describe

    describe("Mozilla/5.0")  # compile ua-parser's regexes before the clock starts
    env = os.environ
    topics = Topics(env["TOUCHSTREAM_TOPIC_PREFIX"])
    bootstrap = env["TOUCHSTREAM_KAFKA_BOOTSTRAP"]
    progress = Progress(Path(env["TOUCHSTREAM_SESSIONIZER_STATS_FILE"]))
    rules = Rules()
    from sessionizer.transport import SCHEME

    consumer_url = f"{SCHEME if variant == 'bulk-decode' else 'kafka'}://{bootstrap}"
    app = faust.App(
        env["TOUCHSTREAM_SESSIONIZER_APP_ID"], broker=f"kafka://{bootstrap}", broker_consumer=consumer_url,
        store="rocksdb://",
        datadir=env["TOUCHSTREAM_SESSIONIZER_DATA_DIR"], web_port=int(env["TOUCHSTREAM_SESSIONIZER_WEB_PORT"]),
        processing_guarantee="at_least_once", topic_partitions=8, table_standby_replicas=0,
        broker_max_poll_records=5000, consumer_auto_offset_reset="earliest", key_serializer="raw",
        value_serializer="raw", autodiscover=False,
    )
    table = app.Table("devices", key_type=bytes, value_type=bytes, partitions=8)
    hits = app.topic(topics.hits, key_type=bytes, value_type=bytes, partitions=8)
    sessions_t = app.topic(topics.sessions, key_type=bytes, value_type=bytes, partitions=8)
    events_t = app.topic(topics.events, key_type=bytes, value_type=bytes, partitions=8)
    partitions = Partitioner(8)

    def outputs(out: Emitted) -> list[tuple[Any, bytes, bytes]]:
        latest: dict[str, dict[str, Any]] = {}
        for snap in out.sessions:
            prev = latest.get(snap["session_id"])
            if prev is None or snap["version"] > prev["version"]:
                latest[snap["session_id"]] = snap
        rows = [(sessions_t, sid.encode(), encode(s)) for sid, s in latest.items()]
        rows += [(events_t, r["guid"].encode(), encode(r)) for r in out.records]
        return rows

    if variant == "agent":
        pending: list[int] = []

        @app.agent(hits)
        async def agent(stream: Any) -> None:
            async for event in stream.events():
                progress.taken()
                hit = hit_codec.decode(event.value)
                guid = hit.guid.lower()
                raw = table.get(guid.encode())
                out = Emitted()
                state = on_hit(None if raw is None else DeviceState.from_bytes(raw), hit, rules,
                               to_ms(hit.occurred_at), out)
                table[guid.encode()] = state.to_bytes()
                for topic, k, v in outputs(out):
                    # Not awaited per hit (that waits a broker round trip per hit): Faust flushes
                    # its producer before it commits, which is its at-least-once guarantee.
                    await topic.send(key=k, value=v)
                pending.append(1)
                if len(pending) >= 5000:  # count progress once the outputs are acknowledged
                    await app.producer.flush()
                    progress.done(len(pending))
                    pending.clear()

    elif variant == "take-decode":
        @app.agent(hits)
        async def agent(stream: Any) -> None:
            async for events in stream.take_events(5000, within=0.2):
                progress.taken()
                for event in events:
                    hit_codec.decode(event.value)
                progress.done(len(events))

    elif variant in ("take-table", "take-batchout"):
        sender = Sender()

        @app.agent(hits)
        async def agent(stream: Any) -> None:
            if variant == "take-batchout":
                from aiokafka import AIOKafkaProducer

                producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                            linger_ms=5, max_batch_size=1_000_000)
                await producer.start()
                sender.producer = producer
            async for events in stream.take_events(5000, within=0.2):
                progress.taken()
                out = Emitted()
                touched: dict[str, tuple[DeviceState, Any]] = {}
                for event in events:
                    hit = hit_codec.decode(event.value)
                    guid = hit.guid.lower()
                    if guid in touched:
                        state = touched[guid][0]
                    else:
                        _current_event.set(weakref.ref(event))  # the device's partition for the read
                        raw = table.get(guid.encode())
                        state = None if raw is None else DeviceState.from_bytes(raw)
                    state = on_hit(state, hit, rules, to_ms(hit.occurred_at), out)
                    touched[guid] = (state, event)
                rows = outputs(out)
                if variant == "take-table":
                    futures = [await topic.send(key=k, value=v) for topic, k, v in rows]
                    await asyncio.gather(*futures)
                else:
                    writer = BatchWriter(sender)
                    for topic, k, v in rows:
                        writer.add(topic.get_topic_name(), partitions(k), k, v)
                    await writer.flush()
                # One state write per device per batch: Table.__setitem__ needs a current
                # event (it takes the changelog partition from it), so set one per write.
                for guid, (state, event) in touched.items():
                    _current_event.set(weakref.ref(event))
                    table[guid.encode()] = state.to_bytes()
                _current_event.set(None)
                await app.producer.flush()  # the changelog records, acknowledged
                progress.done(len(events))

    elif variant == "bulk-decode":
        from faust.types import TP

        from sessionizer.transport import Inbox

        inbox = Inbox([topics.hits], 40_000)

        class Receiver:
            def __init__(self) -> None:
                self.inbox = inbox

            async def before_revoke(self, revoked: set[TP]) -> None:
                inbox.drop(revoked)

            async def before_stop(self) -> None:
                pass

        app.bulk_receiver = Receiver()  # type: ignore[attr-defined]
        app.topics.add(hits)

        @app.task
        async def drain() -> None:
            while True:
                await inbox.wait(1.0)
                chunks = inbox.take(20_000)
                if not chunks:
                    continue
                progress.taken()
                n = 0
                for chunk in chunks:
                    for rec in chunk.records:
                        hit_codec.decode(rec.value)
                    app.consumer.ack_range(chunk.tp, chunk.ack_from, chunk.last_offset)
                    n += len(chunk.records)
                progress.done(n)

    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()


# --- the harness --------------------------------------------------------------------------


def run_variant(variant: str, env: dict[str, str], stats_file: Path, total: int, timeout: float, log: Path) -> float:
    """Records per second of `variant`, from its first record taken to its last made durable."""
    if variant == "sessionizer":
        cmd = [sys.executable, "-m", "sessionizer"]
    else:
        cmd = [sys.executable, "-m", "bench.faust_variants", "--worker", variant]
    stats = run_worker(env, stats_file, total, timeout, log, cmd=cmd, settle=0)
    return total / (stats["last_records_durable"] - stats["first_taken"])


async def main_async(args: argparse.Namespace) -> int:
    bootstrap = args.bootstrap
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    records = generate(Shape(hits=args.hits, devices=args.devices), datetime.now(timezone.utc) - timedelta(hours=3))
    await kb.create(bootstrap, [prefix + n for n in ("hits", "sessions", "events", "deadletter", "raw-out")], 8)
    await kb.prefill(bootstrap, prefix + "hits", records)
    total = len(records)
    print(f"# faust variants  {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%SZ}  {total:,} hits over {args.devices:,} devices")
    work = Path(tempfile.mkdtemp(prefix="faust-variants-"))
    try:
        # The machine is shared: the raw loop runs right before each variant, over the same
        # records (a new consumer group each time), and each variant is compared with it.
        for n, variant in enumerate(variants):
            raw = await kb.raw_loop(bootstrap, prefix + "hits", prefix + "raw-out", total, f"{prefix}raw{n}")
            app_id = f"{prefix}{variant}"
            env = dict(os.environ)
            env.update({
                "PYTHONPATH": str(REPO),
                "TOUCHSTREAM_KAFKA_BOOTSTRAP": bootstrap,
                "TOUCHSTREAM_TOPIC_PREFIX": prefix,
                "TOUCHSTREAM_SESSIONIZER_APP_ID": app_id,
                "TOUCHSTREAM_SESSIONIZER_DATA_DIR": str(work / variant),
                "TOUCHSTREAM_SESSIONIZER_WEB_PORT": str(free_port()),
                "TOUCHSTREAM_SESSIONIZER_STATS_FILE": str(work / f"{variant}.json"),
                "TOUCHSTREAM_SESSIONIZER_STANDBY_REPLICAS": "0",
            })
            for item in args.env:
                k, _, v = item.partition("=")
                env[k] = v
            before = load()
            try:
                per_s = run_variant(variant, env, work / f"{variant}.json", total, args.timeout, work / f"{variant}.log")
                print(f"{variant:<14} {per_s:>8,.0f} hits/s | raw loop just before {raw['per_s']:>8,.0f}/s | "
                      f"{per_s / raw['per_s']:.2f}x raw | load {before}")
            except RuntimeError as exc:
                print(f"{variant:<14} failed: {exc}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
            await kb.delete(bootstrap, prefix)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", default=os.environ.get("TOUCHSTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    parser.add_argument("--hits", type=int, default=100_000)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--env", action="append", default=[], help="extra KEY=VALUE for the workers")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    if args.worker:
        variant_worker(args.worker)
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
