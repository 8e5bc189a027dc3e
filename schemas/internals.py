"""Private internals of pinned libraries that Touchstream relies on: every one of them, here.

Each access to a name a library keeps private is in this module, marked `# PRIVATE(<package>)`,
and listed in `INTERNALS`; no other module reaches into a library. The rest of the code depends
on the ports below (typed Protocols) and on the small adapters that implement them, and its
tests fake the ports, never a private attribute. `require()` runs when a component starts and
checks that every internal it needs still exists on the installed version, failing with the
names of what is missing: an upgrade that moved one is a clear error at start, not a wrong
result later. `pyproject.toml` pins these versions (`PINNED`; a unit test keeps the two equal).

    package             internal                                   what for (where)
    faust-streaming     aiokafka Consumer._getmany                 each fetch, `hits` to the inbox whole (sessionizer.transport)
                        Consumer._acked, _acked_index,             ack offset ranges without a message
                          _committed_offset, _n_acked              object per record (sessionizer.transport)
                        rocksdb Store._db_for_partition            a partition's RocksDB, written in batches (sessionizer.store)
                        App._extra_services                        start a service instance with the app (sessionizer.app)
    aiokafka            AIOKafkaProducer._sender (.sender_task)    notice a sender that died for good (ingest.publisher)
                        AIOKafkaConsumer._client                   metadata of a topic made after start (tests, benches)
    asyncpg             asyncpg.exceptions._base.DataError         the driver refused a value: the row's fault (sink.writer)
    prometheus-client   Histogram._upper_bounds, _buckets, _sum    the edge's histograms counted without locks (ingest.metrics)
    uvicorn             HttpToolsProtocol's parser callbacks       the edge's read deadline and header cap: a subclass
                          (on_message_begin, on_headers_complete,  arms a timer per request and counts header bytes
                          on_message_complete), .cycle, .loop,     (ingest.connection); not underscored, but not a
                          .app_state, .transport; STATUS_LINE      documented API either
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

from aiokafka import AIOKafkaProducer

from schemas.errors import TouchstreamError
from schemas.producer import BatchProducer

if TYPE_CHECKING:
    from faust.types import TP

# The versions pyproject.toml pins: the internals below were read on these.
PINNED = {
    "faust-streaming": "0.15.3",
    "aiokafka": "0.14.0",
    "asyncpg": "0.32.0",
    "prometheus-client": "0.26.0",
    "uvicorn": "0.54.0",
}


@dataclass(frozen=True)
class Internal:
    """One private name of a library: `owner` is "module" or "module:Class"; an attribute set on
    instances is found in the code of the class's methods."""

    package: str
    owner: str
    name: str
    used_by: str

    def __str__(self) -> str:
        return f"{self.owner.replace(':', '.')}.{self.name}"


INTERNALS: tuple[Internal, ...] = (
    Internal("faust-streaming", "faust.transport.drivers.aiokafka:Consumer", "_getmany", "sessionizer.transport"),
    Internal("faust-streaming", "faust.transport.consumer:Consumer", "_acked", "sessionizer.transport"),
    Internal("faust-streaming", "faust.transport.consumer:Consumer", "_acked_index", "sessionizer.transport"),
    Internal("faust-streaming", "faust.transport.consumer:Consumer", "_committed_offset", "sessionizer.transport"),
    Internal("faust-streaming", "faust.transport.consumer:Consumer", "_n_acked", "sessionizer.transport"),
    Internal("faust-streaming", "faust.stores.rocksdb:Store", "_db_for_partition", "sessionizer.store"),
    Internal("faust-streaming", "faust.app.base:App", "_extra_services", "sessionizer.app"),
    Internal("aiokafka", "aiokafka.producer.producer:AIOKafkaProducer", "_sender", "ingest.publisher"),
    Internal("aiokafka", "aiokafka.producer.sender:Sender", "sender_task", "ingest.publisher"),
    Internal("aiokafka", "aiokafka.consumer.consumer:AIOKafkaConsumer", "_client", "tests and benches"),
    Internal("aiokafka", "aiokafka.client:AIOKafkaClient", "force_metadata_update", "tests and benches"),
    Internal("asyncpg", "asyncpg.exceptions._base", "DataError", "sink.writer"),
    Internal("prometheus-client", "prometheus_client.metrics:Histogram", "_upper_bounds", "ingest.metrics"),
    Internal("prometheus-client", "prometheus_client.metrics:Histogram", "_buckets", "ingest.metrics"),
    Internal("prometheus-client", "prometheus_client.metrics:Histogram", "_sum", "ingest.metrics"),
    *(
        Internal("uvicorn", "uvicorn.protocols.http.httptools_impl:HttpToolsProtocol", name, "ingest.connection")
        for name in ("on_message_begin", "on_headers_complete", "on_message_complete", "data_received",
                     "cycle", "loop", "app_state", "transport")
    ),
    Internal("uvicorn", "uvicorn.protocols.http.httptools_impl", "STATUS_LINE", "ingest.connection"),
    Internal("uvicorn", "uvicorn.protocols.http.httptools_impl:RequestResponseCycle", "response_started",
             "ingest.connection"),
)


