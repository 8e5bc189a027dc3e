"""Bounded state (SPEC section 3, "Bounded state"): what a client can make a device's state cost.

Slots per device, bytes per device (shrink, then refuse), idle devices leaving, and the header
that a partition's recovery and the idle scan read instead of decoding states.
"""

from __future__ import annotations

import dataclasses
import random
import struct

import pytest

from sessionizer.machine import (
    DeviceState, Emitted, Rules, StateLimit, idle, next_deadline_ms, on_hit, on_time, peek_deadline_ms,
)
from sessionizer.sweep import IdleCursor

from .driver import GUID, HOUR, MIN, T0, make_hit

DAY = 24 * HOUR
# A Kafka record's default limit (message.max.bytes, max_request_size): a state must fit in one.
KAFKA_RECORD = 1_048_576


def _site_hits(n: int, **kwargs):
    return [make_hit(T0 + i * MIN, hid=i + 1, site=f"site-{i}.example", **kwargs) for i in range(n)]


def test_slots_per_device_are_capped() -> None:
    rules = Rules(scope="site", max_slots=3)
    state = None
    for hit in _site_hits(3):
        state = on_hit(state, hit, rules, T0, Emitted())
    before = state.to_bytes()
    out = Emitted()
    with pytest.raises(StateLimit, match="3 sites.*TOUCHSTREAM_SESSION_MAX_SLOTS"):
        on_hit(state, make_hit(T0 + 10 * MIN, hid=99, site="one-more.example"), rules, T0, out)
    assert state.to_bytes() == before and out.sessions == [] and out.records == []  # nothing of it kept
    # A known site still takes hits.
    on_hit(state, make_hit(T0 + 11 * MIN, hid=100, site="site-0.example"), rules, T0, out)
    assert len(state.slots) == 3 and state.slots["site-0.example"].sessions[-1].hits == 2


def test_under_scope_device_every_site_is_one_slot() -> None:
    rules = Rules(max_slots=1)
    state = None
    for hit in _site_hits(5):
        state = on_hit(state, hit, rules, T0, Emitted())
    assert list(state.slots) == [""] and state.slots[""].sessions[-1].hits == 5


def _long_hit(i: int, at: int, *, site: str | None = None, nasty: bool = False):
    """A hit with every long field near the edge's limits (schemas.hit); `nasty`: characters
    JSON escapes as \\u00XX, six bytes each."""
    fill = "\x01" if nasty else "a"
    return make_hit(at, hid=i + 1, site=site,
                    url=f"https://www.oakridge-apts.com/{i}?q=" + "b" * 4000,
                    referrer=f"https://ref-{i}.example/" + "c" * 4000,
                    user_agent="Mozilla/5.0 " + fill * 2000,
                    utm={"utm_source": f"s{i}" + fill * 2000, "utm_campaign": fill * 2000, "utm_term": fill * 2000})


def test_a_device_with_huge_hits_shrinks_and_stays_within_its_bytes() -> None:
    rules = Rules(max_state_bytes=256 * 1024)
    state = None
    out = Emitted()
    for i in range(400):  # one session of 400 hits, ~14 KB each: 5.6 MB if all were retained
        hit = _long_hit(i, T0 + i * 1000)
        state = on_hit(state, hit, rules, T0 + i * 1000, out, weight=30_000)  # (~ its record's JSON length)
        assert len(state.to_bytes()) <= rules.max_state_bytes
    assert out.counts.shrunk > 0
    [session] = state.sessions()
    assert session.hits == 400 and session.pageviews == 400  # nothing visible was lost
    # What was dropped is too late now: a late hit before the floor goes to late_hits.
    late = Emitted()
    on_hit(state, make_hit(T0 + 500, hid=9_999), rules, T0 + 400_000, late)
    assert late.counts.too_late == 1


def test_a_state_with_nothing_left_to_drop_refuses_the_hit() -> None:
    # Sites flood (scope "site"): each new site's session is a landing that cannot be dropped.
    rules = Rules(scope="site", max_slots=4096, max_state_bytes=128 * 1024)
    state = None
    refused = 0
    for i in range(40):
        hit = _long_hit(i, T0 + i * 1000, site=f"s{i}.example", nasty=True)
        try:
            state = on_hit(state, hit, rules, T0 + i * 1000, Emitted(), weight=40_000)
        except StateLimit as exc:
            refused += 1
            assert "TOUCHSTREAM_SESSION_MAX_STATE_BYTES" in str(exc)
        assert len(state.to_bytes()) <= rules.max_state_bytes
    assert 0 < refused < 40


