"""The adapters of schemas.internals that need the real services to show they still read the
right state: aiokafka's sender task on a real producer; what asyncpg raises when it cannot
encode a value, against a real PostgreSQL, is classified as the row's fault."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.errors import RejectedByDatabase
from schemas.internals import KafkaProducer, is_driver_data_error
from sink.writer import classify


async def test_a_producer_s_sender_is_seen_running_and_then_stopped(services: Any) -> None:
    producer = KafkaProducer(bootstrap_servers=services.kafka_bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        assert not producer.sender_stopped()
    finally:
        await producer.stop()
    assert producer.sender_stopped(), "a stopped producer's sender task is done"


async def test_a_value_the_driver_cannot_encode_is_the_row_s_fault(db: Any) -> None:
    await db.execute("CREATE TEMP TABLE encoded (n int, id uuid)")
    refused = []
    for attempt in (
        db.execute("SELECT $1::int", "not a number"),  # a query argument: asyncpg's DataError (22000)
        db.copy_records_to_table("encoded", records=[("x", None)], schema_name="pg_temp"),  # COPY: TypeError
        db.copy_records_to_table("encoded", records=[(1, "nope")], schema_name="pg_temp"),  # ValueError
        db.copy_records_to_table("encoded", records=[(2**40, None)], schema_name="pg_temp"),  # OverflowError
    ):
        with pytest.raises(Exception) as raised:
            await attempt
        refused.append(raised.value)
    assert all(isinstance(classify(exc), RejectedByDatabase) for exc in refused), refused
    # (asyncpg 0.32 raises none of them as its private DataError; classify still reads it if one comes)
    assert not any(is_driver_data_error(exc) for exc in refused)