class MissingInternals(TouchstreamError):
    """An installed library lacks a private name Touchstream relies on (not the pinned version?)."""


def missing(internals: Iterable[Internal]) -> list[Internal]:
    """The internals that do not exist on the installed libraries."""
    return [internal for internal in internals if not _exists(internal)]


def _exists(internal: Internal) -> bool:
    module_name, _, class_name = internal.owner.partition(":")
    try:
        owner: Any = importlib.import_module(module_name)
    except ImportError:
        return False
    if class_name:
        owner = getattr(owner, class_name, None)
        if owner is None:
            return False
    return hasattr(owner, internal.name) or (inspect.isclass(owner) and _named_in_methods(owner, internal.name))


def _named_in_methods(cls: type, name: str) -> bool:
    """Whether code of `cls` (or a base) uses `name` as an attribute: how an attribute that only
    instances carry (set in __init__ and the like) is found without building one."""
    for klass in cls.__mro__:
        for member in vars(klass).values():
            code = getattr(getattr(member, "__func__", member), "__code__", None)
            if code is not None and name in code.co_names:
                return True
    return False


@cache
def require(*packages: str) -> None:
    """Start-up check: every internal of `packages` exists on the installed versions, or
    MissingInternals names each one that does not, with the versions installed and pinned."""
    gone = missing(i for i in INTERNALS if i.package in packages)
    if gone:
        lines = [
            f"  {i} (used by {i.used_by}): missing in {i.package} {_installed(i.package)}, read on {PINNED[i.package]}"
            for i in gone
        ]
        raise MissingInternals(
            "private parts of pinned libraries that Touchstream relies on are missing:\n" + "\n".join(lines)
            + "\ninstall the versions pyproject.toml pins (pip install -e .)"
        )


