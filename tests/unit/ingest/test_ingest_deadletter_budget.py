"""Dead-letter bytes kept per client and minute (ingest.deadletter_budget) and what the intake
does beyond them: the refusal is answered and dead-lettered with its reason, without the bytes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson

from ingest.body import parse
from ingest.deadletter_budget import DeadLetterBudget, client_key
from ingest.errors import FieldError, MalformedBody
from ingest.intake import Edge, Intake
from schemas.wire import deadletter_codec

NOW = datetime(2026, 12, 4, 18, 0, 5, tzinfo=timezone.utc)


def test_each_client_keeps_its_own_bytes_per_minute() -> None:
    budget = DeadLetterBudget(bytes_per_minute=1000)
    assert budget.take("198.51.100.7", 600, NOW)
    assert not budget.take("198.51.100.7", 600, NOW), "all or nothing: 1,200 > 1,000"
    assert budget.take("198.51.100.7", 400, NOW + timedelta(seconds=50))
    assert budget.take("198.51.100.8", 1000, NOW), "another client has its own"
    assert not budget.take("198.51.100.7", 1, NOW + timedelta(seconds=54))
    assert budget.take("198.51.100.7", 1000, NOW + timedelta(seconds=55)), "a new minute"


def test_ipv6_clients_are_counted_by_64_and_mapped_ipv4_as_ipv4() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:198.51.100.7") == "198.51.100.7"
    assert client_key(None) == ""


def test_a_full_table_keeps_no_bytes_for_new_clients_until_the_minute_turns() -> None:
    budget = DeadLetterBudget(bytes_per_minute=1000, max_clients=2)
    assert budget.take("a", 1, NOW) and budget.take("b", 1, NOW)
    assert not budget.take("c", 1, NOW)
    assert budget.take("a", 1, NOW), "clients in the table keep their budget"
    assert budget.take("c", 1, NOW + timedelta(minutes=1))


def test_beyond_the_budget_refusals_are_dead_lettered_without_their_bytes() -> None:
    intake = Intake(deadletter_budget=DeadLetterBudget(bytes_per_minute=3 * 1024), deadletter_payload_bytes=1024)
    flooder = Edge(NOW, "203.0.113.0", "x", client="203.0.113.7")
    other = Edge(NOW, "203.0.113.0", "x", client="203.0.113.8")
    body = b"{" + b"x" * 5000  # malformed: its dead letter keeps 1,024 bytes
    refusals = [intake.refuse(MalformedBody("not valid JSON", [FieldError("body", "bad")]), body, flooder)
                for _ in range(5)]
    letters = [deadletter_codec.decode(r.dead_letters[0][1]) for r in refusals]
    kept = [len(letter.payload_b64) > 0 for letter in letters]
    assert kept == [True, True, True, False, False]
    assert [r.payloads_dropped for r in refusals] == [0, 0, 0, 1, 1]
    assert letters[3].reason == ("not valid JSON (payload of 5001 bytes not kept: this client's dead letters kept "
                                 "3072 bytes this minute)")
    assert letters[3].errors == [{"field": "body", "message": "bad"}]
    # Items refused inside a batch count the same way; another client still keeps its bytes.
    items = parse(orjson.dumps([{"guid": "not-a-guid", "url": "https://e.com/"}] * 2), "json", 500)
    assert intake.process(items, flooder).payloads_dropped == 2
    assert intake.process(items, other).payloads_dropped == 0
