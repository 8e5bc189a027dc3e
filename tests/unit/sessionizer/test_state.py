"""The device state stays small and survives its bytes."""

from __future__ import annotations

import pytest

from sessionizer.machine import DeviceState, Emitted, Rules, on_hit, on_time
from sessionizer.state import Session, Slot

from .driver import HOUR, MIN, T0, make_hit

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


def test_a_long_session_stays_small() -> None:
    state = _device(1_000)
    [slot] = state.slots.values()
    assert slot.open.hits == 1_000 and slot.last is not None
    data = state.to_bytes()
    assert len(data) < 2048, len(data)
    assert DeviceState.from_bytes(data) == state
    assert DeviceState.from_bytes(data).to_bytes() == data


def test_size_does_not_grow_with_hits() -> None:
    assert len(_device(2_000).to_bytes()) - len(_device(100).to_bytes()) < 16


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
    session = Session("id", 3, 7, T0, T0 + MIN, "midnight", 2, 1, None, -1, "https://x.example/ü", "/", "x.example",
                      "", None, "s", None, None, None, None, None, "c", "gclid", "::1", "ua ☃", "Paid Search")
    state = DeviceState("g", b"\x00" * 16, {"": Slot(4, T0 - 1, None, session), "b.example": Slot(1, -1, session, None)})
    assert DeviceState.from_bytes(state.to_bytes()) == state


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError):
        DeviceState.from_bytes(b"\x09\x00\x00[]")
