"""Prometheus metrics of the sink (prometheus-client, default registry).

    touchstream_sink_rows_written_total{table}       rows inserted/updated (not those a conflict skipped)
    touchstream_sink_rows_skipped_total{table}       rows already there (replays, older snapshots)
    touchstream_sink_records_total{topic,outcome}    consumed records: written | deadletter | tombstone
    touchstream_sink_batch_records                   records per batch (histogram)
    touchstream_sink_write_seconds                   one batch's database write, commit included (histogram)
    touchstream_sink_db_retries_total{reason}        failed writes retried (unavailable | missing_partition)
    touchstream_sink_isolated_rows_total{table}      rows PostgreSQL refused, dead-lettered by bisection
    touchstream_sink_commit_failures_total           Kafka offset commits that failed (records get re-read)
    touchstream_sink_consumer_lag{topic,partition}   high watermark - committed offset, per assigned partition
    touchstream_sink_partitions_created_total        day partitions created
    touchstream_sink_partitions_dropped_total        day partitions dropped by retention
    touchstream_sink_rollup_drains_total{outcome}    this worker's drain rounds: drained | skipped (another
                                                     worker was draining) | failed
    touchstream_sink_rollup_devices_total            devices folded into the dashboard's rollups
    touchstream_sink_rollup_conversions_total        conversion keys folded into them
    touchstream_sink_rollup_drain_seconds            one drain round, all its transactions (histogram)
    touchstream_sink_rollup_age_seconds              now - rollup_state.as_of after this worker's last drain
    touchstream_sink_rows_expired_total{table}       deadletter / late_hits rows deleted by retention

`start_exporter(port)` serves them on http://0.0.0.0:port/metrics (the sink's __main__ calls it).
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("touchstream.sink.metrics")

ROWS_WRITTEN = Counter("touchstream_sink_rows_written_total", "Rows written to PostgreSQL", ["table"])
ROWS_SKIPPED = Counter("touchstream_sink_rows_skipped_total", "Rows not written because already present or stale",
                       ["table"])
RECORDS = Counter("touchstream_sink_records_total", "Kafka records consumed by the sink", ["topic", "outcome"])
BATCH_RECORDS = Histogram("touchstream_sink_batch_records", "Records per batch",
                          buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000))
WRITE_SECONDS = Histogram("touchstream_sink_write_seconds", "Database write of one batch, commit included",
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
DB_RETRIES = Counter("touchstream_sink_db_retries_total", "Batch writes retried after a database failure", ["reason"])
ISOLATED = Counter("touchstream_sink_isolated_rows_total", "Rows refused by PostgreSQL and dead-lettered", ["table"])
COMMIT_FAILURES = Counter("touchstream_sink_commit_failures_total", "Kafka offset commits that failed")
LAG = Gauge("touchstream_sink_consumer_lag", "Records behind the high watermark", ["topic", "partition"])
PARTITIONS_CREATED = Counter("touchstream_sink_partitions_created_total", "Day partitions created")
PARTITIONS_DROPPED = Counter("touchstream_sink_partitions_dropped_total", "Day partitions dropped by retention")
ROLLUP_DRAINS = Counter("touchstream_sink_rollup_drains_total", "Drain rounds of the dashboard's rollups",
                        ["outcome"])
ROLLUP_DEVICES = Counter("touchstream_sink_rollup_devices_total", "Devices folded into the dashboard's rollups")
ROLLUP_CONVERSIONS = Counter("touchstream_sink_rollup_conversions_total",
                             "Conversion keys folded into the dashboard's rollups")
ROLLUP_DRAIN_SECONDS = Histogram("touchstream_sink_rollup_drain_seconds", "One drain round of the rollups",
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
ROLLUP_AGE = Gauge("touchstream_sink_rollup_age_seconds",
                   "How far the rollups are behind the rows (now - as_of) after this worker's last drain")
ROWS_EXPIRED = Counter("touchstream_sink_rows_expired_total", "Rows deleted by retention", ["table"])
SESSIONS_RETRACTED = Counter("touchstream_sink_sessions_retracted_total",
                             "Session rows deleted because a late hit merged them into another (SPEC rule 6)")


def start_exporter(port: int, addr: str = "0.0.0.0") -> bool:
    """Serve /metrics on `port` (0: don't). A port already taken is logged, not fatal."""
    if not port:
        return False
    try:
        start_http_server(port, addr=addr)
    except OSError as exc:
        log.warning("metrics port unavailable; metrics not exported", extra={"port": port, "error": str(exc)})
        return False
    return True
