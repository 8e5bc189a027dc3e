"""`touchstream forget GUID`: delete one device's data everywhere Touchstream keeps it;
`touchstream forget --user-id ID`: the same for every device of that person (SPEC section 5,
`person_devices`: the devices seen with the user id, and those linked to them).

First it reads the compacted `sessions` topic for the device's session ids: PostgreSQL has only
those the sink has written (`touchstream.device_sessions`). Then, in one PostgreSQL transaction,
it deletes the device's rows from `sessions`, `pageviews`, `events`, `devices`, `late_hits`,
`session_retractions`, `identities`, `device_links` (either end) and `person_devices` (the
persons it belonged to are then rebuilt from the edges that remain), and the `deadletter` rows that belong to it (keyed by the guid or one of
its session ids, carrying one of its hit ids, or whose payload contains the guid: in any
spelling a UUID parser reads, any case, with or without hyphens, braces or `urn:uuid:`).
Before that transaction commits it publishes, acknowledged by Kafka:

- a forget record (`schemas.hit.ForgetRecord`) on `hits`, keyed by the guid, so it reaches the
  sessionizer partition holding the device: the worker deletes the device's state (its table
  key), so the device's next hit starts afresh at session 1;
- a tombstone on the compacted `sessions` topic for each deleted session id (retracted ones
  included, and those found only on the topic), so compaction drops the device's session
  snapshots and retractions from Kafka too. Each goes to the partition holding the session's
  records (the device's `hits` partition, where the sessionizer writes them): compaction only
  drops a record that a tombstone of the same partition follows.

If Kafka cannot take them, the transaction is rolled back and nothing is deleted (exit 3).
Running it again is harmless.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from schemas.hit import ForgetRecord
from schemas.partitioning import Partitioner
from schemas.settings import ENV_PREFIX, KafkaSettings
from schemas.timefmt import UTC
from schemas.topics import Topics
from schemas.wire import encode
from touchstream.console import (
    EXIT_NO,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CliError,
    PgReadSettings,
    connect,
    error,
    load_settings,
    parse_guid,
    render_table,
)
from touchstream.device_sessions import session_ids_on_topic
from touchstream.persons import person_guids, user_id_problem

TABLES = ("sessions", "pageviews", "events", "devices", "late_hits", "session_retractions", "identities",
          "device_links", "person_devices", "deadletter")
_LINKS = "DELETE FROM device_links WHERE guid = $1::uuid OR previous_guid = $1::uuid"

# The device's dead letters: keyed by its guid (hits, edge refusals) or one of its session ids
# (sessions), about one of its hits, or with the guid anywhere in the original bytes. The edge
# dead-letters what the client sent, and accepts any spelling `uuid.UUID` reads (any case, no
# hyphens, braces, `urn:uuid:`), so keys and payloads are compared as bare hex digits ($1).
# `encode(..., 'escape')` reads any bytes as text.
DEADLETTER_WHERE = """
    regexp_replace(lower(record_key), '[-{}]|urn:|uuid:', '', 'g') = $1
    OR record_key = ANY($2::text[])
    OR hit_id = ANY($3::text[])
    OR strpos(replace(lower(encode(payload, 'escape')), '-', ''), $1) > 0
"""


class ForgetSettings(KafkaSettings, PgReadSettings):
    """Kafka (`TOUCHSTREAM_KAFKA_BOOTSTRAP`, `TOUCHSTREAM_TOPIC_PREFIX`, `TOUCHSTREAM_HITS_RETENTION_MS`)
    and PostgreSQL (`TOUCHSTREAM_PG_MIGRATE_DSN`, the schema owner: it deletes rows of every table; unset:
    `TOUCHSTREAM_PG_DSN`; `TOUCHSTREAM_PG_SCHEMA`)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    forget_kafka_timeout_s: float = Field(30.0, gt=0, description="longest `forget` waits for Kafka (connect, acks)")
    forget_scan_timeout_s: float = Field(
        300.0, gt=0, description="longest `forget` reads the sessions topic for the device's session ids"
    )


@dataclass
class Published:
    topic: str
    partition: int
    offset: int
    tombstones: int
    sessions_topic: str


@dataclass
class Outcome:
    guid: str
    counts: dict[str, int] = field(default_factory=dict)
    published: Published | None = None
    dry_run: bool = False


