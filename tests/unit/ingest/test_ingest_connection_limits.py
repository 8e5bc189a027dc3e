"""A request's read deadline (ingest.connection.ConnectionLimits): drawn within the spread."""

from __future__ import annotations

import pytest

from ingest.connection import ConnectionLimits
from ingest.settings import IngestSettings


def test_deadlines_lie_between_one_minus_the_spread_and_one_times_the_read_timeout() -> None:
    limits = ConnectionLimits(read_timeout_s=10.0, read_timeout_spread=0.2)
    assert limits.deadline(0.0) == 10.0
    assert limits.deadline(0.5) == pytest.approx(9.0)
    assert 8.0 < limits.deadline(0.999999) < 8.001
    assert ConnectionLimits(read_timeout_s=10.0, read_timeout_spread=0.0).deadline(0.7) == 10.0


def test_the_spread_is_a_fraction_below_one() -> None:
    assert IngestSettings().ingest_read_timeout_spread == 0.2
    with pytest.raises(ValueError, match="ingest_read_timeout_spread"):
        IngestSettings(ingest_read_timeout_spread=1.0)
