"""`touchstream dashboard`: serve the dashboard (uvicorn) until stopped.

    touchstream dashboard                     http://127.0.0.1:8050/ (no login on loopback)
    touchstream dashboard --host 0.0.0.0      needs TOUCHSTREAM_DASHBOARD_PASSWORD_HASH (or _PASSWORD)
    touchstream dashboard --hash-password     reads a password, prints its hash for that setting

Logs as `component=dashboard worker=host:pid` in the project's one style (`schemas.logs`; uvicorn's
lines too), the first line (`msg=starting`) with its settings, secrets masked.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys

from schemas.logs import configure_logging, default_worker, secrets_of
from touchstream.console import CliError, error, load_settings

log = logging.getLogger("touchstream.dashboard")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="touchstream dashboard", description="serve the analysts' dashboard and its API")
    p.add_argument("--host", default=None, help="address to bind (default TOUCHSTREAM_DASHBOARD_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default TOUCHSTREAM_DASHBOARD_PORT, 8050)")
    p.add_argument("--log-level", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                   help="default: TOUCHSTREAM_LOG_LEVEL or INFO")
    p.add_argument("--hash-password", action="store_true",
                   help="read a password (stdin or prompt) and print its hash for TOUCHSTREAM_DASHBOARD_PASSWORD_HASH")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.hash_password:
        from dashboard.auth import hash_password

        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        if not password:
            error("an empty password cannot protect anything")
            return 2
        print(hash_password(password))
        return 0
    from dashboard.settings import DashboardSettings

    overrides = {k: v for k, v in {"dashboard_host": args.host, "dashboard_port": args.port}.items() if v is not None}
    try:
        settings = load_settings(DashboardSettings, **overrides)
    except CliError as exc:
        error(exc.message)
        return exc.code
    level = args.log_level or settings.log_level
    configure_logging(settings, "dashboard", worker=default_worker(), level=level, secrets=secrets_of(settings))
    import uvicorn

    from dashboard.app import create_app

    url = f"http://{settings.dashboard_host}:{settings.dashboard_port}/"
    reader = settings.pg_analyst_role if settings.dashboard_set_role else "the DSN login"
    log.info("starting", extra={"url": url, "login": settings.login_required, "reads_as": reader,
                                "settings": settings.model_dump(mode="json")})
    uvicorn.run(create_app(settings), host=settings.dashboard_host, port=settings.dashboard_port,
                log_config=None,  # uvicorn's loggers go through the structured handler (schemas.logs)
                log_level=level.lower(), access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
