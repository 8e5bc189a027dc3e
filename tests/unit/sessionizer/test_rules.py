"""`Rules` (compiled with the core where a C compiler is): plain frozen data, checked when built."""

from __future__ import annotations

import dataclasses

import pytest

from sessionizer.rules import HOUR_MS, MINUTE_MS, Rules


def test_the_spec_defaults_and_the_derived_idle_horizon() -> None:
    rules = Rules()
    assert (rules.timeout_ms, rules.max_length_ms, rules.lateness_ms, rules.scope) == (
        30 * MINUTE_MS, 24 * HOUR_MS, 24 * HOUR_MS, "device")
    assert rules.idle_after_ms == 400 * 24 * HOUR_MS
    assert Rules(idle_ttl_ms=HOUR_MS).idle_after_ms == 30 * MINUTE_MS + 24 * HOUR_MS  # never before timeout + lateness
    assert Rules(idle_ttl_ms=0).idle_after_ms == 0


def test_rules_are_frozen_values() -> None:
    rules = Rules()
    with pytest.raises(dataclasses.FrozenInstanceError):
        rules.timeout_ms = 1  # type: ignore[misc]
    changed = dataclasses.replace(rules, timeout_ms=10 * MINUTE_MS)
    assert changed.timeout_ms == 10 * MINUTE_MS and rules.timeout_ms == 30 * MINUTE_MS
    assert Rules() == rules and hash(Rules()) == hash(rules) and changed != rules


@pytest.mark.parametrize(("fields", "message"), [
    ({"timeout_ms": 0}, "timeout_ms must be positive"),
    ({"max_length_ms": MINUTE_MS}, "max_length_ms must be at least timeout_ms"),
    ({"scope": "page"}, "scope must be 'device' or 'site'"),
    ({"lateness_ms": -1}, "lateness_ms must not be negative"),
    ({"retained_hits": 7}, "retained_hits must be at least 8"),
    ({"max_slots": 0}, "max_slots must be between 1 and 4096"),
    ({"max_state_bytes": 1024}, "max_state_bytes must be between 64 KiB and 900 KiB"),
    ({"idle_ttl_ms": -1}, "idle_ttl_ms must not be negative"),
    ({"dedupe_size": 0}, "dedupe_size must be between 1 and 4096"),
])
def test_a_rule_out_of_range_is_refused_with_its_name(fields, message) -> None:
    with pytest.raises(ValueError, match=message):
        Rules(**fields)


def test_an_unknown_midnight_zone_is_refused_when_the_rules_are_built() -> None:
    with pytest.raises(Exception, match="Nowhere/Atlantis"):
        Rules(midnight_tz="Nowhere/Atlantis")