def test_the_default_bounds_keep_any_state_inside_one_kafka_record() -> None:
    # The worst a client can do with the defaults: 32 sites, every field at the edge's limits in
    # characters JSON escapes, hits arriving in and out of order. The default weight is the
    # bound the core assumes when the adapter gives none.
    rules = Rules(scope="site")
    rng = random.Random(7)
    state = None
    for i in range(300):
        at = T0 + rng.randrange(0, 2 * HOUR)
        try:
            state = on_hit(state, _long_hit(i, at, site=f"s{i % 40}.example", nasty=True), rules, T0 + 2 * HOUR,
                           Emitted())
        except StateLimit:
            pass
        assert len(state.to_bytes()) <= rules.max_state_bytes < KAFKA_RECORD
    assert len(state.slots) <= rules.max_slots


def test_idle_after_is_never_shorter_than_timeout_plus_lateness() -> None:
    assert Rules(idle_ttl_ms=HOUR).idle_after_ms == Rules().timeout_ms + Rules().lateness_ms
    assert Rules(idle_ttl_ms=0).idle_after_ms == 0
    assert Rules().idle_after_ms == 400 * DAY


def _stored(times: list[int], rules: Rules) -> bytes:
    state = None
    for i, t in enumerate(times):
        state = on_hit(state, make_hit(t, hid=i + 1), rules, t, Emitted())
    return state.to_bytes()


def test_idle_needs_nothing_retained_and_the_ttl_passed_exactly() -> None:
    rules = Rules(idle_ttl_ms=30 * DAY)
    last = T0 + 5 * MIN
    state = DeviceState.from_bytes(_stored([T0, last], rules))
    assert not idle(state.to_bytes(), rules, last + 40 * DAY)  # its session is retained (not frozen)
    on_time(state, rules, last + rules.timeout_ms + rules.lateness_ms + 1, Emitted())  # frozen
    raw = state.to_bytes()
    assert not idle(raw, rules, last + 30 * DAY)       # exactly the TTL: stays
    assert idle(raw, rules, last + 30 * DAY + 1)       # one ms more: leaves
    assert not idle(raw, dataclasses.replace(rules, idle_ttl_ms=0), last + 3650 * DAY)


def test_the_header_gives_what_decoding_gives() -> None:
    rules = Rules(scope="site", split_on_campaign=True)
    rng = random.Random(3)
    state = None
    now = T0
    for i in range(300):
        now += rng.choice([MIN, 10 * MIN, 31 * MIN, 2 * HOUR])
        at = now - rng.choice([0, 0, 0, 5 * MIN, 40 * MIN])
        state = on_hit(state, make_hit(at, hid=i + 1, site=rng.choice(["a", "b", "c"])), rules, now, Emitted())
        if rng.random() < 0.1:
            now += rules.lateness_ms
            on_time(state, rules, now, Emitted())
        raw = state.to_bytes()
        assert peek_deadline_ms(raw, rules) == (next_deadline_ms(state, rules), state.open_sessions() > 0)
        assert DeviceState.peek(raw) == state.times()
        assert DeviceState.from_bytes(raw) == state


def test_format_2_states_are_still_read() -> None:
    rules = Rules()
    raw3 = _stored([T0, T0 + MIN], rules)
    ring_len = struct.unpack_from("<H", raw3, 1)[0]
    raw2 = b"\x02" + raw3[1:3] + raw3[3 + 24:]  # the same without the times
    assert len(raw2) == len(raw3) - 24 and ring_len > 0
    state = DeviceState.from_bytes(raw2)
    assert state == DeviceState.from_bytes(raw3)
    assert DeviceState.peek(raw2) is None
    assert peek_deadline_ms(raw2, rules) == peek_deadline_ms(raw3, rules)
    assert state.to_bytes() == raw3  # written back in format 3


def test_the_idle_cursor_goes_round_in_bounded_steps() -> None:
    items = [(b"\x00touchstream:clock", b"c"), (b"__faust\x00offset__", b"1")]
    items += [(f"{i:04d}".encode(), b"old" if i % 3 == 0 else b"new") for i in range(10)]
    items.sort()

    def from_key(key: bytes | None):
        return [kv for kv in items if key is None or kv[0] >= key]

    cursor = IdleCursor()
    seen: list[str] = []
    for _ in range(3):
        scanned, gone = cursor.scan(from_key(cursor.cursor), 4, lambda k, v: v == b"old")
        assert scanned <= 4
        seen += gone
    assert seen == ["0000", "0003", "0006", "0009"] and cursor.passes == 1 and cursor.cursor is None
    scanned, gone = cursor.scan(from_key(cursor.cursor), 4, lambda k, v: v == b"old")
    assert gone == ["0000", "0003"] and cursor.cursor == b"0004"  # the next pass
