"""The sessionizer's processing task: batches of hits through the pure core, durably, in order.

One task per worker does all of it (agent concurrency 1 in spirit, faust#606: nothing can be
committed past work still in progress). A *round*:

compute (holds the CPU)
1. take the fetched `hits` chunks waiting in the inbox (`sessionizer.transport`), up to
   `batch_max` records — whatever arrived while the previous round ran, so rounds grow with
   load and stay small (low latency) when traffic is light;
2. decode each record (bad ones become dead letters), advance the partition clock, and run
   `on_hit` / `on_close` on the device's state;
3. sweep (`sessionizer.sweep`): per partition, run `on_time` for the devices whose deadline the
   partition's event time has passed — closing quiet sessions (rule 7); and look at the next
   `idle_scan_max` stored devices (a cursor goes round each partition's RocksDB) for devices idle
   past the TTL, which leave the state (`machine.idle`: a changelog tombstone);
4. encode the outputs — the latest snapshot of each changed session for `sessions`, every
   pageview/event/late-hit record for `events`, dead letters for `deadletter` — and hand them
   to the producer; encode each touched device's final state (once per round) and the clocks;

durable (waits for Kafka)
5. wait until the broker acknowledged every output record;
6. write the states and clocks: changelog partition (acknowledged), then RocksDB
   (`sessionizer.store`);
7. ack the chunks' offsets; Faust commits them on its next commit.

5 → 6 → 7 in that order is the at-least-once argument (see `sessionizer.store`). The durable
part of round k runs while round k+1 is computed (a pipeline one round deep), which hides the
broker's acknowledgement time behind CPU work. That is safe because round k+1 reads the
states round k computed (the store's cache), round k+1's changelog is written only after
round k's (so the changelog, compacted, keeps the newest state), outputs of one partition are
handed to the producer in order (`sessionizer.output.Sender`), and offsets are acked per round
only once its own outputs and state are durable.

A failure while writing (Kafka unavailable) abandons the rounds in flight: the partitions are
reset from RocksDB (durable states only) and the same chunks are processed again, one round
at a time, until Kafka takes them; outputs already written are written again identically.
"""

from __future__ import annotations


import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiokafka.errors import KafkaError
from faust.types import TP

from schemas.backoff import Backoff
from schemas.errors import InvalidInput
from schemas.partitioning import Partitioner
from schemas.views import ForgetView, HitView, decode_hit_record, encode_view
from schemas.producer import PRODUCER_STATE_LOST
from schemas.timefmt import to_ms
from schemas.topics import Topics
from schemas.wire import WIRE_OPTIONS, dead_letter, encode
from sessionizer.clock import PartitionClock
from sessionizer.machine import (
    Counts, DeviceState, Emitted, Rules, StateLimit, idle, idle_state, next_deadline_ms, on_close, on_hit, on_time,
    peek_deadline_ms,
)
from sessionizer.output import BatchWriter, Sender
from sessionizer.stats import Stats
from sessionizer.store import DeviceStore
from sessionizer.sweep import DeadlineHeap, IdleCursor, stored_states
from sessionizer.transport import Chunk, Inbox

log = logging.getLogger("touchstream.sessionizer")

RETRYABLE = (KafkaError, asyncio.TimeoutError, OSError)
class PartitionState:
    """What the processor keeps per assigned, recovered `hits` partition."""

    __slots__ = ("tp", "clock", "heap", "open", "clock_saved", "idle")

    def __init__(self, tp: TP, clock: PartitionClock, heap: DeadlineHeap, open_: set[str] | None = None) -> None:
        self.tp = tp
        self.clock = clock
        self.heap = heap
        self.open: set[str] = set() if open_ is None else open_  # devices with an open session
        self.clock_saved = self.clock_state()
        self.idle = IdleCursor()

    def clock_state(self) -> tuple[int | None, int | None, int | None]:
        c = self.clock
        return c.newest_ms, c.arrived_ms, c.time_ms


