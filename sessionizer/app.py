"""The sessionizer as a Faust app: the imperative shell around the pure core (`sessionizer.machine`).

Shape of a worker
-----------------
- a Faust app (at-least-once; consumer group = app id) whose consumer is the bulk consumer of
  `sessionizer.transport` (`broker_consumer="touchstream://..."`);
- a Faust table `devices`, keyed by guid, RocksDB store (rocksdict), raw bytes in and out, with
  a compacted changelog topic `<app id>-devices-changelog` that has as many partitions as
  `hits` (created explicitly beforehand, see `ensure_topics`);
- the `hits` topic registered with Faust's conductor, so Faust subscribes to it and
  co-partitions it with the changelog (hits partition p and changelog partition p always go to
  the same worker);
- one processing task (`sessionizer.processor`), the single writer of the table, which takes
  fetched hits in bulk, runs the core, sweeps quiet sessions closed, produces the outputs and
  persists the state (`sessionizer.output`, `sessionizer.store`), then acks the offsets;
- `/metrics` (Prometheus) on the Faust web port.

Faust does: group membership, partition assignment and rebalancing, table recovery from the
changelog and standby replicas, opening/closing RocksDB partitions, committing acked offsets,
the web server. This package does: per-batch decoding, the core, output production through
aiokafka batches, state writes (the same changelog records and RocksDB bytes Faust would
write), the event-time clock and the sweep.

SPEC section 6, the sessionizer's part
--------------------------------------
- Every hit read from `hits` yields exactly one record on `events` (pageview, event or late
  hit, with its session_id) or one dead letter. Its offset is acked — and so committed — only
  after that record and the device's new state are acknowledged by Kafka (acks=all,
  idempotent producer), outputs before state (`sessionizer.processor`). A crash anywhere
  (`kill -9` included) resumes from the last commit: a hit whose state was saved is ignored
  by the core (the device remembers the newest `hits` offset it applied), a hit whose state
  was not saved gives the same record again, byte for byte; the sink's primary key
  `(occurred_at, hit_id)` stores it once.
- Worker loss: the table comes back from the changelog on any worker, also onto an empty data
  directory; RocksDB is only a local copy (tests: kill -9 with a second worker taking over,
  and a restart on an empty data dir).
- Rebalances: the processing task is quiesced before partitions are revoked; buffered hits of
  revoked partitions were never acked, so the next owner reads them again.
- Broker restarts: a round whose writes fail is redone from the durable state after a backoff
  and acks nothing until it succeeds; the consumer reconnects on its own (aiokafka).
- Replay: session ids are UUIDv5 of guid and opening hit id, so replaying `hits` from the
  start into fresh state (new app id, empty data dir) gives the same sessions (tested).
- Bad input never stops the worker: undecodable records, wrong schema versions, field errors,
  records whose key is not their guid, tombstones, and hits the core fails on go to
  `deadletter` with the reason and the original bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from faust.types import TP
from mode import Service

from schemas.internals import FaustTableStore, add_service, require
from schemas.topics import TopicPolicy, Topics, create_missing, create_topics_for
from sessionizer.output import Sender
from sessionizer.processor import Processor
from sessionizer.settings import SessionizerSettings
from sessionizer.stats import Stats, prometheus_text, registry_for
from sessionizer.store import DeviceStore
from sessionizer.transport import SCHEME, Inbox

log = logging.getLogger("touchstream.sessionizer")


def changelog_topic(settings: SessionizerSettings) -> str:
    """The table's changelog topic, named as Faust names it."""
    return f"{settings.sessionizer_app_id}-{settings.sessionizer_table}-changelog"


class PartitionsMismatch(RuntimeError):
    pass


