"""From a request's items to what the edge publishes and answers: the pure core of POST /v1/hits.

No I/O and no clock: the receive time, client address and user agent come in as an `Edge`,
so the whole decision (accepted records, dead letters, the per-item errors, the status) is
a function of its inputs and unit-tested as one. `Intake.process` gives an `Outcome`,
`Intake.refuse` a `Refusal` (a body refused as a whole); each knows its HTTP status.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from ingest.deadletter_budget import DeadLetterBudget
from ingest.errors import BodyRefused, FieldError
from ingest.fastpath import fast_enrich
from ingest.items import BadJson, Items, json_type
from schemas.hit import HitIn, enrich
from schemas.timefmt import iso
from schemas.views import encode_view, view_of
from schemas.wire import DEADLETTER_PAYLOAD_MAX, dead_letter, encode, field_errors

Record = tuple[bytes | None, bytes]  # (key, value)

# Per-item refusal reasons (metrics label, and the dead letter's reason).
INVALID_HIT = "invalid_hit"
TOO_OLD = "too_old"
SITE_NOT_ALLOWED = "site_not_allowed"
_REASON_TEXT = {
    INVALID_HIT: "invalid hit",
    TOO_OLD: "hit older than the edge accepts",
    SITE_NOT_ALLOWED: "site not on the allow-list",
}
# Without a bound, a hit can be placed anywhere from 1827 to now (created_at in 2000, sent_at in
# 2199): each far day would be a day partition of its own in PostgreSQL (SPEC section 2).
DEFAULT_MAX_HIT_AGE = timedelta(days=31)


def new_hit_id() -> str:
    """A random (version 4) UUID string, without building a UUID object (once per hit without a
    hit_id; `bench/micro_bench.py` compares it with str(uuid.uuid4()))."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(slots=True)
class Edge:
    """What only the edge knows about a request. (Not frozen: one is built per request, and a
    frozen dataclass costs more to build; `bench/micro_bench.py` compares them.)"""

    received_at: datetime
    ip: str | None  # the stored form (SPEC section 2, IP privacy)
    user_agent: str
    client: str | None = None  # the address itself (never stored): whose dead-letter budget


@dataclass(slots=True)
class Outcome:
    """What to publish and what to answer for one request."""

    items: int = 0  # in the request
    accepted: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    hits: list[Record] = field(default_factory=list)  # to `hits`: enriched hits and close records
    dead_letters: list[Record] = field(default_factory=list)  # to `deadletter`
    refused: dict[str, int] = field(default_factory=dict)  # per-item reason -> count
    payloads_dropped: int = 0  # dead letters without their bytes (the client's budget was spent)

    @property
    def status(self) -> int:
        """202 when anything is accepted; 400 when nothing in the body is valid."""
        return 202 if self.accepted else 400

    def body(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "rejected": self.rejected}

    def take_records(self, hits_topic: str, deadletter_topic: str) -> list[tuple[str, list[Record]]]:
        """The records to publish, per topic, handed over: this outcome keeps none of them.

        A request waiting for Kafka's acknowledgement then holds no copy of what the
        publisher already holds (and counts against its buffer cap).
        """
        batches = [(hits_topic, self.hits)]
        if self.dead_letters:
            batches.append((deadletter_topic, self.dead_letters))
        self.hits, self.dead_letters = [], []
        return batches


@dataclass(slots=True)
class Refusal:
    """A request refused as a whole (nothing in it accepted), and the dead letters worth keeping."""

    error: BodyRefused
    dead_letters: list[Record] = field(default_factory=list)
    payloads_dropped: int = 0

    @property
    def status(self) -> int:
        return self.error.status

    def body(self) -> dict[str, Any]:
        """The answer: the shape of an `Outcome`'s, with no index."""
        return {"accepted": 0, "rejected": [{"index": None, "errors": [e.as_dict() for e in self.error.errors]}]}


