"""`touchstream forget GUID`: every table loses exactly the device's rows, nothing of the others;
a forget record keyed by the guid lands on `hits`, tombstones of its sessions on `sessions`."""

from __future__ import annotations

from typing import Any

import pytest

from cli_helpers import cli_env, journeys, run_cli  # noqa: F401  (fixtures)

from tests.topic_reader import read_topic
from schemas.hit import ForgetRecord
from schemas.topics import Topics
from schemas.wire import hit_codec
from touchstream import forget as forget_module

TABLES = ("sessions", "pageviews", "events", "devices", "late_hits", "identities", "device_links", "person_devices",
          "deadletter")
ORDER = {
    "sessions": "session_id", "pageviews": "occurred_at, hit_id", "events": "occurred_at, hit_id",
    "devices": "guid", "late_hits": "hit_id", "identities": "guid, user_id", "device_links": "guid, previous_guid",
    "person_devices": "guid",
    "deadletter": "consumed_topic, consumed_partition, consumed_offset, consumed_timestamp",
}


async def snapshot(conn: Any) -> dict[str, list[dict[str, Any]]]:
    return {t: [dict(r) for r in await conn.fetch(f"SELECT * FROM {t} ORDER BY {ORDER[t]}")] for t in TABLES}


def owner(table: str, row: dict[str, Any], journeys: Any) -> str | None:
    """Which device of the fixture a row belongs to (dead letters by what the fixture put in them)."""
    by_guid = {g: d for d, g in journeys.guids.items()}
    if table != "deadletter":
        return "A" if str(row["guid"]) == journeys.old_a else by_guid[str(row["guid"])]
    a_sessions = {journeys.sessions[n] for n in journeys.sessions if n.startswith("A")}
    key, payload = row["record_key"], bytes(row["payload"]).lower()
    if (key and key.lower() == journeys.guids["A"]) or key in a_sessions or row["hit_id"] == journeys.hits["pv_A"] \
            or journeys.guids["A"].encode() in payload:
        return "A"
    return by_guid.get(key) if key else None


def env_for(journeys: Any, services: Any, topic_prefix: str, **more: str) -> dict[str, str]:
    return cli_env(**{**journeys.env(), "TOUCHSTREAM_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
                      "TOUCHSTREAM_TOPIC_PREFIX": topic_prefix, **more})


def printed_counts(stdout: str) -> dict[str, int]:
    """The table of rows per table that forget prints."""
    counts = {}
    for line in stdout.split("\n"):
        cells = line.split()
        if len(cells) == 2 and (cells[0] in TABLES or cells[0] == "total") and cells[1].isdigit():
            counts[cells[0]] = int(cells[1])
    return counts


async def test_forget_deletes_exactly_the_device_everywhere_and_tells_the_sessionizer(
        journeys, services, topic_prefix):
    conn = await journeys.schema.connect()
    try:
        before = await snapshot(conn)
        guid = journeys.guids["A"]
        assert all(any(owner(t, r, journeys) == "A" for r in before[t]) for t in TABLES)  # A is in every table

        out = run_cli("forget", guid.upper(), "--yes", env=env_for(journeys, services, topic_prefix))
        assert out.returncode == 0, out.stderr
        after = await snapshot(conn)
    finally:
        await conn.close()

    for table in TABLES:
        kept = [r for r in before[table] if owner(table, r, journeys) != "A"]
        assert after[table] == kept, table  # nothing of another device changed
        assert len(before[table]) - len(after[table]) == journeys.rows["A"][table], table
    assert len(after["deadletter"]) == 3  # B's, C's and the keyless garbage one stay

    # The printed counts are the rows deleted per table.
    assert printed_counts(out.stdout) == {**journeys.rows["A"], "total": sum(journeys.rows["A"].values())}
    assert "retention (7 days)" in out.stdout

    topics = Topics(topic_prefix)
    hits = await read_topic(services.kafka_bootstrap, topics.hits, 1)
    assert len(hits) == 1
    assert hits[0].key == guid.encode()
    record = hit_codec.decode(hits[0].value)
    assert isinstance(record, ForgetRecord)
    assert (record.v, record.kind, record.guid) == (1, "forget", guid)
    assert f"forget record on {topics.hits} (partition {hits[0].partition}, offset {hits[0].offset})" in out.stdout

    a_sessions = sorted(journeys.sessions[n] for n in ("A1", "A2", "A3", "A4"))
    tombstones = await read_topic(services.kafka_bootstrap, topics.sessions, 4)
    assert sorted(t.key.decode() for t in tombstones) == a_sessions
    assert all(t.value is None for t in tombstones)

    # Again: nothing left to delete, and a second forget record (harmless).
    again = run_cli("forget", guid, "--yes", env=env_for(journeys, services, topic_prefix))
    assert again.returncode == 0, again.stderr
    assert printed_counts(again.stdout) == {**dict.fromkeys(TABLES, 0), "total": 0}
    assert len(await read_topic(services.kafka_bootstrap, topics.hits, 2)) == 2