def _installed(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


# --- faust-streaming: the sessionizer's consumer -------------------------------------------


class ConsumerPort(Protocol):
    """What the sessionizer's processing task needs from its Kafka consumer (Faust's consumer
    with `RangeAcks`; a fake in tests)."""

    def assignment(self) -> set[TP]: ...

    def highwater(self, tp: TP) -> int | None: ...

    async def position(self, tp: TP) -> int | None: ...

    def ack_range(self, tp: TP, first: int, last: int) -> int: ...


Fetch = Callable[[Any, float], Awaitable[Any]]


class FetchHook:
    """Mixin for Faust's aiokafka `Consumer`: every fetch from the consumer thread, a
    `{TP: [records]}` mapping, passes through `intercept_fetch` (Faust has no bulk receive)."""

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        # PRIVATE(faust-streaming): Consumer._getmany, the one call every fetch passes through.
        return await self.intercept_fetch(active_partitions, timeout, super()._getmany)  # type: ignore[misc]

    async def intercept_fetch(self, active_partitions: set[TP] | None, timeout: float, fetch: Fetch) -> Any:
        """Override: fetch with `await fetch(active_partitions, timeout)`; return what Faust handles."""
        return await fetch(active_partitions, timeout)


class RangeAcks:
    """Mixin for Faust's `Consumer`: acks offset ranges (`Consumer.ack` wants one message object
    per offset); Faust's commit loop then commits them as its own."""

    def ack_range(self, tp: TP, first: int, last: int) -> int:
        """Mark offsets first..last of `tp` processed. Faust's commit loop then commits up to the
        highest offset with no unacked gap before it. Returns how many offsets were newly acked."""
        # PRIVATE(faust-streaming): the bookkeeping Consumer.ack keeps: _committed_offset,
        # _acked_index, _acked, _n_acked (Consumer.__init__ / class attribute).
        consumer: Any = self
        committed = consumer._committed_offset[tp]
        if committed is not None and first < committed:
            first = committed
        if first > last:
            return 0
        offsets: Sequence[int] = range(first, last + 1)
        acked_index = consumer._acked_index[tp]
        if acked_index and (first in acked_index or last in acked_index):
            offsets = [o for o in offsets if o not in acked_index]
        acked_index.update(offsets)
        consumer._acked[tp].extend(offsets)
        consumer._n_acked += len(offsets)
        return len(offsets)


def add_service(app: Any, service: Any) -> None:
    """Start `service` (an instance) with the Faust app and stop it with it: `app.service()`
    takes classes only, and the sessionizer's service is built with its collaborators."""
    app._extra_services.append(service)  # PRIVATE(faust-streaming): App._extra_services


# --- faust-streaming: the sessionizer's table store ----------------------------------------


class PartitionDb(Protocol):
    """A partition's local key-value store (a `rocksdict.Rdict`)."""

    def get(self, key: bytes) -> bytes | None: ...

    def items(self, from_key: bytes | None = None) -> Iterable[tuple[bytes, bytes]]:
        """In key order, from `from_key` on (rocksdict's `Rdict.items(from_key=...)`)."""
        ...

    def write(self, batch: Any, write_opt: Any = None) -> None: ...


class PartitionStore(Protocol):
    """A table's local storage, partition by partition, and its changelog (`FaustTableStore`;
    a fake in tests)."""

    @property
    def changelog_topic(self) -> str: ...

    @property
    def offset_key(self) -> bytes:
        """The key under which the partition's store keeps the changelog offset it holds."""
        ...

    def db(self, partition: int) -> PartitionDb: ...


class FaustTableStore:
    """`PartitionStore` of a Faust table with the RocksDB store."""

    def __init__(self, table: Any) -> None:
        self.table = table

    @property
    def changelog_topic(self) -> str:
        return str(self.table.changelog_topic_name)

    @property
    def offset_key(self) -> bytes:
        return bytes(self.table.data.offset_key)

    def db(self, partition: int) -> PartitionDb:
        # PRIVATE(faust-streaming): rocksdb Store._db_for_partition, the partition's Rdict
        # (opened when the partition is assigned, or by this call).
        return self.table.data._db_for_partition(partition)  # type: ignore[no-any-return]


# --- aiokafka: the edge's producer ---------------------------------------------------------


class ProducerPort(BatchProducer, Protocol):
    """What the edge's publisher needs from its Kafka producer (`KafkaProducer`; a fake in tests)."""

    client: Any  # aiokafka's client: fetch_all_metadata(), cluster

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def partitions_for(self, topic: str) -> Any: ...

    def sender_stopped(self) -> bool: ...


class KafkaProducer(AIOKafkaProducer):
    """aiokafka's producer, able to say when its sender is gone for good: a `ProducerPort`."""

    def sender_stopped(self) -> bool:
        """A fatal error (e.g. OutOfOrderSequenceNumber) ends aiokafka's sender task for good; the
        producer then accepts batches that never leave. aiokafka has no public flag for it."""
        sender = getattr(self, "_sender", None)  # PRIVATE(aiokafka): AIOKafkaProducer._sender
        task = getattr(sender, "sender_task", None) if sender is not None else None
        return task is not None and task.done()


# --- aiokafka: reading a topic made after a consumer started (tests, benches) --------------


async def partitions_of(consumer: Any, topic: str) -> list[int]:
    """The partition ids of `topic` as an AIOKafkaConsumer knows them, asking the broker again
    when the consumer started before the topic existed (aiokafka has no public refresh)."""
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer._client.force_metadata_update()  # PRIVATE(aiokafka): AIOKafkaConsumer._client
        partitions = consumer.partitions_for_topic(topic) or set()
    return sorted(partitions)


# --- asyncpg: the sink's error classification ----------------------------------------------


def is_driver_data_error(exc: BaseException) -> bool:
    """asyncpg's own DataError: its encoder refused a query argument before sending it (not
    exported by asyncpg; `asyncpg.DataError` is PostgreSQL's SQLSTATE class 22)."""
    from asyncpg.exceptions import _base  # PRIVATE(asyncpg): asyncpg.exceptions._base.DataError

    return isinstance(exc, _base.DataError)


# --- prometheus-client: the edge's histograms ----------------------------------------------


def histogram_bounds(histogram: Any) -> list[float]:
    """The upper bounds of an (unlabelled) Histogram's buckets, +Inf last."""
    return list(histogram._upper_bounds)  # PRIVATE(prometheus-client): Histogram._upper_bounds


def histogram_add(histogram: Any, bucket_counts: Sequence[float], total: float) -> None:
    """Add observations counted elsewhere: `bucket_counts[i]` more in bucket i (not cumulative,
    as `Histogram.observe` counts them) and `total` more to the sum."""
    # PRIVATE(prometheus-client): Histogram._buckets and _sum, the values observe() increments.
    for bucket, count in zip(histogram._buckets, bucket_counts, strict=True):
        if count:
            bucket.inc(count)
    if total:
        histogram._sum.inc(total)
