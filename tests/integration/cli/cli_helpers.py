"""Helpers and fixtures of the CLI tests (import, report, journey, forget).

This folder has no __init__.py (like the other integration folders), so pytest puts it on
sys.path and the test modules import these by module name; the fixtures are imported into
each test module.

The hand-built journey (conversion credits worked out by hand in test_cli_report.py).
T = 2026-03-20 12:00 UTC.

    A  A1 T-6d Paid Search (google/cpc/spring)   A2 T-2d Direct (bounce)
       A3 T-1d Email (newsletter/email/march)    A4 T Direct (still open)
       a chat_open in A1 (not a conversion); lead at T-1d+10m (contact_form) in A3;
       appointment at T+5m (scheduler) in A4; one late hit
    B  B1 T-1d Organic Social (facebook/social); lead at T-1d+2m (chat)
    C  C1 T-3d Direct, C2 T-1d Direct; lead at T-1d+1m (chat)
    D  D1 T Referral; a chat_open event only

Identity (migration 0009): A's pageviews carry user id "crm-a" and an older GUID of A (`old_a`: its
storage was cleared once; nothing else of it is kept) as previous_guid; C's carry "crm-c"; D's carry
C as their previous_guid (D is C's new GUID). So persons: crm-a = {A, old_a}, crm-c = {C, D}.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest_asyncio

from schemas.timefmt import UTC
from schemas.wire import dead_letter
from sink.batch import TopicRoles, decode_batch
from sink.testing import RecordStream, event, late_hit, pageview, session
from sink.writer import Writer

REPO = Path(__file__).resolve().parents[3]
T = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
D = timedelta(days=1)
M = timedelta(minutes=1)
ROLES = TopicRoles.from_prefix("cli.")
SITE = "www.oakridge-apts.com"

# name -> (device, start, channel, utm source, medium, campaign, pageviews, events, status, landing path, exit path)
SESSIONS = {
    "A1": ("A", T - 6 * D, "Paid Search", "google", "cpc", "spring", 3, 1, "closed", "/floorplans", "/amenities"),
    "A2": ("A", T - 2 * D, "Direct", None, None, None, 1, 0, "closed", "/", "/"),
    "A3": ("A", T - 1 * D, "Email", "newsletter", "email", "march", 2, 1, "closed", "/specials", "/contact"),
    "A4": ("A", T, "Direct", None, None, None, 2, 1, "open", "/", "/schedule"),
    "B1": ("B", T - 1 * D, "Organic Social", "facebook", "social", None, 1, 1, "closed", "/", "/"),
    "C1": ("C", T - 3 * D, "Direct", None, None, None, 2, 0, "closed", "/", "/floorplans"),
    "C2": ("C", T - 1 * D, "Direct", None, None, None, 1, 1, "closed", "/contact", "/contact"),
    "D1": ("D", T, "Referral", None, None, None, 1, 1, "closed", "/", "/"),
}
USER_IDS = {"A": "crm-a", "C": "crm-c"}
# name -> (session, time, event name, module)
EVENTS = {
    "chat_A": ("A1", T - 6 * D + 4 * M, "chat_open", "chat"),
    "lead_A": ("A3", T - 1 * D + 10 * M, "lead", "contact_form"),
    "appt_A": ("A4", T + 5 * M, "appointment", "scheduler"),
    "lead_B": ("B1", T - 1 * D + 2 * M, "lead", "chat"),
    "lead_C": ("C2", T - 1 * D + 1 * M, "lead", "chat"),
    "chat_D": ("D1", T + 1 * M, "chat_open", "chat"),
}


@dataclass
class Journeys:
    """What the fixture wrote: ids by name, and the expected row counts per device and table."""

    schema: Any  # the PgSchema
    guids: dict[str, str]
    sessions: dict[str, str]  # session name -> session_id
    hits: dict[str, str] = field(default_factory=dict)  # event name -> hit_id
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # device -> table -> rows
    old_a: str = ""  # A's GUID before a storage clear: only in device_links and person_devices

    def env(self) -> dict[str, str]:
        return self.schema.env()


def cli_env(**more: str) -> dict[str, str]:
    """The environment of a `touchstream` subprocess: this one's, without stray TOUCHSTREAM_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHSTREAM_")}
    for name in ("TOUCHSTREAM_KAFKA_BOOTSTRAP", "TOUCHSTREAM_PG_DSN"):  # the services fixture exports these
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(more)
    return env


