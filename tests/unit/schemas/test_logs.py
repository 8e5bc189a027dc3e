"""The one log style (schemas.logs): logfmt and JSON lines with the component's fields, and no
secret ever written, wherever it hides in a record."""

from __future__ import annotations

import io
import logging

import orjson
import pytest

from schemas.logs import CHATTY, Redactor, configure_logging, log_handler, secrets_of, without_password
from schemas.settings import LogSettings, PostgresSettings

PASSWORD = "Tr0ub4dor-and-3"
DSN = f"postgresql://touchstream:{PASSWORD}@db.internal:5432/touchstream"


def capture(fmt: str, *, secrets: tuple[str, ...] = (), worker: str | None = "w-1") -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    logger = logging.getLogger(f"test.logs.{fmt}.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(log_handler(LogSettings(log_format=fmt), "sink", worker=worker, secrets=secrets, stream=stream))
    return logger, stream


def test_a_logfmt_line_has_the_context_the_message_and_the_fields_in_order() -> None:
    logger, stream = capture("logfmt")
    logger.warning("database write failed; retrying", extra={"attempt": 3, "error": 'refused "now"', "partition": 5})
    line = stream.getvalue().rstrip("\n")
    assert line.startswith("ts=") and "\n" not in line
    fields = line.split(" ", 1)[1]
    assert fields == (
        'level=warning component=sink worker=w-1 logger=' + logger.name
        + ' msg="database write failed; retrying" attempt=3 error="refused \\"now\\"" partition=5'
    )


def test_a_json_line_is_one_object_with_typed_fields_and_the_traceback() -> None:
    logger, stream = capture("json", worker=None)
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("round failed", extra={"records": 12, "topics": ["a", "b"]})
    [line] = stream.getvalue().splitlines()
    record = orjson.loads(line)
    assert record["level"] == "error" and record["component"] == "sink" and "worker" not in record
    assert (record["msg"], record["records"], record["topics"]) == ("round failed", 12, ["a", "b"])
    assert record["ts"].endswith("Z") and "ValueError: boom" in record["exc"]


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_a_dsn_with_a_password_never_appears_in_log_output(fmt: str) -> None:
    settings = PostgresSettings(pg_dsn=DSN)
    logger, stream = capture(fmt, secrets=tuple(secrets_of(settings)))
    logger.info("connecting to %s", DSN)
    logger.info("connecting", extra={"dsn": DSN, "settings": settings.model_dump()})
    logger.info("aiokafka config %r", {"sasl_mechanism": "PLAIN", "sasl_plain_password": PASSWORD})
    logger.warning("authentication failed for the password %s", PASSWORD)  # no URL around it: the settings say
    try:
        raise ConnectionError(f"cannot connect to {DSN}")
    except ConnectionError:
        logger.exception("PostgreSQL not ready")
    output = stream.getvalue()
    assert len(output.splitlines()) == 5
    assert PASSWORD not in output
    assert "touchstream:***@db.internal" in output and "sasl_plain_password" in output


def test_redaction_masks_passwords_and_leaves_ordinary_text() -> None:
    redact = Redactor([PASSWORD])
    assert redact("dsn=postgresql://u@h/db?password=abc&sslmode=require") == (
        "dsn=postgresql://u@h/db?password=***&sslmode=require"
    )
    assert redact("ingest_ip_hash_salt=0123456789abcdef ok") == "ingest_ip_hash_salt=*** ok"
    assert redact("time passed: 3s, tokens=5, 12 records") == "time passed: 3s, tokens=5, 12 records"
    assert without_password("kafka://broker:9092") == "kafka://broker:9092"


def test_secrets_of_reads_secret_fields_and_url_passwords() -> None:
    from ingest.settings import IngestSettings

    ingest = IngestSettings(ingest_ip_mode="hash", ingest_ip_hash_salt="a-salt-of-16-chars")
    assert secrets_of(ingest, PostgresSettings(pg_dsn=DSN)) == ["a-salt-of-16-chars", PASSWORD, PASSWORD]
    assert secrets_of(PostgresSettings(pg_dsn="postgresql://postgres@127.0.0.1/x")) == []


def test_configure_logging_replaces_its_own_handler_and_leaves_a_foreign_one(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    for name in CHATTY:
        monkeypatch.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)
    first, second = io.StringIO(), io.StringIO()
    configure_logging(LogSettings(), "ingest", stream=first)
    configure_logging(LogSettings(log_level="WARNING"), "sessionizer", worker="h:6066", stream=second)
    assert len(root.handlers) == 1 and root.level == logging.WARNING
    logging.getLogger("touchstream.test").warning("hello")
    assert first.getvalue() == "" and "component=sessionizer worker=h:6066" in second.getvalue()
    assert logging.getLogger("faust").level == logging.WARNING

    configure_logging(LogSettings(), "sink", level="debug", stream=first)
    assert root.level == logging.DEBUG and logging.getLogger("aiokafka").level == logging.DEBUG

    foreign = logging.StreamHandler(io.StringIO())
    root.handlers = [foreign]
    configure_logging(LogSettings(), "sink", stream=first)
    assert root.handlers == [foreign]


def test_the_log_level_setting_refuses_what_is_not_a_level() -> None:
    assert LogSettings(log_level="warning").log_level == "WARNING"
    with pytest.raises(ValueError, match="not a log level"):
        LogSettings(log_level="loud")
