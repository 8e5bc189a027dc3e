"""The local development stack: a Kafka broker (KRaft) and PostgreSQL 15 as plain processes.

    touchstream stack up [--brokers N] [--tls] | down [--wipe] | status | env

From Python (tests, benchmarks)::

    from touchstream.devstack import ensure_up, stop_kafka, start_kafka
    info = ensure_up()            # StackInfo(kafka_bootstrap=..., pg_dsn=...)
    stop_kafka(); start_kafka()   # idempotent; the same for *_postgres

See `paths.py` for where data lives and which environment variables move it.
"""

from .paths import StackConfig, StackInfo
from .process import StackError
from .stack import (
    down,
    ensure_up,
    start_broker,
    start_kafka,
    start_postgres,
    stop_broker,
    stop_kafka,
    stop_postgres,
    up,
)

__all__ = ["StackConfig", "StackError", "StackInfo", "down", "ensure_up", "start_broker", "start_kafka",
           "start_postgres", "stop_broker", "stop_kafka", "stop_postgres", "up"]
