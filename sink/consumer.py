"""The sink worker: Kafka (sessions, events, deadletter) -> PostgreSQL, offsets committed after the write.

One loop, four steps per batch (and beside it, on a connection of its own, the task that folds
the dashboard's rollups every `sink_rollup_interval_s`: sink.rollups):

    poll     getmany(max_records, timeout)                 aiokafka, manual commits
    decode   sink.batch.Decoder                            bad records -> dead letters
    write    sink.writer.write_until_written                one transaction; retried with backoff
                                                            while PostgreSQL is away; refused rows
                                                            isolated and dead-lettered
    commit   consumer.commit(next offsets of this batch)    only partitions still assigned

Batch N+1 is polled and decoded while batch N is being written (a task), since decoding is
Python work and writing is mostly PostgreSQL's; but batch N+1 starts writing only after batch N
is written and committed, so writes and commits keep their order. An offset is committed only
once everything before it is in the database, and a crash at any
point re-reads at most the uncommitted batch, which the idempotent writes absorb. Workers of one
group share the partitions; on a rebalance the revoke callback waits (bounded) for the batch in
flight to be written and committed, so the next owner starts right after it. If it cannot wait
that long (PostgreSQL is down), the batch is still written later, its commit is refused or
skipped, and the new owner writes the same rows again: harmless, since every write is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from schemas.backoff import Backoff
from schemas.errors import Unavailable
from schemas.internals import require
from schemas.timefmt import UTC
from sink import metrics
from sink.batch import Batch, Decoder, TopicRoles
from sink.day_window import DayWindow
from sink.migrations import Roles, migrate
from sink.partitions import retention_cutoff, window
from sink.rollups import RollupDrainer
from sink.retention import RowRetention
from sink.settings import SinkSettings
from sink.writer import Writer, write_until_written

log = logging.getLogger("touchstream.sink.consumer")

DECODE_CHUNK = 500  # records decoded between two yields to the event loop


def _report_crash(task: asyncio.Task[None]) -> None:
    """The drainer retries database errors itself; anything else ends it, which must not go unseen
    (the batches go on: the rollups wait, their keys stay queued)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("rollup drainer stopped", exc_info=task.exception())


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, sink: SinkConsumer) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Let the batches fetched so far finish (write + commit) while their partitions are still ours.
        idle = self.sink._idle
        if not idle.is_set():
            self.sink._revoking = True
            try:
                await asyncio.wait_for(idle.wait(), self.sink.revoke_wait_s)
            except asyncio.TimeoutError:
                log.warning("partitions revoked while a batch is still being written; its commit will be "
                            "skipped and the next owner re-writes it (idempotently)",
                            extra={"partitions": len(revoked)})
            finally:
                self.sink._revoking = False
        for tp in revoked:
            with contextlib.suppress(KeyError):
                metrics.LAG.remove(tp.topic, str(tp.partition))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("partitions assigned", extra={"partitions": len(assigned)})