async def test_without_yes_or_with_dry_run_nothing_is_deleted_or_sent(journeys, services, topic_prefix):
    env = env_for(journeys, services, topic_prefix)
    conn = await journeys.schema.connect()
    try:
        before = await snapshot(conn)
        out = run_cli("forget", journeys.guids["B"], env=env, input=b"yes\n")  # stdin is no terminal
        assert out.returncode == 2 and "confirm with --yes" in out.stderr
        dry = run_cli("forget", journeys.guids["B"], "--dry-run", env=env)
        assert dry.returncode == 0, dry.stderr
        assert dry.stdout.startswith(f"dry run: device {journeys.guids['B']}, rows to delete")
        assert printed_counts(dry.stdout) == {**journeys.rows["B"], "total": sum(journeys.rows["B"].values())}
        assert await snapshot(conn) == before
    finally:
        await conn.close()
    assert await read_topic(services.kafka_bootstrap, Topics(topic_prefix).hits, 0, settle=1.0) == []


async def test_kafka_trouble_deletes_nothing(journeys, services, topic_prefix, monkeypatch):
    conn = await journeys.schema.connect()
    try:
        before = await snapshot(conn)
        unreachable = run_cli("forget", journeys.guids["C"], "--yes", env=env_for(
            journeys, services, topic_prefix, **{"TOUCHSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:1",
                                                 "TOUCHSTREAM_FORGET_KAFKA_TIMEOUT_S": "5"}))
        assert unreachable.returncode == 3
        assert "cannot reach Kafka at 127.0.0.1:1" in unreachable.stderr and "nothing was deleted" in unreachable.stderr
        no_topics = run_cli("forget", journeys.guids["C"], "--yes",
                            env=env_for(journeys, services, "no-such-prefix."))
        assert no_topics.returncode == 2 and "Kafka has no topic 'no-such-prefix.hits'" in no_topics.stderr

        # Kafka fails after the rows were deleted, inside the transaction: it is rolled back.
        async def refuse(self: Any, guid: str, sessions: list[str], now: Any) -> Any:
            raise forget_module.CliError("Kafka did not acknowledge the forget record", 3)

        monkeypatch.setattr(forget_module.Publisher, "publish", refuse)
        settings = forget_module.ForgetSettings(
            kafka_bootstrap=services.kafka_bootstrap, topic_prefix=topic_prefix,
            pg_dsn=journeys.schema.dsn, pg_schema=journeys.schema.schema)
        with pytest.raises(forget_module.CliError):
            await forget_module.forget(settings, journeys.guids["C"])
        assert await snapshot(conn) == before
    finally:
        await conn.close()


async def test_invalid_guid(journeys, services, topic_prefix):
    out = run_cli("forget", "6f1c2b0e-4a57-4c3e-9d61", "--yes", env=env_for(journeys, services, topic_prefix))
    assert out.returncode == 2
    assert "is not a valid guid: a UUID has 32 hex digits, this has 20" in out.stderr


def test_help_is_honest_about_what_stays():
    out = run_cli("forget", "--help", env=cli_env())
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    assert "stay until its retention passes (default 7 days, TOUCHSTREAM_HITS_RETENTION_MS)" in text
    assert "A replay of `hits` inside that window brings the device back" in text


def run_on_terminal(args: list[str], env: dict[str, str], answer: bytes) -> tuple[int, str]:
    """`touchstream ARGS` with a terminal as stdin, answering its question with `answer`."""
    import os
    import pty
    import subprocess
    import sys

    from cli_helpers import REPO

    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "touchstream.cli", *args], env=env, cwd=REPO, stdin=follower,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        os.write(leader, answer)
        out, _ = proc.communicate(timeout=120)
        return proc.returncode, out.decode()
    finally:
        os.close(leader)
        os.close(follower)


async def test_on_a_terminal_it_asks_first(journeys, services, topic_prefix):
    env = env_for(journeys, services, topic_prefix)
    guid = journeys.guids["D"]
    conn = await journeys.schema.connect()
    try:
        before = await snapshot(conn)
        code, out = run_on_terminal(["forget", guid], env, b"no\n")
        assert code == 2 and "not confirmed: nothing was deleted" in out
        assert f"Delete all of it and forget device {guid}? Type 'yes' to go on:" in out
        assert printed_counts(out)["total"] == sum(journeys.rows["D"].values())  # the preview
        assert await snapshot(conn) == before
        code, out = run_on_terminal(["forget", guid], env, b"yes\n")
        assert code == 0, out
        assert await conn.fetchval("SELECT count(*) FROM sessions WHERE guid = $1::uuid", guid) == 0
        assert await conn.fetchval("SELECT count(*) FROM sessions") == len(before["sessions"]) - 1
    finally:
        await conn.close()


