"""`touchstream ingest`: run the edge under uvicorn (uvloop, httptools).

    touchstream ingest [--host 127.0.0.1] [--port 8080] [--workers N] [--log-level info]

Every other setting comes from `TOUCHSTREAM_*` environment variables (ingest/settings.py);
`--settings` prints them with their current values. Each worker process builds its own app
(and Kafka producer) from the environment.
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
from schemas.runtime import tune_gc

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def app_from_env() -> IngestApp:
    """uvicorn's app factory (one call per worker)."""
    settings = IngestSettings()
    app = create_app(settings, metrics=Metrics(multiprocess=bool(os.environ.get(MULTIPROC_ENV))))
    tune_gc(settings)
    return app


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="touchstream ingest", description="Run the HTTP ingest edge (POST /v1/hits).")
    p.add_argument("--host", help="listen address (default: TOUCHSTREAM_INGEST_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default: TOUCHSTREAM_INGEST_PORT or 8080)")
    p.add_argument("--workers", type=int, help="worker processes (default: TOUCHSTREAM_INGEST_WORKERS or 1)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
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
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    made_dir = None
    if workers > 1 and not os.environ.get(MULTIPROC_ENV):
        # prometheus-client sums the workers' metrics through files in this folder; it must be
        # set before the workers import it.
        made_dir = os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="touchstream-ingest-metrics-")

    try:
        _serve(host, port, workers, args.log_level)
    finally:
        if made_dir is not None:
            shutil.rmtree(made_dir, ignore_errors=True)
    return 0


def _serve(host: str, port: int, workers: int, log_level: str) -> None:
    import uvicorn

    uvicorn.run(
        "ingest.__main__:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        proxy_headers=False,  # the edge reads X-Forwarded-For itself, from trusted proxies only
        server_header=False,
        log_level=log_level,
        timeout_keep_alive=30,
        backlog=4096,
    )


if __name__ == "__main__":
    sys.exit(main())