async def ensure_topics(settings: SessionizerSettings) -> dict[str, int]:
    """Create `hits`/`sessions`/`events`/`deadletter` and the table's changelog (compacted) with
    `settings.partitions` partitions unless they exist; refuse to start when an existing topic
    has another partition count than `hits` (Faust's changelog must match it partition for
    partition, and the outputs' partitioning assumes one count). Returns name -> partitions."""
    await create_topics_for(settings)
    policy = TopicPolicy.of(settings)
    name = changelog_topic(settings)
    await create_missing(settings.kafka_connection(), [policy.new_topic(name, policy.changelog_config())])
    topics = Topics(settings.topic_prefix)
    names = [*topics.all(), name]
    counts = await _partition_counts(settings, names, settings.sessionizer_topics_wait_s)
    missing = [n for n in names if not counts.get(n)]
    if missing:
        raise PartitionsMismatch(f"topics {missing} have no partitions {settings.sessionizer_topics_wait_s:g} s "
                                 f"after their creation; got {counts}")
    expected = counts[topics.hits]
    wrong = {n: c for n, c in counts.items() if c != expected}
    if wrong:
        raise PartitionsMismatch(
            f"every topic must have the partition count of {topics.hits} ({expected}); got {counts}"
        )
    return counts


async def _partition_counts(settings: SessionizerSettings, names: list[str], wait_s: float) -> dict[str, int]:
    """Name -> partition count of the topics the brokers describe, waiting up to `wait_s` for all
    of them: a topic just created by this or another worker takes a while to show in every
    broker's metadata, longer on a busy machine."""
    admin = AIOKafkaAdminClient(**settings.kafka_connection().client_args())
    await admin.start()
    try:
        deadline = time.monotonic() + wait_s
        while True:
            described = await admin.describe_topics(names)
            counts = {d["topic"]: len(d["partitions"]) for d in described if not d.get("error_code")}
            if (len(counts) == len(names) and all(counts.values())) or time.monotonic() > deadline:
                return counts
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


class SessionizerApp(faust.App):
    """A Faust app carrying the bulk receiver the transport looks for (`bulk_receiver`)."""

    bulk_receiver: Any = None


class SessionizerService(Service):
    """Owns the output producer and runs the processing task (and the stats file writer)."""

    def __init__(self, app: SessionizerApp, settings: SessionizerSettings, processor: Processor,
                 sender: Sender, stats: Stats, **kwargs: Any) -> None:
        self.app = app
        self.settings = settings
        self.processor = processor
        self.sender = sender
        self.stats = stats
        self.producer: AIOKafkaProducer | None = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        self.processor.replace_producer = self.replace_producer
        await self._new_producer()

    async def _new_producer(self) -> None:
        s = self.settings
        # Outputs and changelog: idempotent, acks=all; big batches (see sessionizer.output).
        self.producer = AIOKafkaProducer(
            **s.kafka_connection().client_args(),
            acks="all",
            enable_idempotence=True,
            linger_ms=s.sessionizer_linger_ms,
            max_batch_size=s.sessionizer_producer_batch_bytes,
            max_request_size=max(s.sessionizer_producer_batch_bytes + 1024, 1_048_576),
            compression_type=None if s.sessionizer_compression == "none" else s.sessionizer_compression,
            request_timeout_ms=30_000,
        )
        await self.producer.start()
        self.sender.producer = self.producer

    async def replace_producer(self) -> None:
        """After a broker restart an idempotent producer can lose its sequence state for good
        (OutOfOrderSequenceNumber on every batch): start a new one (a new producer id)."""
        old, self.producer = self.producer, None
        if old is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.stop(), 10)
        await self._new_producer()

    async def on_stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    @Service.task
    async def _process(self) -> None:
        try:
            await self.processor.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("sessionizer processing task crashed")
            await self.app.crash(exc)

    @Service.task
    async def _write_stats(self) -> None:
        path = self.settings.sessionizer_stats_file
        if path is None:
            return
        while not self.should_stop:
            self.stats.write(path)
            await self.sleep(0.5)


def create_app(settings: SessionizerSettings) -> SessionizerApp:
    """A worker's Faust app: the device table, the `hits` subscription, the processing task with
    the service that owns its producer, and the web pages."""
    require("faust-streaming", "aiokafka")  # the private Faust/aiokafka parts this package uses
    topics = Topics(settings.topic_prefix)
    app = _faust_app(settings)
    table = _device_table(app, settings)
    _subscribe(app, settings, topics.hits)
    stats = Stats()
    stats.watch_gc()
    sender = Sender()
    processor, store = _processor(app, settings, topics, table, sender, stats)

    @table.on_recover
    async def _recovered() -> None:
        changelog = table.changelog_topic_name
        processor.on_recovered({tp for tp in app.assignor.assigned_actives() if tp.topic == changelog})

    add_service(app, SessionizerService(app, settings, processor, sender, stats))
    _serve_pages(app, stats, processor)
    # ua-parser compiles its regexes on first use (slow in pure Python): do it now, not inside
    # the first batch.
    from sessionizer.useragent import describe

    describe("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36")
    app.sessionizer = {"table": table, "processor": processor, "stats": stats, "store": store}  # type: ignore[attr-defined]
    return app