class Round:
    """A computed round on its way to being durable."""

    __slots__ = ("chunks", "generation", "outputs", "states", "n_records", "n_hits", "n_dead", "n_out",
                 "n_states", "closed", "counts")

    def __init__(self, chunks: list[Chunk], generation: int, outputs: BatchWriter,
                 states: dict[int, list[tuple[bytes, bytes | None]]], n_hits: int, n_dead: int, n_out: int,
                 n_states: int, closed: int, counts: Counts) -> None:
        self.chunks = chunks
        self.generation = generation
        self.outputs = outputs
        self.states = states
        self.n_records = sum(len(c) for c in chunks)
        self.n_hits = n_hits
        self.n_dead = n_dead
        self.n_out = n_out
        self.n_states = n_states
        self.closed = closed
        self.counts = counts


class RoundWork:
    """What one round accumulates while its records are placed."""

    __slots__ = ("out", "dead", "touched", "taken", "n_hits")

    def __init__(self, rules: Rules) -> None:
        # Coalescing: the core notes which sessions changed and `out.flush()` builds one
        # snapshot per session (its newest) at the end of the round, instead of one per hit.
        self.out = Emitted(coalesce=True)
        self.dead: list[tuple[bytes | None, bytes, int]] = []
        self.touched: dict[int, dict[str, DeviceState | None]] = {}
        self.taken: list[Chunk] = []
        self.n_hits = 0


# A chunk decoded: the positions in the chunk of the records decoded, their views, their
# guids. Lists rather than a tuple per record: a round's decoded records stay alive while it is
# placed, and each tuple would be one more object for every young garbage collection of the
# round to walk (the views are untracked, and so are ints).
Decoded = tuple[list[int], list[Any], list[str]]


def _decode(key: bytes | None, raw: bytes | None) -> tuple[Any, str]:
    """A `hits` record as its View and its guid; raises InvalidInput with why it is refused."""
    if raw is None:
        raise InvalidInput("empty record (tombstone) on hits")
    obj = decode_hit_record(raw)  # msgspec; what it refuses, pydantic decodes or says why
    guid = obj.guid.lower()
    # The key places the device's state (partition); it must be the guid.
    if key is None or (key != guid.encode() and key.decode("utf-8", "replace").lower() != guid):
        raise InvalidInput("record key does not match its guid: hits must be keyed by guid")
    return obj, guid


