"""Structured logs, one style for every process (SPEC section 7): the edge, the sessionizer, the
sink and the command line configure the root logger here, so their own lines and those of
Faust, aiokafka, asyncpg and uvicorn come out alike.

    TOUCHSTREAM_LOG_FORMAT   logfmt (default)  ts=... level=warning component=sink worker=sink-0
                                               logger=touchstream.sink.writer msg="..." attempt=3
                             json              the same fields, one JSON object per line
    TOUCHSTREAM_LOG_LEVEL    INFO by default; a command's --log-level wins

A line's fields: `ts` (UTC, milliseconds), `level`, `component` and `worker` (who wrote it, set
once by the process's `__main__`), `logger`, `msg`, then whatever the call passed as `extra=`
— by convention `partition`, `offset`, `topic` and counts (`records`, `hits`, ...) — and `exc`
with the traceback. Messages are constant text; what varies goes in fields, so lines can be
grepped and parsed alike. Each component's first line, "starting", carries its settings.

No secrets in logs: every line is redacted as it is formatted. URL passwords
(`postgresql://user:***@host`), `password=` / `secret=` / `salt=` style pairs (aiokafka's
`sasl_plain_password` included) and every secret value of the process's settings (`secrets_of`)
become `***`, wherever they appear: in the message, a field or a traceback.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any

import orjson
from pydantic import BaseModel, SecretStr

from schemas.settings import LogSettings

MASK = "***"
# Libraries that say a lot at INFO (Faust's and aiokafka's start-up and rebalance chatter, httpx's
# line per request): they log from WARNING up unless the level asks for DEBUG.
CHATTY = ("aiokafka", "faust", "mode", "httpx", "httpcore")

# Attributes every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
# scheme://user:PASSWORD@host (DSNs, broker URLs)
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s\"']*:)[^@\s\"']+(@)")
# password=..., 'sasl_plain_password': '...', secret: ..., salt=... (settings dumps, client configs)
_SECRET_NAME = r"[\w-]*(?:password|passwd|secret|salt|token)"
_SECRET_PAIR = re.compile(rf"""(\b{_SECRET_NAME}['"]?\s*[=:]\s*['"]?)([^'"\s,;&)}}\]]+)""", re.IGNORECASE)
_SECRET_KEY = re.compile(_SECRET_NAME, re.IGNORECASE)
_SHORTEST_SECRET = 4  # shorter values would mask ordinary words; the patterns above still catch them in place


def without_password(text: str) -> str:
    """`text` (a DSN, a message) with URL passwords and `password=` style values masked:
    `postgresql://user:***@host/db`."""
    return _SECRET_PAIR.sub(rf"\1{MASK}", _URL_PASSWORD.sub(rf"\1{MASK}\2", text))


class Redactor:
    """Masks secrets in text: URL passwords, `password=` style pairs, and the given values."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is masked whole.
        self.secrets = sorted({s for s in secrets if len(s) >= _SHORTEST_SECRET}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        text = without_password(text)
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


def secrets_of(*settings: BaseModel) -> list[str]:
    """The secret values of settings objects: SecretStr fields, and the password of every field
    holding a URL (a DSN; comma-separated lists of URLs too)."""
    found: list[str] = []
    for model in settings:
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, SecretStr):
                found.append(value.get_secret_value())
            elif isinstance(value, str) and "://" in value:
                found.extend(_url_passwords(value))
    return [s for s in found if s]


def _url_passwords(value: str) -> list[str]:
    passwords = []
    for part in value.split(","):
        try:
            password = urllib.parse.urlsplit(part.strip()).password
        except ValueError:
            continue
        if password:
            passwords += [password, urllib.parse.unquote(password)]
    return passwords


def default_worker() -> str:
    """This process on this machine: `host:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"


class LineFormatter(logging.Formatter):
    """One log record -> one redacted line of fields, rendered as logfmt or JSON."""

    def __init__(self, render: Callable[[dict[str, Any]], str], context: Mapping[str, str], redact: Redactor) -> None:
        super().__init__()
        self.render = render
        self.context = dict(context)
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        redact = self.redact
        fields: dict[str, Any] = {"ts": _timestamp(record.created), "level": record.levelname.lower()}
        fields.update(self.context)
        fields["logger"] = record.name
        fields["msg"] = redact(record.getMessage())
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                fields[key] = _field(value, redact)
        if record.exc_info:
            fields["exc"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            fields["exc"] = redact(record.exc_text)
        if record.stack_info:
            fields["stack"] = redact(self.formatStack(record.stack_info))
        return self.render(fields)


def _field(value: Any, redact: Redactor) -> Any:
    """A field's value as it is written: numbers as they are, lists item by item, the rest as text."""
    if value is None or isinstance(value, (int, float, bool)):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_field(item, redact) for item in value]
    if isinstance(value, dict):
        return {
            str(key): MASK if item and _SECRET_KEY.fullmatch(str(key)) else _field(item, redact)
            for key, item in value.items()
        }
    return redact(str(value))


def _timestamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def render_logfmt(fields: dict[str, Any]) -> str:
    return " ".join(f"{key}={_logfmt_value(value)}" for key, value in fields.items())


def _logfmt_value(value: Any) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        text = ",".join(map(str, value))
    elif isinstance(value, dict):
        text = " ".join(f"{key}={item}" for key, item in value.items())
    else:
        text = str(value)
    if text and not any(c in text for c in ' ="\\\n\r\t'):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def render_json(fields: dict[str, Any]) -> str:
    return orjson.dumps(fields).decode()


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {"logfmt": render_logfmt, "json": render_json}


def log_handler(
    settings: LogSettings,
    component: str,
    *,
    worker: str | None = None,
    secrets: Iterable[str] = (),
    stream: IO[str] | None = None,
) -> logging.Handler:
    """A handler writing this project's lines to `stream` (stderr by default)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    context = {"component": component} | ({"worker": worker} if worker else {})
    handler.setFormatter(LineFormatter(RENDERERS[settings.log_format], context, Redactor(secrets)))
    handler.touchstream = True  # type: ignore[attr-defined]  # ours: replaced when configured again
    return handler


def configure_logging(
    settings: LogSettings,
    component: str,
    *,
    worker: str | None = None,
    level: str | None = None,
    secrets: Iterable[str] = (),
    stream: IO[str] | None = None,
) -> None:
    """Send every logger of the process through one structured handler on the root logger.

    Called by each `__main__` once its settings are read (again with more context is fine: the
    previous handler of this module is replaced). When something else configured the root
    logger already (an application embedding a component, pytest's log capture), it is left
    alone. `level` (a command's --log-level) overrides `settings.log_level`.
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "touchstream", False)]
    if len(ours) < len(root.handlers):
        return
    for handler in ours:
        root.removeHandler(handler)
    root.addHandler(log_handler(settings, component, worker=worker, secrets=secrets, stream=stream))
    number = logging.getLevelName((level or settings.log_level).upper())
    root.setLevel(number)
    for name in CHATTY:
        logging.getLogger(name).setLevel(number if number <= logging.DEBUG else max(number, logging.WARNING))
