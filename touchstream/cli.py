"""`touchstream` — one entry point, one subcommand per component.

Each subcommand lives in its own module and is imported only when it runs, so
`touchstream migrate` does not pay for importing Faust, and a broken optional
dependency of one component cannot stop the others from starting. Every command logs in the
project's one structured style (`schemas.logs`, `component=<command>`); the three components
set their worker id and level on top.
"""

from __future__ import annotations

import importlib
import sys

from pydantic import ValidationError

from schemas.logs import configure_logging, secrets_of
from schemas.settings import KafkaSettings, LogSettings, PostgresSettings

# name -> ("module:function", one-line help). Each function takes argv (list[str]) and returns an exit code.
COMMANDS: dict[str, tuple[str, str]] = {
    "stack": ("touchstream.devstack.cli:main", "start/stop the local Kafka broker and PostgreSQL (up|down|status|env)"),
    "ingest": ("ingest.__main__:main", "run the HTTP ingest edge"),
    "sessionizer": ("sessionizer.__main__:main", "run a sessionizer worker (Faust)"),
    "sink": ("sink.__main__:main", "run a PostgreSQL sink worker"),
    "migrate": ("sink.migrations:main", "create or upgrade the PostgreSQL schema"),
    "topics": ("schemas.topics:main", "create the Kafka topics"),
    "demo": ("touchstream.demo:main", "run the whole pipeline with synthetic traffic"),
    "import": ("touchstream.importer:main", "send hits from an NDJSON file to the edge"),
    "report": ("touchstream.report:main", "attribution tables (and a PNG chart with --chart)"),
    "journey": ("touchstream.journey:main", "a device's sessions and conversions in order"),
    "forget": ("touchstream.forget:main", "delete a device's data everywhere"),
    "attribution": ("touchstream.attribution:main", "attribution's lookback and URL conversion rules (show|set|rule)"),
    "dashboard": ("dashboard.__main__:main", "serve the analysts' dashboard and its JSON API (read-only)"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: touchstream <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def _secrets() -> list[str]:
    """What the commands' log lines must never show: the Kafka and PostgreSQL secrets of the
    environment (a setting that does not validate is the command's to report, not ours)."""
    found: list[str] = []
    for settings in (KafkaSettings, PostgresSettings):
        try:
            found += secrets_of(settings())
        except ValidationError:
            continue
    return found


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"touchstream: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        configure_logging(LogSettings(), name, secrets=_secrets())
    except ValidationError as exc:
        print(f"touchstream: bad log setting:\n{exc}", file=sys.stderr)
        return 2
    target, _ = COMMANDS[name]
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
