"""`touchstream sessionizer` (or `python -m sessionizer`): run one sessionizer worker.

Settings come from `TOUCHSTREAM_*` (see `sessionizer.settings`); the options below override
the two that must differ between workers on one machine. Workers with the same app id form a
consumer group and share the partitions of `hits`. A worker logs as `component=sessionizer
worker=host:web-port` (`schemas.logs`), Faust's and aiokafka's lines included.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from pathlib import Path

from schemas.logs import configure_logging, secrets_of
from schemas.runtime import tune_gc
from sessionizer.settings import SessionizerSettings

log = logging.getLogger("touchstream.sessionizer")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="touchstream sessionizer",
        description="Run a sessionizer worker (Faust): hits -> sessions/events/deadletter. "
        "Settings: TOUCHSTREAM_* environment variables.",
    )
    parser.add_argument("--web-port", type=int, help="Faust web port: /metrics, /healthz (TOUCHSTREAM_SESSIONIZER_WEB_PORT, 6066)")
    parser.add_argument("--data-dir", type=Path, help="RocksDB table folder (TOUCHSTREAM_SESSIONIZER_DATA_DIR)")
    parser.add_argument("--app-id", help="Faust app id / consumer group (TOUCHSTREAM_SESSIONIZER_APP_ID)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING... (TOUCHSTREAM_LOG_LEVEL)")
    return parser


def settings_from(argv: list[str]) -> SessionizerSettings:
    args = _parser().parse_args(argv)
    overrides = {}
    if args.web_port is not None:
        overrides["sessionizer_web_port"] = args.web_port
    if args.data_dir is not None:
        overrides["sessionizer_data_dir"] = args.data_dir
    if args.app_id is not None:
        overrides["sessionizer_app_id"] = args.app_id
    if args.log_level is not None:
        overrides["log_level"] = args.log_level
    return SessionizerSettings(**overrides)


def main(argv: list[str] | None = None) -> int:
    settings = settings_from(list(sys.argv[1:] if argv is None else argv))
    # The worker's name in the group is its web address; two workers on a machine differ by port.
    worker = f"{socket.gethostname()}:{settings.sessionizer_web_port}"
    configure_logging(settings, "sessionizer", worker=worker, secrets=secrets_of(settings))
    log.info("starting", extra={"settings": settings.model_dump(mode="json")})
    # Import Faust only now: `--help` stays fast.
    import faust

    from sessionizer.app import PartitionsMismatch, create_app, ensure_topics

    try:
        counts = asyncio.run(ensure_topics(settings))
    except PartitionsMismatch as exc:
        log.error("topics refused", extra={"reason": str(exc)})
        return 2
    except Exception as exc:  # Kafka unreachable and the like: say so plainly
        log.error("cannot prepare topics", extra={"bootstrap": settings.kafka_bootstrap, "error": repr(exc)})
        return 1
    log.info("topics ready", extra={"topics": sorted(counts), "partitions": max(counts.values(), default=0)})

    settings.sessionizer_data_dir.mkdir(parents=True, exist_ok=True)
    if settings.sessionizer_event_loop == "uvloop":
        import mode.loop

        mode.loop.use("uvloop")  # the policy: Faust's consumer thread gets a uvloop loop too
    asyncio.set_event_loop(asyncio.new_event_loop())
    app = create_app(settings)
    # override_logging=False: Faust keeps the handler configured above instead of its own.
    faust_worker = faust.Worker(app, quiet=True, override_logging=False)
    tune_gc(settings)  # after the app is built: its objects are frozen out of the collector's walks
    try:
        faust_worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) or exc.code is None else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