class SinkConsumer:
    """One sink worker. `await run(stop)` until `stop` is set; `stats` says what it did."""

    def __init__(
        self,
        settings: SinkSettings,
        *,
        client_id: str = "touchstream-sink",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        require("asyncpg")  # sink.writer.classify tells asyncpg's own DataError apart
        self.settings = settings
        self.roles = TopicRoles.from_prefix(settings.topic_prefix)
        self.client_id = client_id
        self.clock = clock
        self.writer = Writer(
            settings.writer_dsn,
            settings.pg_schema,
            role=settings.pg_writer_role if settings.sink_set_role else None,
            connect_timeout=settings.sink_connect_timeout_s,
            command_timeout=settings.sink_command_timeout_s,
            clock=clock,
        )
        self.drainer = RollupDrainer(settings)
        self.consumer: AIOKafkaConsumer | None = None
        # Bounded so a rebalance is not held up by a long PostgreSQL outage.
        self.revoke_wait_s = max(1.0, settings.sink_session_timeout_ms / 1000 / 2)
        self._idle = asyncio.Event()  # set while no fetched batch is waiting to be written and committed
        self._idle.set()
        self._outstanding = 0
        self._inflight: asyncio.Task[None] | None = None
        self._revoking = False
        self._next_maintenance = 0.0
        self.retention = RowRetention.from_settings(settings)
        self._next_retention = 0.0
        self._committed: dict[TopicPartition, int] = {}
        self.stats: dict[str, int] = {"batches": 0, "records": 0, "deadletter": 0, "commit_failures": 0}
        self.started = asyncio.Event()  # set once the database is ready and the consumer started

    # --- lifecycle ------------------------------------------------------------------------

    async def _prepare_database(self, stop: asyncio.Event) -> bool:
        """Migrations (when configured) and partitions ahead; retried until PostgreSQL answers."""
        s = self.settings
        backoff = Backoff(s.sink_retry_initial_s, s.sink_retry_max_s)
        while not stop.is_set():
            try:
                if s.sink_migrate_on_start:
                    report = await migrate(s.migrate_dsn, s.pg_schema, Roles(s.pg_writer_role, s.pg_analyst_role),
                                           lookback_days=s.attribution_lookback_days)
                    log.info("migrations checked", extra={"schema": s.pg_schema, "applied": len(report.applied),
                                                          "version": report.current})
                await self.maintenance(force=True)
                return True
            except (OSError, Unavailable, asyncio.TimeoutError) as exc:
                error: Exception = exc
            except Exception as exc:  # asyncpg errors while starting up, e.g. CannotConnectNow
                if not type(exc).__module__.startswith("asyncpg"):
                    raise
                error = exc
            delay = backoff.failed()
            log.warning("PostgreSQL not ready; retrying", extra={"error": str(error), "delay_s": delay})
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        return False

    def _make_consumer(self) -> AIOKafkaConsumer:
        s = self.settings
        return AIOKafkaConsumer(
            **s.kafka_connection().client_args(),
            group_id=s.sink_group,
            client_id=self.client_id,
            enable_auto_commit=False,
            auto_offset_reset=s.sink_auto_offset_reset,
            isolation_level="read_committed",
            session_timeout_ms=s.sink_session_timeout_ms,
            heartbeat_interval_ms=max(100, s.sink_session_timeout_ms // 3),
            max_poll_interval_ms=s.sink_max_poll_interval_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        if not await self._prepare_database(stop):
            return
        consumer = self.consumer = self._make_consumer()
        consumer.subscribe(self.roles.all(), listener=_Rebalance(self))
        await consumer.start()
        drained = asyncio.Event()  # the drainer's own stop: set once the batches are done
        drainer = (asyncio.create_task(self.drainer.run(drained), name="rollup-drainer")
                   if self.settings.sink_rollup_interval_s > 0 else None)
        if drainer is not None:
            drainer.add_done_callback(_report_crash)
        self.started.set()
        log.info("sink started", extra={"group": self.settings.sink_group, "topics": self.roles.all(),
                                        "schema": self.settings.pg_schema})
        try:
            while not stop.is_set():
                await self.step(stop)
            await self._settle()
        finally:
            if self._inflight is not None:  # an error elsewhere: don't leave the write behind
                self._inflight.cancel()
                with contextlib.suppress(BaseException):
                    await self._inflight
            with contextlib.suppress(Exception):
                await consumer.stop()
            await self.writer.close()
            drained.set()
            if drainer is not None:  # a drain in progress finishes (or rolls back if cancelled)
                with contextlib.suppress(Exception):
                    await drainer
            log.info("sink stopped", extra=dict(self.stats))

    # --- one batch ------------------------------------------------------------------------

    async def step(self, stop: asyncio.Event) -> None:
        """Poll, decode, and hand the batch to a write task; the previous batch's write (and
        commit) runs meanwhile, so decoding (Python) overlaps PostgreSQL's work. Writes and
        commits stay strictly in batch order: a batch starts writing only once the one before
        it is written and committed."""
        assert self.consumer is not None
        s = self.settings
        got = await self.consumer.getmany(timeout_ms=s.sink_poll_timeout_ms, max_records=s.sink_max_records)
        batch: Batch | None = None
        if got:
            self._outstanding += 1
            self._idle.clear()
            batch = await self._decode(got)
        await self._settle()
        if got and batch is not None:
            self._inflight = asyncio.create_task(self._write_and_commit(got, batch, stop))
        if self._revoking:  # a rebalance waits for us: finish what we hold, take nothing new first
            await self._settle()
        if time.monotonic() >= self._next_maintenance:
            await self._settle()  # maintenance uses the writer's connection
            try:
                await self.maintenance()
            except Exception as exc:  # the next batch's write retries PostgreSQL anyway
                log.warning("partition maintenance failed; will retry", extra={"error": str(exc)})
                await self.writer.close()
                self._next_maintenance = time.monotonic() + min(60.0, s.sink_maintenance_interval_s)
        if self.retention.days and time.monotonic() >= self._next_retention:
            await self._settle()  # (the writer's connection again)
            await self.expire_rows()
        self._update_lag()

    async def _settle(self) -> None:
        """Wait for the batch being written (and committed), if any."""
        task, self._inflight = self._inflight, None
        if task is not None:
            await task

    def _batch_done(self) -> None:
        self._outstanding -= 1
        if self._outstanding <= 0:
            self._outstanding = 0
            self._idle.set()

    async def _decode(self, got: dict[TopicPartition, list]) -> Batch:
        s = self.settings
        now = self.clock()
        window = DayWindow.around(now, s.sink_max_row_age_days, s.sink_partitions_ahead_days, s.sink_retention_days)
        decoder = Decoder(self.roles, now=now, window=window)
        for records in got.values():
            for start in range(0, len(records), DECODE_CHUNK):
                decoder.feed(records[start:start + DECODE_CHUNK])
                await asyncio.sleep(0)  # let the write in flight read PostgreSQL's answers
        return decoder.batch

    async def _write_and_commit(self, got: dict[TopicPartition, list], batch: Batch, stop: asyncio.Event) -> None:
        try:
            await self._write_and_commit_once(got, batch, stop)
        finally:
            self._batch_done()

    async def _write_and_commit_once(self, got: dict[TopicPartition, list], batch: Batch,
                                     stop: asyncio.Event) -> None:
        s = self.settings
        metrics.BATCH_RECORDS.observe(batch.consumed)
        written = await write_until_written(self.writer, batch, initial_delay=s.sink_retry_initial_s,
                                            max_delay=s.sink_retry_max_s, stop=stop)
        if written is None:
            log.info("stopping with a batch unwritten; its offsets stay uncommitted",
                     extra={"records": batch.consumed})
            return
        self.stats["batches"] += 1
        self.stats["records"] += batch.consumed
        self.stats["deadletter"] += written.get("deadletter", 0)
        for tp, rs in got.items():
            metrics.RECORDS.labels(tp.topic, "consumed").inc(len(rs))
        if batch.tombstones:
            metrics.RECORDS.labels(self.roles.sessions, "tombstone").inc(batch.tombstones)
        if batch.unusable_identities:  # (the edge refuses these: only another producer writes them)
            metrics.RECORDS.labels(self.roles.events, "identity_ignored").inc(batch.unusable_identities)
            log.warning("a user_id or previous_guid that cannot be stored was ignored (its hit was written): "
                        "user_id must be 1 to 256 characters without NUL, previous_guid a lower-case UUID",
                        extra={"ignored": batch.unusable_identities})
        await self._commit({tp: rs[-1].offset + 1 for tp, rs in got.items()})

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert self.consumer is not None
        assigned = self.consumer.assignment()
        mine = {tp: off for tp, off in offsets.items() if tp in assigned}
        if len(mine) < len(offsets):
            log.info("not committing partitions revoked meanwhile", extra={"skipped": len(offsets) - len(mine)})
        if not mine:
            return
        try:
            await asyncio.wait_for(self.consumer.commit(mine), timeout=30)
        except (CommitFailedError, IllegalStateError, KafkaError, asyncio.TimeoutError) as exc:
            # Written but not committed: the records are read again later and written again, idempotently.
            self.stats["commit_failures"] += 1
            metrics.COMMIT_FAILURES.inc()
            log.warning("offset commit failed; the batch will be re-read", extra={"error": repr(exc)})
            return
        self._committed.update(mine)

    def _update_lag(self) -> None:
        assert self.consumer is not None
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            done = self._committed.get(tp)
            if high is not None and done is not None:
                metrics.LAG.labels(tp.topic, str(tp.partition)).set(max(0, high - done))

    # --- retention ------------------------------------------------------------------------

    async def expire_rows(self) -> dict[str, int]:
        """One step of `deadletter`/`late_hits`/`session_retractions`/`sessions` retention (sink.retention); again at the next
        batch while a backlog is waiting, else after the maintenance interval."""
        s = self.settings
        try:
            deleted, waiting = await self.retention.expire(await self.writer.connection(), self.clock())
        except Exception as exc:  # the next batch's write retries PostgreSQL anyway
            log.warning("row retention failed; will retry", extra={"error": str(exc)})
            await self.writer.close()
            self._next_retention = time.monotonic() + min(60.0, s.sink_maintenance_interval_s)
            return {}
        for table, count in deleted.items():
            if count:
                metrics.ROWS_EXPIRED.labels(table).inc(count)
        if any(deleted.values()):
            log.info("expired rows deleted", extra={**deleted, "more_waiting": waiting})
        self._next_retention = time.monotonic() + (0.0 if waiting else s.sink_maintenance_interval_s)
        return deleted

    # --- partitions -----------------------------------------------------------------------

    async def maintenance(self, force: bool = False) -> None:
        """Day partitions ahead of time, and retention. Runs every `sink_maintenance_interval_s`."""
        s = self.settings
        if not force and time.monotonic() < self._next_maintenance:
            return
        conn = await self.writer.connection()
        today = self.clock().astimezone(UTC).date()
        cutoff = retention_cutoff(s.sink_retention_days, self.clock())
        days = [d for d in window(today, s.sink_partitions_behind_days, s.sink_partitions_ahead_days)
                if cutoff is None or d >= cutoff]
        parts = self.writer.partitions
        for table in parts.tables:
            created = await parts.ensure(conn, table, days)
            if created:
                metrics.PARTITIONS_CREATED.inc(created)
        if cutoff is not None:
            dropped = await parts.drop_before(conn, cutoff)
            if dropped:
                metrics.PARTITIONS_DROPPED.inc(len(dropped))
        self._next_maintenance = time.monotonic() + s.sink_maintenance_interval_s

