"""`touchstream ingest`: run the edge under uvicorn (uvloop, httptools).

    touchstream ingest [--host 127.0.0.1] [--port 8080] [--workers N] [--log-level info]

Every other setting comes from `TOUCHSTREAM_*` environment variables (ingest/settings.py);
`--settings` prints them with their current values. Each worker process builds its own app
(and Kafka producer) from the environment, and logs as `component=ingest worker=host:pid`
(`schemas.logs`; uvicorn's own lines too).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile

from pydantic import ValidationError

from ingest.app import IngestApp, create_app
from ingest.metrics import Metrics
from ingest.settings import IngestSettings
from schemas.internals import require
from schemas.logs import configure_logging, default_worker, secrets_of
from schemas.runtime import tune_gc

log = logging.getLogger("touchstream.ingest")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LOG_LEVEL_ENV = "TOUCHSTREAM_LOG_LEVEL"


def app_from_env() -> IngestApp:
    """uvicorn's app factory (one call per worker)."""
    settings = IngestSettings()
    # A worker process spawned by uvicorn starts with no logging set up; `main` passed its level
    # down through the environment.
    configure_logging(settings, "ingest", worker=default_worker(), secrets=secrets_of(settings))
    app = create_app(settings, metrics=Metrics(multiprocess=bool(os.environ.get(MULTIPROC_ENV))))
    tune_gc(settings)
    return app


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="touchstream ingest", description="Run the HTTP ingest edge (POST /v1/hits).")
    p.add_argument("--host", help="listen address (default: TOUCHSTREAM_INGEST_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default: TOUCHSTREAM_INGEST_PORT or 8080)")
    p.add_argument("--workers", type=int, help="worker processes (default: TOUCHSTREAM_INGEST_WORKERS or 1)")
    p.add_argument("--log-level", type=str.lower, choices=["critical", "error", "warning", "info", "debug"],
                   help="default: TOUCHSTREAM_LOG_LEVEL or info")
    p.add_argument("--settings", action="store_true", help="print the effective settings and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = IngestSettings()
    except ValidationError as exc:
        print(f"touchstream ingest: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    if args.settings:
        for name, value in settings.model_dump().items():
            shown = "**********" if "salt" in name and value else value
            print(f"TOUCHSTREAM_{name.upper()}={shown}")
        return 0
    host = args.host or settings.ingest_host
    port = settings.ingest_port if args.port is None else args.port
    workers = args.workers or settings.ingest_workers
    if workers < 1:
        print("touchstream ingest: --workers must be at least 1", file=sys.stderr)
        return 2
    log_level = (args.log_level or settings.log_level).lower()
    os.environ[LOG_LEVEL_ENV] = log_level  # for the worker processes (app_from_env)
    configure_logging(settings, "ingest", worker=default_worker(), level=log_level, secrets=secrets_of(settings))
    log.info("starting", extra={"settings": settings.model_dump(mode="json"), "workers": workers})
    made_dir = None
    if workers > 1 and not os.environ.get(MULTIPROC_ENV):
        # prometheus-client sums the workers' metrics through files in this folder; it must be
        # set before the workers import it.
        made_dir = os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="touchstream-ingest-metrics-")

    try:
        _serve(host, port, workers, log_level, settings)
    finally:
        if made_dir is not None:
            shutil.rmtree(made_dir, ignore_errors=True)
    return 0


def _serve(host: str, port: int, workers: int, log_level: str, settings: IngestSettings) -> None:
    import uvicorn

    require("uvicorn")  # ingest.connection extends uvicorn's httptools protocol
    uvicorn.run(
        "ingest.__main__:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        # httptools, with the edge's read deadline and header cap (ingest.connection); named by
        # import path so that each worker process loads it.
        http="ingest.connection:GuardedHttpProtocol",
        limit_concurrency=settings.ingest_max_connections,  # beyond it: 503 at once
        lifespan="on",
        access_log=False,
        proxy_headers=False,  # the edge reads X-Forwarded-For itself, from trusted proxies only
        server_header=False,
        log_config=None,  # uvicorn's loggers go through the edge's structured handler (schemas.logs)
        log_level=log_level,
        timeout_keep_alive=30,
        backlog=4096,
    )


if __name__ == "__main__":
    sys.exit(main())