async def test_forget_reaches_sessions_only_on_the_topic_and_dead_letters_in_any_spelling(
        journeys, services, topic_prefix):
    """Sessions the sink has not written yet are only on the `sessions` topic; the edge accepts
    (and dead-letters) a guid in any spelling `uuid.UUID` reads."""
    from aiokafka import AIOKafkaProducer

    from cli_helpers import ROLES
    from datetime import datetime
    from schemas.timefmt import UTC
    from schemas.partitioning import Partitioner
    from schemas.wire import dead_letter, encode
    from sink.batch import decode_batch
    from sink.testing import RecordStream, session
    from sink.writer import Writer

    guid, other = journeys.guids["B"], journeys.guids["C"]
    topics = Topics(topic_prefix)
    unwritten = [session(guid=guid, session_index=2), session(guid=guid, session_index=3, status="closed")]
    not_b = session(guid=other, session_index=3)
    producer = AIOKafkaProducer(bootstrap_servers=services.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        partitions = len(await producer.partitions_for(topics.hits))
        home = Partitioner(partitions)(guid.encode())  # as the sessionizer: the device's `hits` partition
        elsewhere = (home + 1) % partitions  # (a merged device's sessions may sit on another)
        where = {unwritten[0].session_id: home, unwritten[1].session_id: elsewhere}
        for snap in unwritten:
            await producer.send_and_wait(topics.sessions, encode(snap), key=snap.session_id.encode(),
                                         partition=where[snap.session_id])
        await producer.send_and_wait(topics.sessions, encode(not_b), key=not_b.session_id.encode(), partition=home)
    finally:
        await producer.stop()

    bare = guid.replace("-", "")
    spelled = [  # as a client may send them, each a spelling the edge accepts
        dead_letter("ingest", "invalid hit", f'{{"guid":"{bare.upper()}","url":"nope"}}'.encode()),
        dead_letter("ingest", "invalid hit", f'{{"guid":"{{{guid.upper()}}}"}}'.encode(), key=f"urn:uuid:{bare}"),
        dead_letter("sessionizer", "refused", b'{"v":1}', key="{" + guid.upper() + "}"),
    ]
    rs = RecordStream()  # (on a partition the fixture's records do not use: rows are keyed by position)
    writer = Writer(journeys.schema.dsn, journeys.schema.schema, role="touchstream_writer")
    try:
        await writer.write_isolating(decode_batch([rs.record(ROLES.deadletter, d, partition=7) for d in spelled], ROLES, now=datetime.now(UTC)))
    finally:
        await writer.close()

    conn = await journeys.schema.connect()
    try:
        before = await snapshot(conn)
        out = run_cli("forget", guid, "--yes", env=env_for(journeys, services, topic_prefix))
        assert out.returncode == 0, out.stderr
        after = await snapshot(conn)
    finally:
        await conn.close()
    assert printed_counts(out.stdout)["deadletter"] == journeys.rows["B"]["deadletter"] + len(spelled)
    assert len(before["deadletter"]) - len(after["deadletter"]) == journeys.rows["B"]["deadletter"] + len(spelled)
    assert all(owner("deadletter", r, journeys) != "B" for r in after["deadletter"])

    records = await read_topic(services.kafka_bootstrap, topics.sessions, 3 + 3)
    tombstones = sorted((r.key.decode(), r.partition) for r in records if r.value is None)
    # The one in PostgreSQL and the two only on the topic (not C's), each where its snapshot is:
    # compaction drops a record only for a tombstone on its own partition.
    assert tombstones == sorted([(journeys.sessions["B1"], home), *where.items()])
    assert "3 tombstones" in out.stdout


async def test_forget_by_user_id_erases_every_device_of_the_person(journeys, services, topic_prefix):
    env = env_for(journeys, services, topic_prefix)
    conn = await journeys.schema.connect()
    try:
        before = await snapshot(conn)
        dry = run_cli("forget", "--user-id", "crm-c", "--dry-run", env=env)
        assert dry.returncode == 0, dry.stderr
        assert f"device {journeys.guids['C']}" in dry.stdout and f"device {journeys.guids['D']}" in dry.stdout
        assert await snapshot(conn) == before
        out = run_cli("forget", "--user-id", "crm-c", "--yes", env=env)
        assert out.returncode == 0, out.stderr
        after = await snapshot(conn)
    finally:
        await conn.close()
    for table in TABLES:
        kept = [r for r in before[table] if owner(table, r, journeys) not in ("C", "D")]
        assert after[table] == kept, table
    nobody = run_cli("forget", "--user-id", "crm-c", "--yes", env=env)
    assert nobody.returncode == 1 and "no device is known with user id 'crm-c'" in nobody.stderr
    both = run_cli("forget", journeys.guids["A"], "--user-id", "crm-a", "--yes", env=env)
    assert both.returncode == 2 and "one of them" in both.stderr