def _faust_app(settings: SessionizerSettings) -> SessionizerApp:
    """Faust configured for the worker: at-least-once, the bulk consumer, RocksDB, raw bytes."""
    kafka = settings.kafka_connection()
    return SessionizerApp(
        settings.sessionizer_app_id,
        broker=";".join(f"kafka://{h}" for h in kafka.hosts),
        broker_consumer=";".join(f"{SCHEME}://{h}" for h in kafka.hosts),
        # TLS and SASL for every client Faust makes (consumer, producer, admin): same settings.
        broker_credentials=kafka.faust_credentials(),
        store="rocksdb://",
        datadir=str(settings.sessionizer_data_dir),
        web_port=settings.sessionizer_web_port,
        web_bind=settings.sessionizer_web_host,
        web_host=settings.sessionizer_web_host,
        processing_guarantee="at_least_once",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=settings.sessionizer_standby_replicas,
        broker_commit_interval=settings.sessionizer_commit_interval_s,
        broker_session_timeout=settings.sessionizer_session_timeout_s,
        broker_heartbeat_interval=max(1.0, settings.sessionizer_session_timeout_s / 3),
        broker_max_poll_records=settings.sessionizer_fetch_max,
        consumer_max_fetch_size=8 * 1024 * 1024,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        autodiscover=False,
    )


def _device_table(app: SessionizerApp, settings: SessionizerSettings) -> Any:
    return app.Table(
        settings.sessionizer_table,
        key_type=bytes,  # bytes -> the "raw" serializer: the changelog holds exactly what we write
        value_type=bytes,
        partitions=settings.partitions,
        recovery_buffer_size=10_000,
    )


def _subscribe(app: SessionizerApp, settings: SessionizerSettings, hits_topic: str) -> None:
    # Registering the topic with the conductor is what subscribes Faust to it (and makes the
    # assignor co-partition it with the changelog); its records never reach a stream, as the
    # bulk consumer hands them to the inbox.
    hits = app.topic(
        hits_topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
        partitions=settings.partitions, acks=True,
    )
    app.topics.add(hits)


def _processor(app: SessionizerApp, settings: SessionizerSettings, topics: Topics, table: Any, sender: Sender,
               stats: Stats) -> tuple[Processor, DeviceStore]:
    """The processing task with its inbox and store, registered as the app's bulk receiver."""
    store = DeviceStore(
        FaustTableStore(table),
        cache_size=settings.sessionizer_state_cache,
        min_size=2 * (settings.sessionizer_batch_max + settings.sessionizer_sweep_max),
    )
    inbox = Inbox([topics.hits], max_records=settings.sessionizer_inbox_max)
    processor = Processor(
        app,
        rules=settings.rules(),
        topics=topics,
        inbox=inbox,
        store=store,
        sender=sender,
        partitions=settings.partitions,
        batch_max=settings.sessionizer_batch_max,
        tick_s=settings.sessionizer_tick_ms / 1000,
        sweep_max=settings.sessionizer_sweep_max,
        idle_scan_max=settings.sessionizer_idle_scan_max,
        stats=stats,
    )
    stats.open_sessions = processor.open_sessions
    stats.inbox = lambda: inbox.count
    stats.partitions = lambda: sorted(processor.partitions)
    app.bulk_receiver = processor
    processor.inbox = inbox
    return processor, store


def _serve_pages(app: SessionizerApp, stats: Stats, processor: Processor) -> None:
    """/metrics (Prometheus) and /healthz on the Faust web port."""
    registry = registry_for(stats)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(prometheus_text(stats, registry), content_type="text/plain; version=0.0.4")

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"ok": True, "partitions": sorted(processor.partitions)})


def assigned_hits(app: SessionizerApp, topics: Topics) -> set[TP]:
    return {tp for tp in app.consumer.assignment() if tp.topic == topics.hits}
