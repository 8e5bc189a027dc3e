"""Wire encoding: JSON via orjson, every record carrying the schema version `v`.

Decoding is strict about shape and version and turns every failure into an
`InvalidInput` subclass with per-field errors, so a consumer can dead-letter the record
with a reason instead of crashing on it.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas import SCHEMA_VERSION
from schemas.errors import DecodeError, FieldError, UnsupportedVersion, ValidationFailed
from schemas.hit import HitRecord
from schemas.records import DeadLetter, EventsTopicRecord
from schemas.session import SessionRetraction, SessionSnapshot, SessionsTopicRecord
from schemas.timefmt import UTC

T = TypeVar("T")

# Datetimes as UTC ISO 8601 with "Z". Exported for hot paths that call orjson.dumps directly.
WIRE_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC
# Original bytes a dead letter keeps, at most. A dead letter must fit in a Kafka record (base64
# grows the payload by a third): an oversized one would be refused and stop its writer's output.
DEADLETTER_PAYLOAD_MAX = 64 * 1024


def encode(record: BaseModel | dict[str, Any]) -> bytes:
    """A model or a plain dict (hot paths build dicts) to JSON bytes. Datetimes become UTC ISO 8601 with Z."""
    if isinstance(record, BaseModel):
        record = record.model_dump()
    return orjson.dumps(record, option=WIRE_OPTIONS)


def field_errors(exc: ValidationError) -> list[FieldError]:
    """pydantic's errors as (dotted field, message) pairs a site developer can act on."""
    out: list[FieldError] = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"] if p not in ("function-after", "function-before"))
        msg = "is required" if err["type"] == "missing" else err["msg"]
        if not loc and err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = str(err.get("ctx", {}).get("discriminator", "")).strip("'")  # the tag field: "kind"
        # A model-level check (e.g. "event is required for type event") has no location: its type names the field.
        out.append(FieldError(loc or err["type"], msg))
    return out


def _load(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("not valid JSON", [FieldError("body", str(exc))]) from None


def _check_version(obj: Any) -> None:
    if not isinstance(obj, dict):
        raise DecodeError("not a JSON object", [FieldError("body", "expected a JSON object")])
    version = obj.get("v")
    if version != SCHEMA_VERSION:
        raise UnsupportedVersion(
            "unsupported schema version", [FieldError("v", f"is {version!r}; this build reads {SCHEMA_VERSION}")]
        )


class Codec(Generic[T]):
    """Decoder for one topic's record type: JSON bytes -> model, or an InvalidInput."""

    def __init__(self, type_: Any) -> None:
        self._adapter: TypeAdapter[Any] = TypeAdapter(type_)

    def decode(self, raw: bytes) -> T:
        obj = _load(raw)
        _check_version(obj)
        try:
            return self._adapter.validate_python(obj)
        except ValidationError as exc:
            raise ValidationFailed("record does not match the schema", field_errors(exc)) from None


hit_codec: Codec[Any] = Codec(HitRecord)
session_codec: Codec[SessionSnapshot | SessionRetraction] = Codec(SessionsTopicRecord)
events_codec: Codec[Any] = Codec(EventsTopicRecord)
deadletter_codec: Codec[DeadLetter] = Codec(DeadLetter)


def dead_letter(
    source: str,
    reason: str,
    payload: bytes,
    *,
    errors: list[FieldError] | None = None,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    key: bytes | str | None = None,
    hit_id: str | None = None,
    at: datetime | None = None,
    payload_limit: int = DEADLETTER_PAYLOAD_MAX,
) -> DeadLetter:
    """The dead letter of `payload`, cut to its first `payload_limit` bytes (the reason says so)."""
    if len(payload) > payload_limit:
        reason = f"{reason} (payload cut to its first {payload_limit} of {len(payload)} bytes)"
        payload = payload[:payload_limit]
    if isinstance(key, bytes):
        key = key.decode("utf-8", "replace")
    return DeadLetter(
        source=source,  # type: ignore[arg-type]
        reason=reason,
        errors=[e.as_dict() for e in errors or []],
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        hit_id=hit_id,
        payload_b64=base64.b64encode(payload).decode("ascii"),
        at=at or datetime.now(UTC),
    )
