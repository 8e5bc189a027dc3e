"""Retrying a write while PostgreSQL is away, and stopping meanwhile (no database needed)."""

from __future__ import annotations

import asyncio

import pytest

from schemas.errors import Unavailable
from sink.batch import Batch
from sink.writer import Writer, write_until_written

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/touchstream"  # nothing listens on port 1


async def test_an_unreachable_database_is_unavailable_not_a_crash():
    writer = Writer(UNREACHABLE, "public", connect_timeout=2)
    with pytest.raises(Unavailable, match="cannot connect"):
        await writer.write(Batch())


async def test_retries_until_stopped_and_then_reports_the_batch_unwritten():
    writer = Writer(UNREACHABLE, "public", connect_timeout=2)
    stop = asyncio.Event()
    attempts = 0
    original = writer.write_isolating

    async def counting(batch):
        nonlocal attempts
        attempts += 1
        return await original(batch)

    writer.write_isolating = counting  # type: ignore[method-assign]
    asyncio.get_running_loop().call_later(0.5, stop.set)
    result = await asyncio.wait_for(write_until_written(writer, Batch(), initial_delay=0.05, max_delay=0.1,
                                                        stop=stop), 10)
    assert result is None
    assert attempts >= 3
