"""`touchstream stack up|down|status|env|browser` — the local Kafka broker and PostgreSQL, and the
headless Chromium the browser tests drive.

`up` prints its progress on stderr and only the settings on stdout, so
`eval "$(touchstream stack up)"` sets up a shell.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from . import browser, kafka, postgres
from .paths import StackConfig, info
from .process import StackError
from .stack import down, up


def _fmt(timings: dict[str, float]) -> str:
    return ", ".join(f"{step} {seconds:.1f}s" for step, seconds in timings.items())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="touchstream stack",
        description="Run a local Kafka broker (KRaft, single node) and PostgreSQL 15 as plain "
                    "processes, with data under .stack/ (TOUCHSTREAM_STACK_DIR). Ports: "
                    "TOUCHSTREAM_STACK_KAFKA_PORT (19092), TOUCHSTREAM_STACK_PG_PORT (15432). PostgreSQL "
                    "password: TOUCHSTREAM_STACK_PG_PASSWORD (ts-dev-password).")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start both services (reuses what already runs) and print the settings")
    p_up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for readiness (180)")
    p_up.add_argument("--brokers", type=int, choices=range(1, 10), metavar="N",
                      help="Kafka brokers (a KRaft cluster when more than 1; TOUCHSTREAM_STACK_KAFKA_BROKERS, 1)")
    p_up.add_argument("--tls", action="store_true",
                      help="also SASL_SSL and SSL listeners, PostgreSQL over TLS with a login per role; "
                           "prints their settings (TOUCHSTREAM_STACK_TLS=1)")
    p_down = sub.add_parser("down", help="stop both services")
    p_down.add_argument("--wipe", action="store_true", help="also delete their data (the jars are kept)")
    sub.add_parser("status", help="what runs, pids, ports, ready or not (exit 1 unless both are ready)")
    p_env = sub.add_parser("env", help="print the export lines of the settings")
    p_env.add_argument("--tls", action="store_true", help="the settings of a `--tls` stack's secure listeners")
    sub.add_parser("browser", help="install Debian's chromium and chromium-driver if missing (the browser tests)")
    return parser


def _up(cfg: StackConfig, timeout: float) -> int:
    report = up(cfg, timeout)
    k_state = "running" if report.kafka_reused else "started"
    p_state = "running" if report.postgres_reused else "started"
    err = sys.stderr
    print(f"kafka     {k_state:<8} pid {report.kafka_pid:<8} {cfg.kafka_bootstrap} "
          f"(controller {cfg.kafka_controller_port}; {cfg.brokers} broker(s))  {_fmt(report.kafka)}", file=err)
    if cfg.tls:
        print(f"tls       SASL_SSL {cfg.kafka_sasl_bootstrap}, SSL (client certificate) {cfg.kafka_ssl_bootstrap}, "
              f"PostgreSQL hostssl; material in {cfg.tls_dir}", file=err)
    print(f"postgres  {p_state:<8} pid {report.postgres_pid:<8} {cfg.host}:{cfg.pg_port} "
          f"(database touchstream)  {_fmt(report.postgres)}", file=err)
    print(f"stack up in {report.seconds:.1f}s (data in {cfg.root})", file=err, flush=True)
    print(report.info.export_lines())
    return 0


def _status(cfg: StackConfig) -> int:
    k = kafka.status(cfg)
    p = postgres.status(cfg)
    rows = [
        ("kafka", k.pid, f"{cfg.host}:{k.port} (controller {k.controller_port})", k.ready),
        ("postgres", p.pid, f"{cfg.host}:{p.port}", p.ready),
    ]
    for name, pid, where, ready in rows:
        state = "ready" if ready else ("running, NOT ready" if pid else "stopped")
        print(f"{name:<9} {state:<19} pid {pid or '-':<8} {where}")
    print(f"data in {cfg.root}")
    return 0 if k.ready and p.ready else 1


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    cfg = StackConfig.from_env()
    if getattr(args, "brokers", None):
        cfg = dataclasses.replace(cfg, brokers=args.brokers)
    if getattr(args, "tls", False):
        cfg = dataclasses.replace(cfg, tls=True)
    try:
        if args.command == "up":
            return _up(cfg, args.timeout)
        if args.command == "down":
            stopped = down(cfg, wipe=args.wipe)
            for name, was_running in stopped.items():
                print(f"{name:<9} {'stopped' if was_running else 'was not running'}")
            if args.wipe:
                print(f"data deleted under {cfg.root} (the broker's jars are kept)")
            return 0
        if args.command == "status":
            return _status(cfg)
        if args.command == "browser":
            installed = browser.ensure()
            paths = ", ".join(browser.binaries().values())
            print(f"browser   {'installed ' + ' '.join(installed) if installed else 'present'}: {paths}", file=sys.stderr)
            return 0
        if args.command == "env":
            print(info(cfg).export_lines())
            return 0
    except StackError as exc:
        print(f"touchstream stack {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2
