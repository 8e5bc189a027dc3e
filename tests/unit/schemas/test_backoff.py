"""The one retry policy (schemas.backoff)."""

from __future__ import annotations

from schemas.backoff import Backoff


def test_waits_double_from_initial_up_to_maximum_and_start_over_after_a_success() -> None:
    backoff = Backoff(0.2, 1.0)
    assert [backoff.failed() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.failures == 5
    backoff.succeeded()
    assert backoff.failed() == 0.2


def test_a_long_outage_never_overflows() -> None:
    backoff = Backoff(0.5, 10.0)
    assert backoff.wait(10_000) == 10.0
    assert backoff.wait(0) == 0.5


def test_the_maximum_bounds_even_the_first_wait() -> None:
    assert Backoff(20.0, 10.0).failed() == 10.0
