"""What the edge refuses so that nothing it accepts is lost later (issue 17): characters
PostgreSQL cannot store, and hits dated too far before their arrival. Both paths (the fast
path defers, the definition refuses with the field)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from ingest.body import parse
from ingest.fastpath import fast_enrich
from ingest.intake import Edge, Intake
from schemas.hit import HitIn, query_campaign_params
from schemas.timefmt import iso
from schemas.wire import deadletter_codec, hit_codec

NOW = datetime(2026, 12, 4, 18, 0, 5, tzinfo=timezone.utc)
EDGE = Edge(received_at=NOW, ip="203.0.113.0", user_agent="Mozilla/5.0 (Test)", client="203.0.113.7")
GUID = "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01"
BASE: dict[str, Any] = {"guid": GUID, "url": "https://www.example.com/a", "hit_id": "0b8f3f1e-7a01-4c3e-9d61-6f1c2b0e4a57"}
EVENT: dict[str, Any] = {**BASE, "type": "event", "event": {"name": "lead", "module": "chat", "properties": {"a": 1}}}

# Each value PostgreSQL's text or jsonb would refuse, and the field the answer names.
NUL_HITS = {
    "title": ({**BASE, "title": "Floor\x00plans"}, "title"),
    "site": ({**BASE, "site": "www.example.com\x00"}, "site"),
    "utm": ({**BASE, "utm": {"source": "goo\x00gle"}}, "utm.source"),
    "url": ({**BASE, "url": "https://www.example.com/a\x00b"}, "url"),
    "referrer": ({**BASE, "referrer": "https://www.google.com/\x00"}, "referrer"),
    "event name": ({**EVENT, "event": {"name": "le\x00ad"}}, "event.name"),
    "event module": ({**EVENT, "event": {"name": "lead", "module": "\x00"}}, "event.module"),
    "property value": ({**EVENT, "event": {"name": "lead", "properties": {"a": ["x", {"b": "\x00"}]}}},
                       "event.properties"),
    "property key": ({**EVENT, "event": {"name": "lead", "properties": {"k\x00": 1}}}, "event.properties"),
}


def run(hits: list[dict[str, Any]], intake: Intake | None = None):
    return (intake or Intake()).process(parse(orjson.dumps(hits), "json", 500), EDGE)


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast path", "definition"])
@pytest.mark.parametrize("case", list(NUL_HITS))
def test_nul_anywhere_is_refused_with_its_field_and_dead_lettered(case: str, fast_path: bool) -> None:
    hit, field = NUL_HITS[case]
    assert fast_enrich(hit, NOW, None, "", lambda: "x") is None, "the fast path defers: the definition says why"
    out = run([BASE, hit], Intake(fast_path=fast_path))
    assert out.status == 202 and out.accepted == 1, out.rejected
    [rejected] = out.rejected
    assert rejected["index"] == 1
    assert [e["field"] for e in rejected["errors"]] == [field]
    assert "NUL" in rejected["errors"][0]["message"]
    [(key, value)] = out.dead_letters
    letter = deadletter_codec.decode(value)
    assert key == GUID.encode() and letter.reason == "invalid hit" and letter.hit_id == hit["hit_id"]


def test_a_literal_backslash_u0000_is_text_not_nul() -> None:
    hit = {**EVENT, "title": "\\u0000", "event": {"name": "lead", "properties": {"code": "\\u0000"}}}
    out = run([hit])
    assert out.accepted == 1 and not out.rejected
    record = hit_codec.decode(out.hits[0][1])
    assert record.title == "\\u0000" and record.event_properties == {"code": "\\u0000"}
    assert fast_enrich(hit, NOW, None, "", lambda: "x") is None  # (its escape looks like NUL: the definition decides)


def test_percent_encoded_nul_in_a_campaign_parameter_is_replaced_not_stored() -> None:
    assert query_campaign_params("utm_source=goo%00gle&gclid=a%00") == ({"source": "goo\ufffdgle"}, ("gclid", "a\ufffd"))
    out = run([{**BASE, "url": "https://www.example.com/a?utm_source=goo%00gle"}])
    assert out.accepted == 1
    record = hit_codec.decode(out.hits[0][1])
    assert record.utm_source == "goo\ufffdgle" and record.url.endswith("%00gle")  # the URL as sent


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast path", "definition"])
def test_hits_dated_more_than_the_max_age_before_arrival_are_refused(fast_path: bool) -> None:
    intake = Intake(max_hit_age=timedelta(days=31), fast_path=fast_path)
    oldest = NOW - timedelta(days=31)
    hits = [
        {**BASE, "created_at": iso(oldest)},  # exactly the bound: kept
        {**BASE, "created_at": iso(oldest - timedelta(milliseconds=1))},
        # device clocks: created in 2000, sent in 2199: decades before it arrived
        {**BASE, "created_at": "2000-01-01T00:00:00Z", "sent_at": "2199-01-01T00:00:00Z"},
        {**BASE, "created_at": iso(NOW - timedelta(days=1)), "sent_at": iso(NOW + timedelta(days=40))},
        {**BASE, "created_at": iso(NOW - timedelta(days=3))},
    ]
    out = run(hits, intake)
    assert out.accepted == 2 and [r["index"] for r in out.rejected] == [1, 2, 3]
    assert out.refused == {"too_old": 3}
    for rejected in out.rejected:
        [error] = rejected["errors"]
        assert error["field"] == "created_at" and "more than 31 days before the edge received it" in error["message"]
    assert {deadletter_codec.decode(v).reason for _, v in out.dead_letters} == {"hit older than the edge accepts"}
    assert [hit_codec.decode(v).occurred_at for _, v in out.hits] == [oldest, NOW - timedelta(days=3)]


def test_the_definition_still_reads_what_the_edge_refuses_as_too_old() -> None:
    # (the age is the edge's rule, about received_at, which HitIn does not know)
    HitIn.model_validate({**BASE, "created_at": "2000-01-01T00:00:00Z"})