class Intake:
    """Validates, enriches and encodes the items of a request (settings injected)."""

    def __init__(
        self,
        *,
        allowed_sites: frozenset[str] = frozenset(),
        max_hit_age: timedelta = DEFAULT_MAX_HIT_AGE,
        deadletter_payload_bytes: int = DEADLETTER_PAYLOAD_MAX,
        deadletter_budget: DeadLetterBudget | None = None,
        new_id: Callable[[], str] = new_hit_id,
        fast_path: bool = True,
    ) -> None:
        self.allowed_sites = allowed_sites
        self.max_hit_age = max_hit_age
        self.deadletter_payload_bytes = deadletter_payload_bytes
        self.deadletter_budget = deadletter_budget
        self.new_id = new_id
        self._fast_enrich = fast_enrich if fast_path else _no_fast_path

    def process(self, items: Items, edge: Edge) -> Outcome:
        out = Outcome(len(items.values))
        received_at, ip, user_agent, new_id = edge.received_at, edge.ip, edge.user_agent, self.new_id
        fast = self._fast_enrich
        allowed = self.allowed_sites
        oldest = received_at - self.max_hit_age
        add = out.hits.append
        accepted = 0
        for index, value in enumerate(items.values):
            result = fast(value, received_at, ip, user_agent, new_id)  # (positional: per hit)
            if result is None:  # the fast path was not sure: the definition decides
                result = self._validated(value, edge)
                if type(result) is list:
                    self._refuse(out, items, index, INVALID_HIT, result, edge)
                    continue
            record, close = result  # type: ignore[misc]
            if record.occurred_at < oldest:
                self._refuse(out, items, index, TOO_OLD, [self._too_old(record.occurred_at, received_at)], edge)
                continue
            if allowed and record.site not in allowed:
                message = f"{record.site!r} is not on this edge's allow-list"
                self._refuse(out, items, index, SITE_NOT_ALLOWED, [FieldError("site", message)], edge)
                continue
            add((record.guid.encode(), encode_view(record)))
            if close is not None:
                add((close.guid.encode(), encode_view(close)))
            accepted += 1
        out.accepted = accepted
        return out

    def _too_old(self, occurred_at: datetime, received_at: datetime) -> FieldError:
        days = self.max_hit_age / timedelta(days=1)
        return FieldError(
            "created_at",
            f"puts the hit at {iso(occurred_at)}, more than {days:g} days before the edge received it "
            f"({iso(received_at)}); older hits are refused",
        )

    def _validated(self, value: object, edge: Edge) -> tuple[Any, Any] | list[FieldError]:
        """The item through HitIn and enrich (the definition of a hit), as Structs like the fast
        path's records; or its errors."""
        errors = _item_errors(value)
        if errors is not None:
            return errors
        try:
            hit = HitIn.model_validate(value)
        except ValidationError as exc:
            return field_errors(exc)
        record, close = enrich(
            hit, received_at=edge.received_at, ip=edge.ip, user_agent=edge.user_agent, new_id=self.new_id
        )
        return view_of(record), None if close is None else view_of(close)

    def _refuse(
        self, out: Outcome, items: Items, index: int, reason: str, errors: list[FieldError], edge: Edge
    ) -> None:
        out.rejected.append({"index": index, "errors": [e.as_dict() for e in errors]})
        out.refused[reason] = out.refused.get(reason, 0) + 1
        value = items.values[index]
        key = _guid_of(value)
        hit_id = value.get("hit_id") if isinstance(value, dict) else None
        letter, kept = self._dead_letter(
            items.raw(index),
            _REASON_TEXT[reason],
            errors,
            edge,
            key=key,
            hit_id=hit_id if isinstance(hit_id, str) else None,
        )
        out.dead_letters.append(letter)
        if not kept:
            out.payloads_dropped += 1

    def refuse(self, exc: BodyRefused, body: bytes, edge: Edge) -> Refusal:
        """A body refused as a whole, with its dead letter when it is of a kind worth keeping."""
        if not exc.dead_letter:
            return Refusal(exc)
        letter, kept = self._dead_letter(body, exc.reason, exc.errors, edge)
        return Refusal(exc, [letter], payloads_dropped=0 if kept else 1)

    def _dead_letter(
        self,
        payload: bytes,
        reason: str,
        errors: list[FieldError],
        edge: Edge,
        *,
        key: str | None = None,
        hit_id: str | None = None,
    ) -> tuple[Record, bool]:
        """The dead letter, and whether it kept the payload (the client's budget allowed it)."""
        budget = self.deadletter_budget
        kept = budget is None or budget.take(
            edge.client, min(len(payload), self.deadletter_payload_bytes), edge.received_at
        )
        if not kept:
            reason = (
                f"{reason} (payload of {len(payload)} bytes not kept: this client's dead letters kept "
                f"{budget.bytes_per_minute} bytes this minute)"  # type: ignore[union-attr]
            )
            payload = b""
        letter = dead_letter(
            source="ingest",
            reason=reason,
            payload=payload,
            errors=errors,
            key=key,
            hit_id=hit_id[:64] if hit_id else None,
            at=edge.received_at,
            payload_limit=self.deadletter_payload_bytes,
        )
        return (key.encode() if key else None, encode(letter)), kept


def _no_fast_path(*_: object) -> None:
    return None


def _item_errors(value: object) -> list[FieldError] | None:
    """Errors of an item that is not even an object (pydantic would say less)."""
    if isinstance(value, BadJson):
        return [FieldError("body", value.message)]
    if not isinstance(value, dict):
        return [FieldError("body", f"must be a hit object, not {json_type(value)}")]
    return None


def _guid_of(value: object) -> str | None:
    """The item's guid when it has a usable one (to key its dead letter like its hits)."""
    if isinstance(value, dict):
        guid = value.get("guid")
        if isinstance(guid, str) and len(guid) <= 64:
            return guid.lower()
    return None
