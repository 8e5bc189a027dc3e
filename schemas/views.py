"""The records of the hot paths (the sessionizer's, and the edge's `hits` writer) as msgspec
Structs ("views").

The pydantic models (`schemas.hit`, `schemas.records`) are the contract of the topics. On
the sessionizer's hot path they cost more than the session rules themselves: decoding a
`hits` record with pydantic takes about 10 µs, msgspec under 3 µs into a Struct; building an
`events` record as a dict and encoding it with orjson takes 3 µs, as a Struct with msgspec
1.4 µs. The Structs here are *derived* from the models at import (`struct_of`) — same field
names, types and defaults, with `kind` as msgspec's tag — so the two cannot drift apart, and
msgspec writes the same JSON (UTC datetimes with "Z") as `schemas.wire.encode`, up to key
order (the `kind` tag first).

`HitOut` is `Hit` with every field positional: the edge's fast path (`ingest.fastpath`) builds
one per accepted hit, 0.5 µs against 1.5 µs with keywords and 3 µs for enrich's dict.

`decode_hit_record(raw)` tries msgspec first. What msgspec refuses goes through the pydantic
codec (`schemas.wire.hit_codec`): either pydantic accepts it (a form msgspec is stricter about,
such as a timestamp with a space instead of "T"), and it is converted, or pydantic raises the
`InvalidInput` with its per-field errors — so a refused record gets the same reason either way.

The Structs are not tracked by the cyclic garbage collector (`gc=False`): they hold strings,
numbers and at most a JSON dict, never a cycle, and a worker creates one per hit.
"""

from __future__ import annotations

import types
import typing
from datetime import datetime
from typing import Annotated, Any, Union

import msgspec
from pydantic import AwareDatetime, BaseModel

from schemas.hit import CloseRecord, ForgetRecord, Hit
from schemas.records import EventRecord, HitMoveRecord, LateHitRecord, PageviewRecord, RangeMoveRecord
from schemas.wire import hit_codec

IDENTITY_FIELDS = ("user_id", "previous_guid")  # of PageviewRecord and EventRecord
# Timestamps on `hits` are always written with their offset ("Z"); a naive one is refused.
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]


def _msgspec_type(annotation: Any) -> Any:
    """A pydantic field annotation in msgspec's terms (only AwareDatetime differs)."""
    if annotation is AwareDatetime:
        return AwareTime
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is Union:
        return Union[tuple(_msgspec_type(a) for a in typing.get_args(annotation))]  # noqa: UP007
    return annotation


def _wire(self: Any) -> dict[str, Any]:
    """The record as its model's `model_dump()` gives it (datetimes as datetimes)."""
    return {"kind": self.__struct_config__.tag, **msgspec.structs.asdict(self)}


def struct_of(model: type[BaseModel], name: str, *, positional: bool = False, without: tuple[str, ...] = ()) -> Any:
    """A msgspec Struct with the model's fields (keyword-only, in the model's order), its
    `kind` as the tag, a `kind` property and `wire()`; untracked by the cyclic GC.

    `positional=True`: every field required and positional instead (no defaults), for writers
    that pass every value: a 29-field Struct builds in 0.5 µs so, 1.5 µs with keywords.
    `without`: optional fields left out (the JSON then lacks them; readers take their defaults)."""
    kind = model.model_fields["kind"].default
    fields = []
    for field, info in model.model_fields.items():
        if field == "kind" or field in without:
            continue  # (kind: msgspec's tag)
        if positional or info.is_required():
            fields.append((field, _msgspec_type(info.annotation)))
        elif info.default_factory is not None:
            fields.append((field, _msgspec_type(info.annotation), msgspec.field(default_factory=info.default_factory)))
        else:
            fields.append((field, _msgspec_type(info.annotation), info.default))
    return msgspec.defstruct(
        name, fields, module=__name__, tag_field="kind", tag=kind, gc=False, kw_only=not positional,
        namespace={"kind": property(lambda self: kind), "wire": _wire, "__doc__": f"`{model.__name__}` as a Struct."},
    )


if typing.TYPE_CHECKING:  # the Structs carry every field of their model
    HitView = Hit
    CloseView = CloseRecord
    ForgetView = ForgetRecord
    PageviewView = PageviewRecord
    EventView = EventRecord
    AnonPageviewView = PageviewRecord
    AnonEventView = EventRecord
    LateHitView = LateHitRecord
    MoveView = HitMoveRecord
    RangeMoveView = RangeMoveRecord
    HitOut = Hit
else:
    # `hits`, read by the sessionizer
    HitView = struct_of(Hit, "HitView")
    CloseView = struct_of(CloseRecord, "CloseView")
    ForgetView = struct_of(ForgetRecord, "ForgetView")
    # `events`, written by the sessionizer
    PageviewView = struct_of(PageviewRecord, "PageviewView")
    EventView = struct_of(EventRecord, "EventView")
    # The same without the identity fields (user_id, previous_guid): the record of a hit that names
    # neither, nearly all of them, is then the bytes it was before they existed (36 fewer than two
    # nulls) and costs what it did to build and encode. Readers take None for both.
    AnonPageviewView = struct_of(PageviewRecord, "AnonPageviewView", without=IDENTITY_FIELDS)
    AnonEventView = struct_of(EventRecord, "AnonEventView", without=IDENTITY_FIELDS)
    LateHitView = struct_of(LateHitRecord, "LateHitView")
    MoveView = struct_of(HitMoveRecord, "MoveView")
    RangeMoveView = struct_of(RangeMoveRecord, "RangeMoveView")
    # `hits`, written by the edge's fast path (ingest.fastpath): all 30 values, in Hit's order
    HitOut = struct_of(Hit, "HitOut", positional=True)

HitRecordView = Union[HitView, CloseView, ForgetView]  # noqa: UP007
VIEWS: dict[str, Any] = {"hit": HitView, "close": CloseView, "forget": ForgetView}
RECORD_VIEWS: dict[str, Any] = {
    "pageview": PageviewView, "event": EventView, "late_hit": LateHitView, "move": MoveView, "move_range": RangeMoveView,
}

# A view to JSON bytes, as `schemas.wire.encode` writes its model.
encode_view = msgspec.json.Encoder().encode

_decoder = msgspec.json.Decoder(HitRecordView)


def decode_hit_record(raw: bytes) -> HitRecordView:
    """A `hits` record's JSON bytes as a View; raises `schemas.errors.InvalidInput` (with the
    pydantic codec's reason and field errors) for a record the contract refuses."""
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError:  # (ValidationError is one): the codec says why, precisely
        pass
    return view_of(hit_codec.decode(raw).model_dump())


def view_of(record: dict[str, Any]) -> HitRecordView:
    """A `hits` record given as a dict (a model's dump, or what the edge's `enrich` returns).
    Raises `msgspec.ValidationError` for a dict that does not match."""
    return msgspec.convert(record, HitRecordView)
