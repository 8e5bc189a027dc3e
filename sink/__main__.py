"""`touchstream sink`: run one PostgreSQL sink worker (start several for more throughput: they
share the topics as one consumer group, `TOUCHSTREAM_SINK_GROUP`).

Runs the migrations first (unless TOUCHSTREAM_SINK_MIGRATE_ON_START=false), serves Prometheus
metrics on TOUCHSTREAM_SINK_METRICS_PORT (0: off), and stops cleanly on SIGINT/SIGTERM: the batch
in flight is finished and committed, or left uncommitted if PostgreSQL is away. Logs as
`component=sink worker=<client id>` (`schemas.logs`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys

from schemas.logs import configure_logging, secrets_of
from schemas.runtime import tune_gc
from sink.consumer import SinkConsumer
from sink.metrics import start_exporter
from sink.settings import SinkSettings

log = logging.getLogger("touchstream.sink")


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
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING... (default: TOUCHSTREAM_LOG_LEVEL or INFO)")
    args = parser.parse_args(argv)
    settings = SinkSettings()
    configure_logging(settings, "sink", worker=args.client_id, level=args.log_level, secrets=secrets_of(settings))
    log.info("starting", extra={"settings": settings.model_dump(mode="json")})
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
