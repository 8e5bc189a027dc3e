"""The `hits` records as the sessionizer's hot path reads them: msgspec Structs.

`schemas.hit` (pydantic) is the contract of the `hits` topic. Decoding a record with it costs
about 10 µs, the largest single cost of a hit in the sessionizer after the session rules
themselves; msgspec decodes the same bytes into a Struct in under 3 µs. The Structs here are
*derived* from `Hit`, `CloseRecord` and `ForgetRecord` at import — same field names, types
and defaults, with `kind` as msgspec's tag — so the two cannot drift apart.

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
from typing import Annotated, Any, Literal, Union

import msgspec
from pydantic import AwareDatetime, BaseModel

from schemas.hit import CloseRecord, ForgetRecord, Hit

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
    """The record as the model's `model_dump()` gives it (kept whole in a late_hit record)."""
    return {"kind": self.__struct_config__.tag, **msgspec.structs.asdict(self)}


def _view(model: type[BaseModel], name: str) -> Any:
    kind = model.model_fields["kind"].default
    required, optional = [], []
    for field, info in model.model_fields.items():
        if field == "kind":
            continue  # msgspec's tag
        if info.is_required():
            required.append((field, _msgspec_type(info.annotation)))
        else:
            optional.append((field, _msgspec_type(info.annotation), info.get_default(call_default_factory=True)))
    return msgspec.defstruct(
        name, required + optional, module=__name__, tag_field="kind", tag=kind, gc=False,
        namespace={"kind": property(lambda self: kind), "wire": _wire, "__doc__": f"`{model.__name__}` as a Struct."},
    )


if typing.TYPE_CHECKING:  # what the core reads; the Structs carry every field of their model
    HitView = Hit
    CloseView = CloseRecord
    ForgetView = ForgetRecord
else:
    HitView = _view(Hit, "HitView")
    CloseView = _view(CloseRecord, "CloseView")
    ForgetView = _view(ForgetRecord, "ForgetView")

HitRecordView = Union[HitView, CloseView, ForgetView]  # noqa: UP007
VIEWS: dict[str, Any] = {"hit": HitView, "close": CloseView, "forget": ForgetView}

_decoder = msgspec.json.Decoder(HitRecordView)


def decode_hit_record(raw: bytes) -> HitRecordView:
    """A `hits` record's JSON bytes as a View; raises `schemas.errors.InvalidInput` (with the
    pydantic codec's reason and field errors) for a record the contract refuses."""
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError:  # (ValidationError is one): the codec says why, precisely
        pass
    from schemas.wire import hit_codec  # (pydantic: only for what msgspec refused)

    return view_of(hit_codec.decode(raw).model_dump())


def view_of(record: dict[str, Any]) -> HitRecordView:
    """A `hits` record given as a dict (a model's dump, or what the edge's `enrich` returns).
    Raises `msgspec.ValidationError` for a dict that does not match."""
    return msgspec.convert(record, HitRecordView)