async def _device_ids(conn: Any, guid: str, on_topic: set[str]) -> tuple[list[str], list[str]]:
    """The device's session ids (retracted ones too: their retractions on `sessions` name the
    guid; and `on_topic`, those the sink has not written) and hit ids (as text), to find its
    dead letters and tombstone its session records."""
    sessions = sorted(on_topic.union(r[0] for r in await conn.fetch(
        "SELECT session_id::text FROM sessions WHERE guid = $1::uuid "
        "UNION SELECT session_id::text FROM session_retractions WHERE guid = $1::uuid", guid)))
    hits = [r[0] for r in await conn.fetch(
        "SELECT hit_id::text FROM pageviews WHERE guid = $1::uuid "
        "UNION SELECT hit_id::text FROM events WHERE guid = $1::uuid "
        "UNION SELECT hit_id::text FROM late_hits WHERE guid = $1::uuid", guid)]
    return sessions, hits


async def count_rows(conn: Any, guid: str) -> dict[str, int]:
    """What `forget` would delete, per table: the deletion itself, rolled back (so the persons it
    would rebuild are counted exactly as forget counts them). Changes nothing."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        counts, _ = await delete_rows(conn, guid)
    finally:
        await transaction.rollback()
    return counts


async def delete_rows(conn: Any, guid: str, on_topic: set[str] | None = None) -> tuple[dict[str, int], list[str]]:
    """Delete the device's rows (inside the caller's transaction): counts per table, and the
    session ids to tombstone (those deleted, and `on_topic`: the ones found on `sessions`)."""
    sessions, hits = await _device_ids(conn, guid, on_topic or set())
    counts: dict[str, int] = {}
    counts["deadletter"] = _deleted(await conn.execute(
        f"DELETE FROM deadletter WHERE {DEADLETTER_WHERE}", guid.replace("-", ""), sessions, hits))
    for table in ("pageviews", "events", "late_hits", "sessions", "session_retractions", "devices", "identities"):
        counts[table] = _deleted(await conn.execute(f"DELETE FROM {table} WHERE guid = $1::uuid", guid))
    counts["device_links"] = _deleted(await conn.execute(_LINKS, guid))
    # Its person is rebuilt without it: the rest may split, or stop being a person (their rows count).
    counts["person_devices"] = int(await conn.fetchval("SELECT person_rebuild(ARRAY[$1::uuid])", guid))
    return {t: counts[t] for t in TABLES}, sessions



def _deleted(status: str) -> int:
    # asyncpg returns the command tag, e.g. "DELETE 3"
    return int(status.split()[-1])


class Publisher:
    """The Kafka side: one idempotent producer, acks=all."""

    def __init__(self, settings: ForgetSettings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.producer: Any = None
        self.sessions_partitions: list[int] = []  # of the `sessions` topic, from the metadata read at start
        self.device_partition = Partitioner(1)  # key -> `hits` partition, once the partition count is known

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        timeout = self.settings.forget_kafka_timeout_s
        self.producer = AIOKafkaProducer(
            **self.settings.kafka_connection().client_args(), acks="all", enable_idempotence=True,
            request_timeout_ms=int(timeout * 1000), client_id="touchstream-forget",
        )
        try:
            await asyncio.wait_for(self.producer.start(), timeout)
        except Exception as exc:
            await self.stop()
            raise CliError(f"cannot reach Kafka at {self.settings.kafka_bootstrap}: {type(exc).__name__}: {exc} "
                           "(set TOUCHSTREAM_KAFKA_BOOTSTRAP); nothing was deleted", EXIT_UNAVAILABLE) from None
        # Asking aiokafka for a missing topic's partitions retries until the request timeout:
        # look the topics up in the cluster's metadata instead.
        try:
            cluster = await asyncio.wait_for(self.producer.client.fetch_all_metadata(), timeout)
        except Exception as exc:
            await self.stop()
            raise CliError(f"cannot read Kafka's metadata at {self.settings.kafka_bootstrap}: {type(exc).__name__}: "
                           f"{exc}; nothing was deleted", EXIT_UNAVAILABLE) from None
        for topic in (self.topics.hits, self.topics.sessions):
            if not cluster.partitions_for_topic(topic):
                await self.stop()
                raise CliError(f"Kafka has no topic {topic!r} (check TOUCHSTREAM_TOPIC_PREFIX, or run "
                               "`touchstream topics`); nothing was deleted", EXIT_USAGE)
        self.sessions_partitions = sorted(cluster.partitions_for_topic(self.topics.sessions))
        self.device_partition = Partitioner(len(cluster.partitions_for_topic(self.topics.hits)))

    async def publish(self, guid: str, tombstones: dict[str, set[int]], now: datetime) -> Published:
        """The forget record, then a tombstone per (session id, partition) in `tombstones`."""
        record = ForgetRecord(guid=guid, requested_at=now)
        timeout = self.settings.forget_kafka_timeout_s
        try:
            meta = await asyncio.wait_for(
                self.producer.send_and_wait(self.topics.hits, encode(record), key=guid.encode()), timeout)
            pending = [await self.producer.send(self.topics.sessions, None, key=sid.encode(), partition=p)
                       for sid, partitions in tombstones.items() for p in sorted(partitions)]
            if pending:
                await asyncio.wait_for(asyncio.gather(*pending), timeout)
        except Exception as exc:
            raise CliError(f"Kafka did not acknowledge the forget record: {type(exc).__name__}: {exc}; "
                           "the deletion was rolled back, nothing was deleted", EXIT_UNAVAILABLE) from None
        return Published(meta.topic, meta.partition, meta.offset, len(pending), self.topics.sessions)

    async def stop(self) -> None:
        if self.producer is not None:
            producer, self.producer = self.producer, None
            try:
                await producer.stop()
            except Exception:
                pass


async def forget(settings: ForgetSettings, guid: str, *, now: datetime | None = None) -> Outcome:
    """Delete the device's rows and publish its forget record (+ session tombstones); commit
    only once Kafka has acknowledged them."""
    return (await forget_devices(settings, [guid], now=now))[0]


async def forget_devices(settings: ForgetSettings, guids: list[str], *, now: datetime | None = None) -> list[Outcome]:
    """`forget` of several devices (a person's) in one PostgreSQL transaction: all or none."""
    publisher = Publisher(settings)
    await publisher.start()
    try:
        on_topic = {guid: await _sessions_on_topic(settings, publisher.sessions_partitions, guid) for guid in guids}
        conn = await connect(settings, "touchstream-forget", dsn=settings.migrate_dsn)
        outcomes: list[Outcome] = []
        try:
            async with conn.transaction():
                for guid in guids:
                    counts, sessions = await delete_rows(conn, guid, set(on_topic[guid]))
                    # Where each snapshot is: as found on the topic, else the device's partition
                    # (where the sessionizer writes them).
                    home = {publisher.device_partition(guid.encode())}
                    tombstones = {sid: on_topic[guid].get(sid) or home for sid in sessions}
                    published = await publisher.publish(guid, tombstones, now or datetime.now(UTC))
                    outcomes.append(Outcome(guid, counts, published))
        except CliError:
            raise
        except Exception as exc:  # PostgreSQL failed mid-way (the transaction is rolled back)
            state = ("a forget record was sent, but the deletion was rolled back" if outcomes
                     else "nothing was deleted")
            raise CliError(f"PostgreSQL failed: {type(exc).__name__}: {exc}; {state}: run forget again",
                           EXIT_UNAVAILABLE) from None
        finally:
            await conn.close()
    finally:
        await publisher.stop()
    return outcomes


async def _sessions_on_topic(settings: ForgetSettings, partitions: list[int], guid: str) -> dict[str, set[int]]:
    topic = Topics(settings.topic_prefix).sessions
    try:
        return await session_ids_on_topic(settings.kafka_connection().client_args(), topic, partitions, guid,
                                          settings.forget_scan_timeout_s)
    except Exception as exc:
        raise CliError(f"cannot read the session ids of the device on {topic}: {type(exc).__name__}: {exc} "
                       "(TOUCHSTREAM_FORGET_SCAN_TIMEOUT_S); nothing was deleted", EXIT_UNAVAILABLE) from None


async def dry_run(settings: ForgetSettings, guid: str) -> Outcome:
    conn = await connect(settings, "touchstream-forget", dsn=settings.migrate_dsn)
    try:
        return Outcome(guid, await count_rows(conn, guid), dry_run=True)
    finally:
        await conn.close()


async def person_dry_run(settings: ForgetSettings, user_id: str) -> list[Outcome]:
    """What `forget --user-id` would delete, per device of the person (changes nothing)."""
    conn = await connect(settings, "touchstream-forget", dsn=settings.migrate_dsn)
    try:
        return [Outcome(guid, await count_rows(conn, guid), dry_run=True) for guid in await person_guids(conn, user_id)]
    finally:
        await conn.close()


def _retention(ms: int) -> str:
    days, rest = divmod(ms, 86_400_000)
    if rest == 0:
        return f"{days} day{'s' if days != 1 else ''}"
    return f"{ms / 3_600_000:.1f} hours"


def render(outcome: Outcome, settings: ForgetSettings) -> str:
    rows: list[list[Any]] = [[t, outcome.counts[t]] for t in TABLES]
    rows.append(["total", sum(outcome.counts.values())])
    verb = "to delete" if outcome.dry_run else "deleted"
    lines = [f"{'dry run: ' if outcome.dry_run else ''}device {outcome.guid}, rows {verb} in schema "
             f"{settings.pg_schema!r}:", "",
             render_table(["table", f"rows {verb}"], rows, rule_before_last=True)]
    p = outcome.published
    if p is not None:
        hits = Topics(settings.topic_prefix).hits
        lines += [
            "",
            f"sessionizer: forget record on {p.topic} (partition {p.partition}, offset {p.offset}); the worker "
            "holding the device drops its state when it reaches it",
            f"sessions topic: {p.tombstones} tombstone{'s' if p.tombstones != 1 else ''} on {p.sessions_topic}",
            f"note: the device's raw hits stay in {hits} until its retention ({_retention(settings.hits_retention_ms)}) "
            "passes; a replay before then brings the device back (run forget again after one). Records already in "
            "flight through the pipeline may still land: run forget again once it has caught up.",
        ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="touchstream forget",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Delete one device's data: its rows in sessions, pageviews, events, devices, late_hits,
identities, device_links, person_devices and deadletter (keyed by the guid or one of its sessions, about one of its hits, or whose payload
holds the guid), in one PostgreSQL transaction, and print the rows deleted per table. Before
committing it publishes a forget record on the `hits` topic, keyed by the guid, so the
sessionizer deletes the device's state, and a tombstone on the compacted `sessions` topic for
each of its sessions (read from that topic first: those the sink has not written yet too).
If Kafka does not acknowledge them, nothing is deleted.

With --user-id ID instead of a GUID: the same for every device of that person (those seen with
the user id and those linked to them, SPEC section 5), in one transaction.""",
        epilog="""\
What it does not erase:
  - the raw hits on the `hits` topic: they stay until its retention passes (default 7 days,
    TOUCHSTREAM_HITS_RETENTION_MS). A replay of `hits` inside that window brings the device
    back; run forget again after such a replay. The `events` and `deadletter` topics keep
    their records until their own retention too.
  - records already in flight (hits the sessionizer or the sink has not processed yet) may
    land after the deletion: run forget again once the pipeline has caught up.
  - the tracker keeps the guid in the browser's local storage: later visits from the same
    browser are recorded again, under the same guid, from session 1.

Exit codes: 0 done, 1 no device known with --user-id, 2 bad guid/settings or not confirmed, 3 PostgreSQL or Kafka unreachable
(nothing deleted). Settings: TOUCHSTREAM_PG_MIGRATE_DSN (else TOUCHSTREAM_PG_DSN), TOUCHSTREAM_PG_SCHEMA,
TOUCHSTREAM_KAFKA_* (bootstrap, security), TOUCHSTREAM_TOPIC_PREFIX.""",
    )
    parser.add_argument("guid", metavar="GUID", nargs="?", help="the device's guid (a UUID; any case)")
    parser.add_argument("--user-id", metavar="ID",
                        help="instead of GUID: every device of the person seen with this user id (identify()), "
                             "and the devices linked to them")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--dry-run", action="store_true", help="only count what would be deleted; change nothing")
    return parser


def _confirm(what: str, previews: list[Outcome], settings: ForgetSettings) -> bool:
    print("\n\n".join(render(p, settings) for p in previews))
    print()
    try:
        answer = input(f"Delete all of it and forget {what}? Type 'yes' to go on: ")
    except EOFError:
        return False
    return answer.strip().lower() == "yes"


def _user_id(text: str) -> str:
    problem = user_id_problem(text)
    if problem:
        raise CliError(f"--user-id {problem}")
    return text


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        if (args.guid is None) == (args.user_id is None):
            raise CliError("give either a GUID or --user-id ID (one of them)")
        settings = load_settings(ForgetSettings)
        if args.user_id is not None:
            user_id = _user_id(args.user_id)
            what = f"the {{n}} device(s) of user id {user_id!r}"
            previews = asyncio.run(person_dry_run(settings, user_id))
            if not previews:
                error(f"no device is known with user id {user_id!r} in schema {settings.pg_schema!r}: nothing to delete")
                return EXIT_NO
            guids = [p.guid for p in previews]
        else:
            guid = parse_guid(args.guid)
            what, guids, previews = f"device {guid}", [guid], []
        if args.dry_run:
            previews = previews or [asyncio.run(dry_run(settings, guids[0]))]
            print("\n\n".join(render(p, settings) for p in previews))
            return EXIT_OK
        if not args.yes:
            if not sys.stdin.isatty():
                raise CliError("forget deletes data: confirm with --yes (stdin is not a terminal to ask on)")
            previews = previews or [asyncio.run(dry_run(settings, guids[0]))]
            if not _confirm(what.format(n=len(guids)), previews, settings):
                error("not confirmed: nothing was deleted")
                return EXIT_USAGE
        outcomes = asyncio.run(forget_devices(settings, guids))
    except CliError as exc:
        error(exc.message)
        return exc.code
    print("\n\n".join(render(o, settings) for o in outcomes))
    return EXIT_OK
