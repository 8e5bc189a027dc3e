"""The README's settings table, rendered from the settings classes themselves, so the
documentation cannot drift from the code (a unit test compares the two).

    python -m touchstream.settings_table   # prints the Markdown table
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic_settings import BaseSettings

from schemas.settings import ENV_PREFIX, KafkaSettings, LogSettings, PostgresSettings, RuntimeSettings

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def _classes() -> list[tuple[str, type[BaseSettings]]]:
    from dashboard.settings import DashboardSettings
    from ingest.settings import IngestSettings
    from sessionizer.settings import SessionizerSettings
    from sink.settings import SinkSettings
    from touchstream.forget import ForgetSettings
    from touchstream.importer import ImportSettings
    from touchstream.report import ReportSettings

    return [
        ("all components", KafkaSettings),
        ("PostgreSQL", PostgresSettings),
        ("every command", LogSettings),
        ("ingest, sessionizer, sink", RuntimeSettings),
        ("ingest", IngestSettings),
        ("sessionizer", SessionizerSettings),
        ("sink", SinkSettings),
        ("import", ImportSettings),
        ("report / journey", ReportSettings),
        ("forget", ForgetSettings),
        ("dashboard", DashboardSettings),
    ]


def _default(field) -> str:  # type: ignore[no-untyped-def]
    if field.default_factory is not None:
        value = field.default_factory()
    else:
        value = field.default
    if value is None:
        return "(unset)"
    if isinstance(value, Path) and value.is_absolute():
        # Defaults inside the installed package would show this machine's path.
        try:
            value = value.relative_to(REPO)
        except ValueError:
            pass
    text = ",".join(map(str, value)) if isinstance(value, (list, tuple, set, frozenset)) else str(value)
    return f"`{text}`" if text else '`""`'


def render() -> str:
    lines = ["| variable | used by | default | meaning |", "|---|---|---|---|"]
    seen: set[str] = set()
    for used_by, cls in _classes():
        prefix = cls.model_config.get("env_prefix", ENV_PREFIX)
        for name, field in cls.model_fields.items():
            var = f"{prefix}{name}".upper()
            if var in seen:
                continue
            seen.add(var)
            meaning = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{var}` | {used_by} | {_default(field)} | {meaning} |")
    return "\n".join(lines)


def readme_section(readme: str) -> str:
    """The table as it stands in the README, between the two markers."""
    return readme.split(START, 1)[1].split(END, 1)[0].strip()


def write_readme(path: Path = REPO / "README.md") -> None:
    text = path.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{render()}\n{END}{tail}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write_readme()
    else:
        sys.stdout.write(render() + "\n")
