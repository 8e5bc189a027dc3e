"""`touchstream sink`: run one PostgreSQL sink worker (start several for more throughput: they
share the topics as one consumer group, `TOUCHSTREAM_SINK_GROUP`).

Runs the migrations first (unless TOUCHSTREAM_SINK_MIGRATE_ON_START=false), serves Prometheus
metrics on TOUCHSTREAM_SINK_METRICS_PORT (0: off), and stops cleanly on SIGINT/SIGTERM: the batch
in flight is finished and committed, or left uncommitted if PostgreSQL is away.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys

from sink.consumer import SinkConsumer
from sink.metrics import start_exporter
from schemas.runtime import tune_gc
from sink.settings import SinkSettings


_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class KeyValueFormatter(logging.Formatter):
    """`time level logger message key=value ...`: the `extra=` fields the sink logs with, in logfmt."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        if extras:
            line += " " + " ".join(f"{k}={_value(v)}" for k, v in extras.items())
        return line


def _value(value: object) -> str:
    text = str(value)
    return f'"{text}"' if (" " in text or "=" in text or not text) else text


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    if root.handlers:  # somebody (a test, an embedding app) configured logging already
        return
    handler = logging.StreamHandler()
    handler.setFormatter(KeyValueFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))


async def _serve(settings: SinkSettings, client_id: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await SinkConsumer(settings, client_id=client_id).run(stop)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="touchstream sink", description="run a PostgreSQL sink worker")
    parser.add_argument("--client-id", default=f"touchstream-sink-{socket.gethostname()}",
                        help="Kafka client id of this worker (shows in the group's member list)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    settings = SinkSettings()
    start_exporter(settings.sink_metrics_port)
    tune_gc(settings)
    try:
        from uvloop import run
    except ImportError:  # pragma: no cover - uvloop is a dependency, but the sink runs without it
        run = asyncio.run
    run(_serve(settings, args.client_id))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