class Processor:
    def __init__(
        self,
        app: Any,
        *,
        rules: Rules,
        topics: Topics,
        inbox: Inbox,
        store: DeviceStore,
        sender: Sender,
        partitions: int,
        batch_max: int,
        tick_s: float,
        sweep_max: int,
        stats: Stats,
        idle_scan_max: int = 500,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.app = app
        self.rules = rules
        self.topics = topics
        self.inbox = inbox
        self.store = store
        self.sender = sender
        # Set by the service that owns the producer: replaces it after a fatal producer error.
        self.replace_producer: Callable[[], Awaitable[None]] | None = None
        self.batch_max = batch_max
        self.tick_s = tick_s
        self.sweep_max = sweep_max
        self.idle_scan_max = idle_scan_max
        self.stats = stats
        self.wall_ms = wall_ms
        self.lock = asyncio.Lock()
        self.stopped = False
        self.partitions: dict[int, PartitionState] = {}
        self._ready: set[TP] = set()  # recovered, waiting to be set up by the task
        self._in_flight: tuple[Round, asyncio.Future[None]] | None = None
        self._events_partition = Partitioner(partitions)

    # -- rebalance and shutdown hooks (called by sessionizer.transport / the table) -------------

    async def before_revoke(self, revoked: set[TP]) -> None:
        """Faust is about to revoke partitions: let the round in flight become durable (or
        fail: then nothing of it was acked), then forget the revoked partitions."""
        async with self.lock:
            if not await self._drain():
                self._reset_all()
            dropped = self.inbox.drop(tp for tp in revoked if tp.topic == self.topics.hits)
            for tp in revoked:
                if tp.topic != self.topics.hits:
                    continue
                self._ready.discard(tp)
                if self.partitions.pop(tp.partition, None) is not None:
                    self.store.forget(tp.partition)
            if dropped:
                log.info("rebalance: dropped fetched hits of revoked partitions (not acked)", extra={"records": dropped})

    async def before_stop(self) -> None:
        """The worker stops: let the round in flight become durable (its offsets are acked before
        Faust's last commit), then take no more."""
        async with self.lock:
            self.stopped = True
            await self._drain()

    def on_recovered(self, active: set[TP]) -> None:
        """Faust finished recovering the table for these active changelog partitions; the
        matching `hits` partitions get their clock and deadline heap at the next round."""
        for tp in active:
            self._ready.add(TP(self.topics.hits, tp.partition))

    def _setup_ready(self) -> None:
        assignment = self.app.consumer.assignment()
        for tp in list(self._ready):
            self._ready.discard(tp)
            if tp not in assignment:
                continue
            started = time.perf_counter()
            heap = DeadlineHeap()
            open_: set[str] = set()
            rules = self.rules
            deadlines = []
            # From each state's header (format 3): no device is decoded, so this costs a read
            # of the partition's RocksDB (bench/recovery_bench.py).
            for guid, (deadline, has_open) in stored_states(self.store.items(tp.partition),
                                                            lambda raw: peek_deadline_ms(raw, rules)):
                deadlines.append((guid, deadline))
                if has_open:
                    open_.add(guid)
            heap.rebuild(deadlines)
            self.store.forget(tp.partition)
            self.partitions[tp.partition] = PartitionState(tp, self.store.load_clock(tp.partition), heap, open_)
            log.info(
                "partition ready", extra={"partition": tp.partition, "open_devices": len(open_),
                                          "deadlines": len(heap), "clock": self.partitions[tp.partition].clock,
                                          "seconds": round(time.perf_counter() - started, 3)},
            )

    def _reset_all(self) -> None:
        """Back to what RocksDB holds (durable states only): caches, clocks and heaps."""
        self.store.forget_all()
        for ps in self.partitions.values():
            self._ready.add(ps.tp)
        self.partitions.clear()
        self._setup_ready()

    # -- the task ---------------------------------------------------------------------------

    async def run(self) -> None:
        while not self.app.should_stop and not self.stopped:
            await self.inbox.wait(self.tick_s)
            async with self.lock:
                if self.stopped:
                    return
                if self._in_flight is not None and self._in_flight[1].done():
                    await self._settle()
                if self._ready:
                    self._setup_ready()
                chunks = self.inbox.take(self.batch_max)
                if chunks:
                    if self.stats.first_taken is None:
                        self.stats.first_taken = time.time()
                        self.stats.first_taken_cpu = time.thread_time()
                    # Faust's livelock detector watches the stream inbound time of each
                    # partition; these records reach no stream, so tell its monitor here.
                    inbound = getattr(self.app.monitor, "stream_inbound_time", None)
                    if inbound is not None:
                        now = time.monotonic()
                        for chunk in chunks:
                            inbound[chunk.tp] = now
                computed = await self._compute(chunks)
                if await self._settle(computed) and computed is not None:
                    self._in_flight = (computed, asyncio.ensure_future(self._durable(computed)))

    async def _settle(self, computed: Round | None = None) -> bool:
        """Wait for the round in flight. If it failed, process its chunks and those of the round
        just computed (which built on it) again, from the durable state, until Kafka takes them;
        then `computed` is done with (False: do not write it)."""
        if self._in_flight is None:
            return True
        previous, task = self._in_flight
        self._in_flight = None
        try:
            await task
            return True
        except RETRYABLE as exc:
            error: BaseException = exc
        chunks = list(previous.chunks)
        if computed is not None:
            computed.outputs.discard()
            chunks += computed.chunks
        await self._redo(chunks, error)
        return False

    async def _redo(self, chunks: list[Chunk], error: BaseException) -> None:
        backoff = Backoff(0.2, 10.0)
        while True:
            delay = backoff.failed()
            self.stats.retries += 1
            log.warning("writing to Kafka failed; processing the chunks again",
                        extra={"error": repr(error), "chunks": len(chunks), "delay_s": delay})
            if isinstance(error, PRODUCER_STATE_LOST) and self.replace_producer is not None:
                try:
                    await self.replace_producer()
                except Exception as exc:  # Kafka still away: the next attempt tries again
                    log.warning("could not replace the producer", extra={"error": repr(exc)})
            self._reset_all()
            await asyncio.sleep(delay)
            if self.app.should_stop or self.stopped or self.app.rebalancing:
                return  # abandoned: nothing acked, so processed again (here or by the next owner)
            computed = await self._compute(chunks)
            if computed is None:
                return
            try:
                await self._durable(computed)
                return
            except RETRYABLE as exc:
                error = exc

    async def _drain(self) -> bool:
        """Let the round in flight finish; False if it failed (then nothing of it was acked)."""
        if self._in_flight is None:
            return True
        _, task = self._in_flight
        self._in_flight = None
        try:
            await task
        except RETRYABLE as exc:
            log.warning("round abandoned at rebalance/stop", extra={"error": repr(exc)})
            return False
        return True

    # -- compute ------------------------------------------------------------------------------

    async def _compute(self, chunks: list[Chunk]) -> Round | None:
        """One round's CPU work, in named steps: decode and place the chunks' records, sweep
        deadlines, update the heaps, hand the outputs to the producer, encode the states and
        clocks. Each step's CPU time goes to `Stats.steps` (read per round, not per hit)."""
        generation = self.app.consumer_generation_id
        work = RoundWork(self.rules)
        step = self.stats.step
        cpu = time.thread_time
        decode_s = 0.0
        t0 = cpu()
        for chunk in chunks:
            ps = self._partition_for(chunk, generation)
            if ps is not None:
                work.taken.append(chunk)
                t = cpu()
                decoded = self._decode_chunk(chunk, work)
                decode_s += cpu() - t
                self._place_chunk(chunk, decoded, ps, work)
        t1 = cpu()
        step("decode", decode_s)
        step("place", t1 - t0 - decode_s)
        closed = await self._sweep(work.touched, work.out)
        t2 = cpu()
        step("sweep", t2 - t1)
        self._remove_idle(work.touched)
        t3 = cpu()
        step("idle", t3 - t2)
        self._update_deadlines(work.touched)
        t4 = cpu()
        step("deadlines", t4 - t3)
        work.out.flush()  # the round's session snapshots, now: the next round changes the states
        t5 = cpu()
        step("snapshots", t5 - t4)
        outputs = BatchWriter(self.sender)
        n_out = self._add_outputs(outputs, work.out, work.dead, work.touched)
        outputs.submit()  # on their way while the previous round finishes and this one waits
        t6 = cpu()
        step("outputs", t6 - t5)
        clocks = self._clocks_to_save(closed)
        encoded = self.store.encode(work.touched, clocks)
        step("states", cpu() - t6)
        if not work.taken and not n_out and not encoded:
            return None
        n_closed = sum(closed.values())
        self.stats.closed_by_time += n_closed
        n_states = sum(len(s) for s in work.touched.values())
        return Round(work.taken, generation, outputs, encoded, work.n_hits, len(work.dead), n_out, n_states, n_closed,
                     work.out.counts)

    def _partition_for(self, chunk: Chunk, generation: int) -> PartitionState | None:
        """The set-up partition a chunk belongs to, or None to skip it (fetched before a
        rebalance, or revoked since: never acked, so fetched again by the partition's owner)."""
        if chunk.generation != generation:
            return None
        ps = self.partitions.get(chunk.tp.partition)
        if ps is None:
            if chunk.tp not in self.app.consumer.assignment():
                return None
            self._ready.add(chunk.tp)  # assigned but not set up yet (should not happen): do it now
            self._setup_ready()
            ps = self.partitions[chunk.tp.partition]
        return ps

    def _decode_chunk(self, chunk: Chunk, work: RoundWork) -> Decoded:
        """The chunk's records decoded (see `Decoded`); refused ones become dead letters."""
        positions: list[int] = []
        views: list[Any] = []
        guids: list[str] = []
        keys = chunk.keys
        for i, value in enumerate(chunk.values):
            try:
                obj, guid = _decode(keys[i], value)
            except InvalidInput as exc:
                work.dead.append(self._dead_letter(chunk, i, exc.reason, exc.errors))
                continue
            positions.append(i)
            views.append(obj)
            guids.append(guid)
        return positions, views, guids

    def _place_chunk(self, chunk: Chunk, decoded: Decoded, ps: PartitionState, work: RoundWork) -> None:
        """Advance the partition's clock and run the core on each decoded record's device."""
        partition = chunk.tp.partition
        clock = ps.clock
        states = work.touched.setdefault(partition, {})
        store_get = self.store.get
        rules = self.rules
        out = work.out
        offsets = chunk.offsets
        values = chunk.values
        positions, views, guids = decoded
        for i, obj, guid in zip(positions, views, guids):
            offset = offsets[i]
            kind = type(obj)
            if kind is ForgetView:
                # `touchstream forget`: drop the device's state (a changelog tombstone), emit
                # nothing, and leave event time alone (the record carries no hit time).
                if guid in states or store_get(partition, guid) is not None:
                    states[guid] = None
                continue
            occurred = to_ms(obj.occurred_at)
            newest = clock.newest_ms
            if newest is None or occurred > newest:
                event_time = clock.observe(occurred, to_ms(obj.received_at))
            else:  # received_at only matters for a new newest hit (time_ms was set with newest_ms)
                event_time = clock.time_ms if clock.time_ms is not None else occurred
            known = guid in states
            state = states[guid] if known else store_get(partition, guid)
            mark = len(out.records)
            try:
                # `offset`: the core ignores a record at or below the newest offset it applied
                # to the device, so a batch processed again after a crash emits nothing twice.
                if kind is HitView:
                    value = values[i]
                    state = on_hit(state, obj, rules, event_time, out, offset=offset, occurred_ms=occurred,
                                   weight=(len(value) if value is not None else 0) + 64)
                    work.n_hits += 1
                else:
                    state = on_close(state, obj, rules, event_time, out, offset=offset)
            except StateLimit as exc:  # the device may not grow: the hit is refused, with why
                self.stats.refused += 1
                work.dead.append(self._dead_letter(chunk, i, str(exc), [], hit_id=obj.hit_id))
                if state is not None:
                    states[guid] = state  # (it may have shrunk)
                continue
            except Exception as exc:  # a bug in the core must not stop the worker: dead-letter the hit
                log.exception("session core failed; hit dead-lettered",
                              extra={"topic": ps.tp.topic, "partition": partition, "offset": offset})
                del out.records[mark:]  # (its noted session changes are built at flush: harmless)
                work.dead.append(self._dead_letter(
                    chunk, i, f"sessionizer error: {type(exc).__name__}: {exc}", [],
                    hit_id=getattr(obj, "hit_id", None),
                ))
                continue
            if state is not None or known or store_get(partition, guid) is not None:
                states[guid] = state  # (None for a device never stored: nothing to write)

    def _dead_letter(self, chunk: Chunk, i: int, reason: str, errors: list[Any], *,
                     hit_id: str | None = None) -> tuple[bytes | None, bytes, int]:
        """The dead letter of the chunk's record at position `i`."""
        partition = chunk.tp.partition
        key = chunk.keys[i]
        # (schemas.wire.dead_letter cuts an oversized payload: a dead letter must fit in a record)
        letter = dead_letter("sessionizer", reason, chunk.values[i] or b"", errors=errors, topic=self.topics.hits,
                             partition=partition, offset=chunk.offsets[i], key=key, hit_id=hit_id)
        return key, encode(letter), partition

    def _update_deadlines(self, touched: dict[int, dict[str, DeviceState | None]]) -> None:
        """Deadlines (and the open-session count) follow the new states."""
        rules = self.rules
        for partition, states in touched.items():
            ps = self.partitions[partition]
            heap, open_ = ps.heap, ps.open
            for guid, state in states.items():
                heap.set(guid, None if state is None else next_deadline_ms(state, rules))
                if state is not None and state.open_sessions():
                    open_.add(guid)
                else:
                    open_.discard(guid)

    def _remove_idle(self, touched: dict[int, dict[str, DeviceState | None]]) -> None:
        """The next `idle_scan_max` stored devices (round robin over each partition's RocksDB):
        those idle past the TTL leave the state (machine.idle; a tombstone is written)."""
        rules = self.rules
        if not rules.idle_after_ms:
            return
        if not self.partitions:
            return
        # Shared evenly, so a large partition does not keep the scan from the others.
        budget = max(1, self.idle_scan_max // len(self.partitions))
        store = self.store
        for partition, ps in self.partitions.items():
            now = ps.clock.time_ms
            if now is None:
                continue
            states = touched.setdefault(partition, {})

            def is_idle(key: bytes, raw: bytes) -> bool:
                guid = key.decode()
                if guid in states:  # touched in this round: not idle
                    return False
                known, state = store.cached(partition, guid)  # (the cache may be ahead of RocksDB)
                if known:
                    return state is not None and idle_state(state, rules, now)
                return idle(raw, rules, now)

            _, gone = ps.idle.scan(store.items_from(partition, ps.idle.cursor), budget, is_idle)
            for guid in gone:
                states[guid] = None
            self.stats.idle_removed += len(gone)

    def _clocks_to_save(self, closed: dict[int, int]) -> dict[int, PartitionClock]:
        """A clock is saved when it saw a newer hit, or when the sweep closed something with it
        (then its event time was used); merely advancing with the wall clock while idle is not
        worth a write every tick."""
        clocks: dict[int, PartitionClock] = {}
        for partition, ps in self.partitions.items():
            now_state, saved = ps.clock_state(), ps.clock_saved
            if now_state != saved and (partition in closed or now_state[:2] != saved[:2]):
                clocks[partition] = ps.clock
                ps.clock_saved = now_state
        return clocks

    async def _sweep(self, touched: dict[int, dict[str, DeviceState | None]], out: Emitted) -> dict[int, int]:
        """Run on_time for the devices whose deadline their partition's event time has passed;
        returns how many per partition."""
        rules = self.rules
        store = self.store
        wall = self.wall_ms()
        closed: dict[int, int] = {}
        budget = self.sweep_max
        for partition, ps in self.partitions.items():
            heap = ps.heap
            nxt = heap.next_deadline()
            if nxt is None:
                continue
            caught_up = await self._caught_up(ps.tp)
            now = ps.clock.now(wall, caught_up)
            if now is None or nxt > now:
                continue
            due = heap.pop_due(now, budget)
            if not due:
                continue
            states = touched.setdefault(partition, {})
            for guid in due:
                state = states[guid] if guid in states else store.get(partition, guid)
                if state is None:
                    continue
                states[guid] = on_time(state, rules, now, out)
                closed[partition] = closed.get(partition, 0) + 1
            budget -= len(due)
            if budget <= 0:
                break
        return closed

    async def _caught_up(self, tp: TP) -> bool:
        """Lag 0: nothing of the partition waits in the inbox, and everything up to the broker's
        high watermark (as of the last fetch response) has been handed over and processed."""
        if self.inbox.pending(tp) or self.inbox.full():
            # (While the inbox is full `hits` is left out of the fetches, so the high watermark
            # seen may be stale: do not call anything caught up then.)
            return False
        consumer = self.app.consumer
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # not assigned any more, or the consumer is restarting
            return False
        if highwater is None:
            return False
        delivered = self.inbox.delivered(tp)
        if delivered is not None:
            return delivered + 1 >= highwater
        # Nothing received since the partition was assigned: ask the consumer where it stands.
        try:
            position = await asyncio.wait_for(consumer.position(tp), 2.0)
        except Exception:
            return False
        return position is not None and position >= highwater

    def _add_outputs(self, writer: BatchWriter, out: Emitted, dead: list[tuple[bytes | None, bytes, int]],
                     touched: dict[int, dict[str, DeviceState | None]]) -> int:
        topics = self.topics
        # Co-partitioning (as Kafka Streams does): a device's snapshots and records go to the
        # partition number of its `hits` partition — every topic has one partition count
        # (`sessionizer.app.ensure_topics` refuses to start otherwise). A device's state lives
        # in one `hits` partition for good, so every snapshot of a session lands in one
        # partition of the compacted `sessions` topic; and for `events`, keyed by guid, it is
        # the partition the default partitioner picks, since the edge keys hits by guid with it.
        # A dict lookup instead of a murmur2 of every new session id.
        home = {guid: partition for partition, states in touched.items() for guid in states}
        # Only the newest snapshot of each session matters (the topic is compacted and the
        # sink keeps the highest version), so a session changed by many hits is sent once.
        latest: dict[str, dict[str, Any]] = {}
        for snap in out.sessions:
            sid = snap["session_id"]
            prev = latest.get(sid)
            if prev is None or snap["version"] > prev["version"]:
                latest[sid] = snap
        add = writer.add
        sessions_topic = topics.sessions
        by_key = self._events_partition  # (a device without a stored state: a dropped bot's hit)
        for sid, snap in latest.items():
            guid = snap["guid"]
            partition = home.get(guid)
            if partition is None:
                partition = by_key(guid.encode())
            add(sessions_topic, partition, sid.encode(), orjson.dumps(snap, option=WIRE_OPTIONS))
        events_topic = topics.events
        for rec in out.records:
            guid = rec.guid
            key = guid.encode()
            partition = home.get(guid)
            if partition is None:
                partition = by_key(key)
            add(events_topic, partition, key, encode_view(rec))
        for key, value, source_partition in dead:
            partition = by_key(key) if key else source_partition % by_key.partitions
            add(topics.deadletter, partition, key, value)
        self.stats.sessions_out += len(latest)
        self.stats.records_out += len(out.records)
        return len(latest) + len(out.records) + len(dead)

    # -- durable ------------------------------------------------------------------------------

    async def _durable(self, r: Round) -> None:
        started = time.perf_counter()
        await r.outputs.wait()                                           # 5. outputs acked
        if r.states:
            await self.store.write(r.states, BatchWriter(self.sender), self.stats.step)  # 6. changelog, RocksDB
        consumer = self.app.consumer                                     # 7. offsets acked
        if r.chunks and self.app.consumer_generation_id == r.generation:
            for chunk in r.chunks:
                consumer.ack_range(chunk.tp, chunk.ack_from, chunk.last_offset)
        stats = self.stats
        stats.wait_s += time.perf_counter() - started
        stats.on_round(r.n_records, r.n_hits, r.n_dead, r.n_states)
        stats.arrival.add(r.counts)
        stats.last_durable = time.time()
        if r.n_records:
            stats.last_records_durable = stats.last_durable
            stats.last_records_durable_cpu = time.thread_time()

    def open_sessions(self) -> int:
        return sum(len(ps.open) for ps in self.partitions.values())