def run_cli(*args: str, env: dict[str, str], input: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`touchstream ARGS` as a user runs it (a new process, settings from the environment)."""
    proc = subprocess.run(
        [sys.executable, "-m", "touchstream.cli", *args], env=env, cwd=REPO, input=input,
        capture_output=True, timeout=timeout,
    )
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


@pytest_asyncio.fixture
async def journeys(migrated: Any) -> Journeys:
    """The hand-built journeys above, written by the real sink writer (devices derived by it),
    plus pageviews, a late hit and dead letters of device A and of the others."""
    guids = {d: str(uuid.uuid4()) for d in "ABCD"}
    rs = RecordStream()
    records = []
    j = Journeys(migrated, guids, {})
    j.rows = {d: dict.fromkeys(("sessions", "pageviews", "events", "devices", "late_hits", "identities",
                                "device_links", "person_devices", "deadletter"), 0)
              for d in "ABCD"}
    j.old_a = str(uuid.uuid4())
    # Rows forget deletes: the link D -> C at either end; A's person rows: its own and old_a's (alone
    # without A, old_a is nobody's); C's: its own and D's (D keeps nothing that names a person).
    for dev, rows in (("A", (1, 1, 2)), ("C", (1, 1, 2)), ("D", (0, 1, 1))):
        j.rows[dev].update(zip(("identities", "device_links", "person_devices"), rows, strict=True))
    identity = {"A": {"user_id": USER_IDS["A"], "previous_guid": j.old_a}, "C": {"user_id": USER_IDS["C"]},
                "D": {"previous_guid": guids["C"]}}
    index: dict[str, int] = {}
    for name, (dev, start, channel, source, medium, campaign, pvs, evs, status, landing, exit_) in SESSIONS.items():
        index[dev] = index.get(dev, 0) + 1
        last = start + (5 * M if status == "open" else 12 * M)
        snap = session(guid=guids[dev], session_index=index[dev], started_at=start, last_seen_at=last,
                       channel=channel, utm_source=source, utm_medium=medium, utm_campaign=campaign,
                       status=status, pageviews=pvs, events=evs, landing_url=f"https://{SITE}{landing}",
                       landing_path=landing, exit_url=f"https://{SITE}{exit_}")
        j.sessions[name] = snap.session_id
        records.append(rs.record(ROLES.sessions, snap))
        j.rows[dev]["sessions"] += 1
        for n in range(pvs):
            pv = pageview(guid=guids[dev], session_id=snap.session_id, occurred_at=start + n * M,
                          url=f"https://{SITE}{landing if n == 0 else exit_}", path=landing if n == 0 else exit_,
                          **identity.get(dev, {}))
            records.append(rs.record(ROLES.events, pv))
            j.rows[dev]["pageviews"] += 1
            j.hits.setdefault(f"pv_{dev}", pv.hit_id)
    for name, (in_session, at, event_name, module) in EVENTS.items():
        dev = SESSIONS[in_session][0]
        ev = event(name=event_name, module=module, guid=guids[dev], session_id=j.sessions[in_session], occurred_at=at)
        j.hits[name] = ev.hit_id
        records.append(rs.record(ROLES.events, ev))
        j.rows[dev]["events"] += 1
    for dev in "ABCD":
        j.rows[dev]["devices"] = 1
    records.append(rs.record(ROLES.events, late_hit(guid=guids["A"], occurred_at=T - 10 * D)))
    j.rows["A"]["late_hits"] = 1
    records.append(rs.record(ROLES.events, late_hit(guid=guids["B"], occurred_at=T - 10 * D)))
    j.rows["B"]["late_hits"] = 1
    # Dead letters. Device A's: keyed by its guid (the sessionizer refusing a hit), keyed by one of
    # its session ids (a sessions record), naming one of its hits (the sink), and one the edge
    # refused with no usable key whose payload carries the guid in upper case.
    a_letters = [
        dead_letter("sessionizer", "record does not match the schema", b'{"v":1,"kind":"hit","broken":true}',
                    topic="cli.hits", partition=1, offset=7, key=guids["A"].encode()),
        dead_letter("sink", "refused by PostgreSQL", b'{"v":1}', topic="cli.sessions", partition=0, offset=3,
                    key=j.sessions["A2"].encode()),
        dead_letter("sink", "refused by PostgreSQL", b'{"v":1,"kind":"pageview"}', topic="cli.events", partition=2,
                    offset=9, hit_id=j.hits["pv_A"]),
        dead_letter("ingest", "invalid hit", f'{{"guid":"{guids["A"].upper()}","url":"nope"}}'.encode()),
    ]
    others = [
        dead_letter("ingest", "invalid hit", f'{{"guid":"{guids["B"]}","url":"nope"}}'.encode(), key=guids["B"]),
        dead_letter("ingest", "not valid JSON", b"\xff\xfe garbage {", key=None),
        dead_letter("sessionizer", "record does not match the schema", b'{"v":1,"kind":"hit"}',
                    topic="cli.hits", partition=3, offset=1, key=guids["C"].encode()),
    ]
    for letter in a_letters:
        records.append(rs.record(ROLES.deadletter, letter))
    j.rows["A"]["deadletter"] = len(a_letters)
    j.rows["B"]["deadletter"] = 1
    j.rows["C"]["deadletter"] = 1
    for letter in others:
        records.append(rs.record(ROLES.deadletter, letter))
    writer = Writer(migrated.dsn, migrated.schema, role="touchstream_writer")
    try:
        await writer.write_isolating(decode_batch(records, ROLES, now=T))
    finally:
        await writer.close()
    return j
