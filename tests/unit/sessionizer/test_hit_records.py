"""The `events` records the core makes of a hit forward who sent it (issue 18: identity stitching):
the hit's `user_id` and `previous_guid`, on pageviews and events alike, valid against the models;
a hit with neither keeps the record it had before (no fields of nulls)."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
import pytest

from schemas.hit import HitIn, enrich
from schemas.records import EventRecord, PageviewRecord
from schemas.views import decode_hit_record, encode_view
from schemas.wire import encode
from sessionizer.snapshot import hit_record

GUID = "31a3b6fa-8200-45a6-941f-85b49d5b1766"
OLD = "f2466db0-606c-4e7b-84ba-f085eff4d6ba"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def view(**fields):
    record, _ = enrich(HitIn.model_validate({"guid": GUID, "url": "https://a.example/x", **fields}),
                       received_at=NOW, ip=None, user_agent="")
    return decode_hit_record(encode(record))


@pytest.mark.parametrize("kind", ["pageview", "event"])
@pytest.mark.parametrize(("user_id", "previous_guid"), [("crm-1", OLD), (None, None), ("crm-2", None), (None, OLD)])
def test_hit_records_carry_user_id_and_previous_guid(kind, user_id, previous_guid):
    extra = {"type": "event", "event": {"name": "lead"}} if kind == "event" else {}
    hit = view(user_id=user_id, previous_guid=previous_guid, **extra)
    wire = orjson.loads(encode_view(hit_record(hit, GUID, "5d2c3f4e-8a51-5b7e-9c0d-7e1f2a3b4c5d")))
    model = (EventRecord if kind == "event" else PageviewRecord).model_validate(wire)
    assert (wire["kind"], model.user_id, model.previous_guid) == (kind, user_id, previous_guid)
    # a hit that names nobody (nearly all): the record as it was before identities, no two nulls
    assert ("user_id" in wire) == ("previous_guid" in wire) == (user_id is not None or previous_guid is not None)
