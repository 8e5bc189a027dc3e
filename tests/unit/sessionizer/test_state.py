"""The device state stays small and survives its bytes."""

from __future__ import annotations

import pytest

from sessionizer.machine import DeviceState, Emitted, Rules, on_hit, on_time
import orjson

from sessionizer.state import Block, Mark, Session, Slot

from .driver import GUID, HOUR, MIN, T0, make_hit

LONG_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)


def _device(n_hits: int, *, closed_too: bool = True) -> DeviceState:
    rules = Rules()
    state = None
    start = T0
    if closed_too:  # a previous, closed visit with campaign data
        state = on_hit(state, make_hit(T0, hid=10_000, user_agent=LONG_UA, referrer="https://www.google.com/",
                                       url="https://www.oakridge-apts.com/?utm_source=google&utm_medium=cpc"
                                           "&utm_campaign=spring-leasing&gclid=Cj0KCQiA"),
                       rules, T0, Emitted())
        start = T0 + 2 * HOUR
    for n in range(n_hits):
        hit = make_hit(start + n * 60_000 // 4, hid=n + 1, user_agent=LONG_UA,
                       url=f"https://www.oakridge-apts.com/floorplans/{n % 7}?unit={n}",
                       type="event" if n % 5 == 0 else "pageview")
        state = on_hit(state, hit, rules, start + n * 15_000, Emitted())
    return state


def test_state_retains_a_bounded_number_of_hits() -> None:
    state = _device(1_000)
    [slot] = state.slots.values()
    latest = slot.sessions[-1]
    assert latest.hits == 1_000 and latest.end_reason is None
    assert sum(len(s.elements) for s in slot.sessions) <= Rules().retained_hits
    data = state.to_bytes()
    # About 130 bytes per retained hit here (a 53-character URL): what a visit repeats is written once.
    assert len(data) < 140 * Rules().retained_hits, len(data)
    assert DeviceState.from_bytes(data) == state
    assert DeviceState.from_bytes(data).to_bytes() == data


def test_a_device_that_stays_away_shrinks_back() -> None:
    rules = Rules()
    state = _device(40)
    big = len(state.to_bytes())
    last = max(s.last for s in state.sessions())
    on_time(state, rules, last + rules.timeout_ms + rules.lateness_ms, Emitted())
    assert state.sessions()  # not yet: a hit could still reach the last session
    on_time(state, rules, last + rules.timeout_ms + rules.lateness_ms + 1, Emitted())
    assert state.sessions() == [] and state.slots[""].count == 2
    assert len(state.to_bytes()) < 130 + len(state.ring) < big  # (the header holds three times: 24 bytes)


def test_round_trip_keeps_behaviour() -> None:
    rules = Rules()
    a = _device(50)
    b = DeviceState.from_bytes(a.to_bytes())
    out_a, out_b = Emitted(), Emitted()
    later = make_hit(T0 + 2 * HOUR + 20 * MIN, hid=999)
    on_hit(a, later, rules, T0 + 3 * HOUR, out_a)
    on_hit(b, later, rules, T0 + 3 * HOUR, out_b)
    on_time(a, rules, T0 + 9 * HOUR, out_a)
    on_time(b, rules, T0 + 9 * HOUR, out_b)
    assert out_a == out_b and a == b


def test_round_trip_of_every_shape() -> None:
    empty = DeviceState("6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01")
    assert DeviceState.from_bytes(empty.to_bytes()) == empty
    a = Mark(T0, 7, "h1", False, url="https://x.example/ü", path="/ü", referrer="", referrer_host=None,
             site="x.example", utm_source="s", utm_medium=None, utm_campaign=None, utm_term=None, utm_content=None,
             utm_id=None, click_id="c", click_id_type="gclid", ip="::1", user_agent="ua ☃")
    b = a._replace(t=T0 + MIN, us=0, hit_id="h2", is_event=True, url="https://x.example/2", utm_source=None)
    block = Block(T0 - HOUR, T0 - 50 * MIN, 3, 1, "https://x.example/exit", T0 - 55 * MIN, a._replace(t=T0 - HOUR), "sid0")
    first = Session("s1", 3, 7, "midnight", "Paid Search", [block, a, b])
    second = Session("s2", 4, 9, None, "Direct", [b._replace(hit_id="h3", t=T0 + 2 * MIN)])
    state = DeviceState("g", b"\x00" * 16, {"": Slot(2, T0 - 2 * HOUR, [first, second], [T0 + 90_000]),
                                             "b.example": Slot(1, -1, [], [])}, offset=12, version=9)
    data = state.to_bytes()
    again = DeviceState.from_bytes(data)
    assert again == state and again.to_bytes() == data
    assert (first.pageviews, first.events, first.exit_url) == (4, 2, "https://x.example/ü")
    assert again.slots[""].sessions[0].landing == block.landing


def test_a_state_of_format_1_is_read_with_its_sessions_as_blocks() -> None:
    # What the previous version wrote: aggregates of the open and the last closed session.
    def old(sid: str, index: int, first: int, last: int, reason: str | None) -> list:
        return [sid, index, 4, first, last, reason, 2, 0, "https://x.example/exit", last, "https://x.example/", "/",
                "x.example", "", None, None, None, None, None, None, None, None, None, "198.51.100.0", "ua", "Direct"]
    body = orjson.dumps([GUID, [["", 5, T0 - 3 * HOUR, old("open", 5, T0 + 55 * MIN, T0 + HOUR, None),
                                 old("last", 4, T0, T0 + 20 * MIN, "inactivity")]], 41])
    state = DeviceState.from_bytes(b"\x01" + len(b"").to_bytes(2, "little") + body)
    [slot] = state.slots.values()
    assert [(s.id, s.index, s.end_reason) for s in slot.sessions] == [
        ("last", 4, "inactivity"), ("open", 5, None)] and slot.count == 3 and state.offset == 41
    assert state.version == 4
    # A late hit bridging the two merges them; the open session's hits are re-pointed as a range.
    out = Emitted()
    on_hit(state, make_hit(T0 + 40 * MIN, hid=7), Rules(), T0 + HOUR, out)
    assert [s["kind"] for s in out.sessions if "kind" in s] == ["retraction"]
    [move] = [r for r in out.records if r.kind == "move_range"]
    assert (move.from_session_id, move.session_id) == ("open", "last")
    assert [(s.id, s.hits) for s in slot.sessions] == [("last", 5)]


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError):
        DeviceState.from_bytes(b"\x09\x00\x00[]")
