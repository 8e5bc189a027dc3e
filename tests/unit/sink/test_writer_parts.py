"""The writer's pure parts: error classification, partitions, settings."""

from __future__ import annotations

from datetime import date, datetime

import asyncpg
import pytest
from pydantic import ValidationError

from schemas.errors import DatabaseUnavailable, PartitionMissing, RejectedByDatabase
from schemas.timefmt import UTC
from sink.partitions import partition_name, retention_cutoff, window
from sink.settings import SinkSettings
from sink.writer import _status_count, classify


def pg_error(cls: type, message: str = "boom") -> asyncpg.PostgresError:
    return cls(message)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (pg_error(asyncpg.InvalidTextRepresentationError), RejectedByDatabase),  # 22P02
        (pg_error(asyncpg.CharacterNotInRepertoireError), RejectedByDatabase),  # 22021, e.g. NUL in text
        (pg_error(asyncpg.NotNullViolationError), RejectedByDatabase),  # 23502
        (pg_error(asyncpg.CheckViolationError, "no partition of relation \"events\" found for row"),
         PartitionMissing),
        (pg_error(asyncpg.CheckViolationError, "new row violates check constraint"), RejectedByDatabase),
        (pg_error(asyncpg.AdminShutdownError), DatabaseUnavailable),  # 57P01: the server is stopping
        (pg_error(asyncpg.CannotConnectNowError), DatabaseUnavailable),  # 57P03: starting up
        (pg_error(asyncpg.DeadlockDetectedError), DatabaseUnavailable),  # 40P01
        (pg_error(asyncpg.UndefinedTableError), DatabaseUnavailable),  # 42P01: a deployment problem, not the row's
        (pg_error(asyncpg.InsufficientPrivilegeError), DatabaseUnavailable),
        (asyncpg.ConnectionDoesNotExistError("closed"), DatabaseUnavailable),
        (ConnectionRefusedError(111, "refused"), DatabaseUnavailable),
        (TimeoutError(), DatabaseUnavailable),
        (asyncpg.InterfaceError("connection is closed"), DatabaseUnavailable),
        # asyncpg's own (private) DataError, read through schemas.internals.is_driver_data_error
        (asyncpg.exceptions._base.DataError("invalid input for query argument"), RejectedByDatabase),
        (ValueError("invalid UUID 'x'"), RejectedByDatabase),
    ],
)
def test_classify_turns_driver_errors_into_typed_errors(exc, kind):
    error = classify(exc)
    assert type(error) is kind
    if kind is RejectedByDatabase:  # the reason names what was refused, for the dead letter
        assert error.errors and str(exc) in error.errors[0].message


def test_status_count():
    assert _status_count("INSERT 0 42") == 42
    assert _status_count("") == 0


def test_partition_window_and_names():
    days = window(date(2026, 3, 2), 2, 3)
    assert [d.isoformat() for d in days] == ["2026-02-28", "2026-03-01", "2026-03-02", "2026-03-03",
                                             "2026-03-04", "2026-03-05"]
    assert partition_name("events", date(2026, 3, 2)) == "events_p20260302"


def test_retention_cutoff_keeps_n_days_including_today():
    now = datetime(2026, 3, 10, 23, 0, tzinfo=UTC)
    assert retention_cutoff(None, now) is None
    assert retention_cutoff(1, now) == date(2026, 3, 10)
    assert retention_cutoff(7, now) == date(2026, 3, 4)


def test_settings_refuse_names_that_are_not_plain_identifiers():
    with pytest.raises(ValidationError):
        SinkSettings(pg_schema='x"; DROP TABLE y; --')
    with pytest.raises(ValidationError):
        SinkSettings(pg_analyst_role="a b")
    assert SinkSettings(pg_schema="t_1a2b").pg_schema == "t_1a2b"


def test_settings_come_from_touchstream_variables(monkeypatch):
    monkeypatch.setenv("TOUCHSTREAM_SINK_GROUP", "g2")
    monkeypatch.setenv("TOUCHSTREAM_PG_SCHEMA", "analytics")
    monkeypatch.setenv("TOUCHSTREAM_SINK_RETENTION_DAYS", "30")
    s = SinkSettings()
    assert (s.sink_group, s.pg_schema, s.sink_retention_days) == ("g2", "analytics", 30)
