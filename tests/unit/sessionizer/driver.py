"""Test driver for the sessionizer core: builds hits the way the edge does and plays the
adapter's part (one partition: device states, event time, deadlines), checking on the way
what must hold for every call — each dict matches its schema model and every session's
version only grows."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas.hit import CloseRecord, Hit, HitIn, enrich
from schemas.views import CloseView, HitView, encode_view, view_of
from schemas.wire import encode
from schemas.records import EventRecord, HitMoveRecord, LateHitRecord, PageviewRecord, RangeMoveRecord
from schemas.session import SessionRetraction, SessionSnapshot
from schemas.timefmt import from_ms, iso, parse_timestamp, to_ms
from sessionizer.machine import Counts, DeviceState, Emitted, Rules, next_deadline_ms, on_close, on_hit, on_time

GUID = "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01"
OTHER_GUID = "0a9e7d2c-5b1f-4e8a-8c3d-2f6b9a4e1c02"
T0 = to_ms(parse_timestamp("2026-03-02T09:00:00Z"))
MIN = 60_000
HOUR = 60 * MIN
FAR_FUTURE = T0 + 400 * 24 * HOUR

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
_MODELS = {"pageview": PageviewRecord, "event": EventRecord, "late_hit": LateHitRecord, "move": HitMoveRecord,
           "move_range": RangeMoveRecord}


def hit_id(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def make_hit(
    at: int | str,
    *,
    hid: str | int | None = None,
    guid: str = GUID,
    type: str = "pageview",  # noqa: A002
    url: str = "https://www.oakridge-apts.com/",
    referrer: str = "",
    utm: dict[str, str] | None = None,
    site: str | None = None,
    user_agent: str = CHROME,
    ip: str | None = "203.0.113.0",
    received_at: int | None = None,
    title: str | None = None,
    event_name: str = "lead",
) -> HitView:
    """A hit as the edge publishes it (HitIn -> enrich -> Hit), occurring at `at` (ms or ISO),
    as the sessionizer reads it (HitView)."""
    created = from_ms(at) if isinstance(at, int) else parse_timestamp(at)
    body: dict[str, Any] = {"guid": guid, "type": type, "url": url, "referrer": referrer, "created_at": created}
    if hid is not None:
        body["hit_id"] = hit_id(hid) if isinstance(hid, int) else hid
    if utm is not None:
        body["utm"] = utm
    if site is not None:
        body["site"] = site
    if title is not None:
        body["title"] = title
    if type == "event":
        body["event"] = {"name": event_name, "module": "contact_form", "properties": {"unit": "2B"}}
    received = from_ms(received_at) if received_at is not None else created
    record, _ = enrich(HitIn.model_validate(body), received_at=received, ip=ip, user_agent=user_agent)
    return _view(record)


def _view(record: dict[str, Any]) -> HitView:
    Hit.model_validate(record)  # what the edge publishes is a valid `Hit`
    view = view_of(record)
    assert isinstance(view, HitView)
    return view


def scenario_hit(raw: dict[str, Any]) -> HitView:
    """A conformance scenario's hit through the edge's pure step (occurred_at = created_at)."""
    created = parse_timestamp(raw["created_at"])
    record, _ = enrich(HitIn.model_validate(raw), received_at=created, ip=None, user_agent="")
    return _view(record)


def close_record(guid: str, at: int, new_guid: str = OTHER_GUID) -> CloseView:
    when = from_ms(at)
    record = CloseRecord(guid=guid, new_guid=new_guid, hit_id=str(uuid.uuid4()), occurred_at=when, received_at=when)
    view = view_of(record.model_dump())
    assert isinstance(view, CloseView)
    return view


def ms(value: datetime) -> int:
    return to_ms(value)


@dataclass
class Partition:
    """One partition as the adapter runs it. `roundtrip` stores states as bytes between calls."""

    rules: Rules = field(default_factory=Rules)
    roundtrip: bool = False
    validate: bool = True
    event_time: int = 0
    states: dict[str, Any] = field(default_factory=dict)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0
    counts: Counts = field(default_factory=Counts)
    _versions: dict[str, int] = field(default_factory=dict)

    # -- state storage ------------------------------------------------------------------

    def state(self, guid: str) -> DeviceState | None:
        value = self.states.get(guid)
        if value is not None and self.roundtrip:
            value = DeviceState.from_bytes(value)
        return value

    def _store(self, guid: str, state: DeviceState | None) -> None:
        if state is None:
            self.states.pop(guid, None)
        elif self.roundtrip:
            data = state.to_bytes()
            assert DeviceState.from_bytes(data).to_bytes() == data
            self.states[guid] = data
        else:
            self.states[guid] = state

    def _collect(self, out: Emitted) -> None:
        self.calls += 1
        for snap in out.sessions:
            if self.validate:
                if snap.get("kind") == "retraction":
                    SessionRetraction.model_validate(snap)
                else:
                    SessionSnapshot.model_validate(snap)
                    assert snap["started_at"].tzinfo is not None
            previous = self._versions.get(snap["session_id"], 0)
            assert snap["version"] > previous, f"version did not grow for {snap['session_id']}"
            self._versions[snap["session_id"]] = snap["version"]
            self.snapshots.append(snap)
        for view in out.records:
            rec = view.wire()  # as a dict, the form the tests read
            if self.validate:
                model = _MODELS[rec["kind"]]
                model.model_validate(rec)
                # and its JSON is the model's JSON
                assert encode(model.model_validate_json(encode_view(view))) == encode(model.model_validate(rec))
            self.records.append(rec)
        self.counts.add(out.counts)

    # -- the adapter's calls --------------------------------------------------------------

    def hit(self, hit: Hit, event_time: int | None = None, offset: int | None = None) -> None:
        """Deliver a hit. Event time is the partition's (max occurred_at so far) unless given."""
        t = ms(hit.occurred_at)
        if event_time is None:
            self.event_time = max(self.event_time, t)
            event_time = self.event_time
        out = Emitted()
        guid = hit.guid.lower()
        self._store(guid, on_hit(self.state(guid), hit, self.rules, event_time, out, offset=offset))
        self._collect(out)

    def close(self, close: CloseRecord) -> None:
        out = Emitted()
        self._store(close.guid, on_close(self.state(close.guid), close, self.rules, self.event_time, out))
        self._collect(out)

    def advance(self, to: int) -> None:
        """Move event time to `to` and run on_time where a deadline has passed (the adapter's heap)."""
        self.event_time = max(self.event_time, to)
        self.tick(self.event_time)

    def tick(self, at: int) -> None:
        for guid in list(self.states):
            state = self.state(guid)
            deadline = next_deadline_ms(state, self.rules)
            if deadline is not None and deadline <= at:
                out = Emitted()
                self._store(guid, on_time(state, self.rules, at, out))
                self._collect(out)
                after = next_deadline_ms(self.state(guid), self.rules)
                assert after is None or after > at, "a passed deadline closes or freezes what it was for"

    def finish(self) -> None:
        self.advance(FAR_FUTURE)
        for guid in self.states:
            assert next_deadline_ms(self.state(guid), self.rules) is None

    # -- results ----------------------------------------------------------------------------

    def sessions(self) -> list[dict[str, Any]]:
        """The latest snapshot of every session not retracted, ordered by guid, site and started_at."""
        latest: dict[str, dict[str, Any]] = {}
        for snap in self.snapshots:
            latest[snap["session_id"]] = snap
        live = [s for s in latest.values() if s.get("kind") != "retraction"]
        return sorted(live, key=lambda s: (s["guid"], s["site"], s["started_at"]))

    def retracted(self) -> dict[str, str]:
        """session_id -> the session it was merged into, for sessions whose last word is a retraction."""
        latest: dict[str, dict[str, Any]] = {}
        for snap in self.snapshots:
            latest[snap["session_id"]] = snap
        return {sid: s["merged_into"] for sid, s in latest.items() if s.get("kind") == "retraction"}

    def placed(self) -> dict[str, dict[str, Any]]:
        """hit_id -> its record as moves left it, asserting each hit got exactly one record."""
        by_id: dict[str, dict[str, Any]] = {}
        ranges: list[dict[str, Any]] = []
        for rec in self.records:
            if rec["kind"] == "move":
                assert rec["hit_id"] in by_id, f"move of hit {rec['hit_id']} before its record"
                by_id[rec["hit_id"]] = {**by_id[rec["hit_id"]], "session_id": rec["session_id"]}
                continue
            if rec["kind"] == "move_range":
                for hid, placed in by_id.items():
                    if (placed.get("session_id") == rec["from_session_id"] and placed["guid"] == rec["guid"]
                            and rec["first_at"] <= placed["occurred_at"] <= rec["last_at"]):
                        by_id[hid] = {**placed, "session_id": rec["session_id"]}
                ranges.append(rec)
                continue
            assert rec["hit_id"] not in by_id, f"hit {rec['hit_id']} placed twice"
            by_id[rec["hit_id"]] = rec
        return by_id


def project(session: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """A snapshot's fields in the conformance file's form (timestamps as ISO with Z)."""
    return {k: iso(session[k]) if isinstance(session[k], datetime) else session[k] for k in keys}
