"""The one log style, from real processes: `touchstream sink`, `touchstream ingest` and
`touchstream migrate` started as an operator starts them, with a PostgreSQL DSN that carries a
password and services that are not there. Every line is structured, says who wrote it, and the
password appears nowhere in the output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from touchstream.devstack.process import free_port

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "pw-Zq8-never-logged"


def _env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHSTREAM_")}
    env.update(
        TOUCHSTREAM_PG_DSN=f"postgresql://writer:{PASSWORD}@127.0.0.1:{free_port()}/touchstream",
        TOUCHSTREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",  # nothing listens there
        **more,
    )
    return env


def _run_until(argv: list[str], env: dict[str, str], wanted: str, tmp: Path, timeout: float = 30.0) -> str:
    """Start a command, wait until its output contains `wanted`, stop it with SIGTERM; its output."""
    log = tmp / "out.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "touchstream.cli", *argv], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while wanted not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return log.read_text()


def test_the_sink_logs_json_lines_with_its_worker_and_never_the_password(tmp_path: Path) -> None:
    env = _env(TOUCHSTREAM_LOG_FORMAT="json", TOUCHSTREAM_SINK_METRICS_PORT="0", TOUCHSTREAM_SINK_RETRY_INITIAL_S="0.05")
    output = _run_until(["sink", "--client-id", "sink-7"], env, "PostgreSQL not ready", tmp_path)
    assert PASSWORD not in output
    lines = [orjson.loads(line) for line in output.splitlines()]
    assert {(line["component"], line["worker"]) for line in lines} == {("sink", "sink-7")}
    starting = next(line for line in lines if line["msg"] == "starting")
    assert starting["settings"]["pg_dsn"].startswith("postgresql://writer:***@127.0.0.1:")
    assert any(line["msg"] == "PostgreSQL not ready; retrying" and line["level"] == "warning" for line in lines)


def test_the_edge_and_uvicorn_log_in_logfmt_and_never_the_password(tmp_path: Path) -> None:
    env = _env(TOUCHSTREAM_INGEST_IP_MODE="hash", TOUCHSTREAM_INGEST_IP_HASH_SALT=PASSWORD)
    output = _run_until(["ingest", "--port", str(free_port())], env, "Application startup complete", tmp_path)
    assert PASSWORD not in output
    lines = output.splitlines()
    assert lines and all(line.startswith("ts=") and " component=ingest worker=" in line for line in lines)
    assert any("logger=uvicorn.error" in line and 'msg="Application startup complete."' in line for line in lines)
    assert any('msg="cannot reach Kafka; retrying"' in line for line in lines)


def test_migrate_names_the_database_it_cannot_reach_without_its_password() -> None:
    run = subprocess.run([sys.executable, "-m", "touchstream.cli", "migrate"], cwd=REPO, env=_env(),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "cannot reach PostgreSQL at postgresql://writer:***@127.0.0.1:" in run.stderr
    assert PASSWORD not in run.stdout + run.stderr
