"""`Pipeline.start` (the demo's, the e2e suite's and the fault suite's way to run the components)
migrates before it starts the sinks: every table is there when it returns, and a migration that
cannot run stops the start with `touchstream migrate`'s own message."""

from __future__ import annotations

import pytest

from touchstream.pipeline import Pipeline


def _pipeline(services, topic_prefix, pg_schema, tmp_path, **env: str) -> Pipeline:
    # The sink's own migration off: only Pipeline.start's can have made the tables.
    return Pipeline(workdir=tmp_path, kafka_bootstrap=services.kafka_bootstrap, pg_dsn=pg_schema.dsn,
                    topic_prefix=topic_prefix, pg_schema=pg_schema.schema, partitions=1,
                    extra_env={"TOUCHSTREAM_SINK_MIGRATE_ON_START": "false", **env})


@pytest.mark.topic_partitions(1)
async def test_the_tables_exist_when_start_returns(services, topic_prefix, pg_schema, tmp_path) -> None:
    pipeline = _pipeline(services, topic_prefix, pg_schema, tmp_path)
    try:
        pipeline.start()
        conn = await pg_schema.connect(timeout=30)
        try:
            missing = await conn.fetch("SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NULL",
                                       ["sessions", "pageviews", "events", "late_hits", "schema_migrations"])
        finally:
            await conn.close()
        assert missing == []
        pipeline.check_alive()
    finally:
        pipeline.stop()


@pytest.mark.topic_partitions(1)
def test_a_migration_that_cannot_run_stops_the_start(services, topic_prefix, pg_schema, tmp_path) -> None:
    unreachable = "postgresql://postgres:wrong@127.0.0.1:9/touchstream"  # port 9 (discard): nothing listens
    pipeline = _pipeline(services, topic_prefix, pg_schema, tmp_path, TOUCHSTREAM_PG_MIGRATE_DSN=unreachable)
    try:
        with pytest.raises(RuntimeError, match=r"exited 2:\ntouchstream migrate: cannot reach PostgreSQL at postgresql://postgres:\*\*\*@127.0.0.1:9/"):
            pipeline.start()
        assert not any(comp.running for comp in pipeline.components.values())  # nothing started
    finally:
        pipeline.stop()
