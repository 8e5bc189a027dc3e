"""`touchstream dashboard`: serve the dashboard (uvicorn) until stopped.

    touchstream dashboard                     http://127.0.0.1:8050/ (no login on loopback)
    touchstream dashboard --host 0.0.0.0      needs TOUCHSTREAM_DASHBOARD_PASSWORD_HASH (or _PASSWORD)
    touchstream dashboard --hash-password     reads a password, prints its hash for that setting
"""

from __future__ import annotations

import argparse
import getpass
import sys

from touchstream.console import CliError, error, load_settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="touchstream dashboard", description="serve the analysts' dashboard and its API")
    p.add_argument("--host", default=None, help="address to bind (default TOUCHSTREAM_DASHBOARD_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default TOUCHSTREAM_DASHBOARD_PORT, 8050)")
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
    import uvicorn

    from dashboard.app import create_app

    login = "login required" if settings.login_required else "no login (loopback)"
    print(f"touchstream dashboard: http://{settings.dashboard_host}:{settings.dashboard_port}/ ({login}); "
          f"reading schema {settings.pg_schema!r} as {settings.pg_analyst_role if settings.dashboard_set_role else 'the DSN login'}",
          flush=True)
    uvicorn.run(create_app(settings), host=settings.dashboard_host, port=settings.dashboard_port,
                log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
