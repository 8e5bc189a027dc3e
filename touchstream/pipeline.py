"""Run the three components as separate processes: the demo, the end-to-end tests, the fault
suite and the load benchmark all use this, so what they exercise is what an operator runs.

Each process gets its settings through `TOUCHSTREAM_*` variables (as in production), its own
log file, and can be killed (`SIGKILL` included) and started again.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Component:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.running:
            return
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL, wait: float = 30.0) -> None:
        if not self.running:
            return
        assert self.process is not None
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.process.wait(wait)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM (clean shutdown: commits what was written), SIGKILL if it hangs."""
        self.kill(signal.SIGTERM)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


@dataclass
class Pipeline:
    """Edge + sessionizer worker(s) + sink worker(s) for one topic prefix and PostgreSQL schema."""

    workdir: Path
    kafka_bootstrap: str
    pg_dsn: str
    topic_prefix: str = "touchstream."
    pg_schema: str = "public"
    partitions: int = 8
    extra_env: dict[str, str] = field(default_factory=dict)
    ingest_port: int = 0
    admin_port: int = 0  # the edge's admin listener (/metrics, /readyz with the reason)
    log_level: str = "WARNING"  # of every component
    components: dict[str, Component] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.ingest_port:
            self.ingest_port = free_port()
        while not self.admin_port or self.admin_port == self.ingest_port:
            self.admin_port = free_port()

    @property
    def edge_url(self) -> str:
        return f"http://127.0.0.1:{self.ingest_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def env(self, **more: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHSTREAM_")}
        env.update(
            TOUCHSTREAM_KAFKA_BOOTSTRAP=self.kafka_bootstrap,
            TOUCHSTREAM_TOPIC_PREFIX=self.topic_prefix,
            TOUCHSTREAM_PARTITIONS=str(self.partitions),
            TOUCHSTREAM_PG_DSN=self.pg_dsn,
            TOUCHSTREAM_PG_SCHEMA=self.pg_schema,
        )
        env.update(self.extra_env)
        env.update(more)
        return env

    def _python(self, module: str, *args: str) -> list[str]:
        return [sys.executable, "-m", module, *args]

    def add_ingest(self, workers: int = 1) -> Component:
        comp = Component(
            "ingest",
            self._python("ingest", "--port", str(self.ingest_port), "--workers", str(workers), "--log-level",
                         self.log_level.lower()),
            self.env(TOUCHSTREAM_INGEST_ADMIN_PORT=str(self.admin_port)),
            self.workdir / "ingest.log",
        )
        self.components[comp.name] = comp
        return comp

    def add_sessionizer(self, index: int = 0, app_id: str | None = None) -> Component:
        name = f"sessionizer-{index}"
        comp = Component(
            name,
            self._python("sessionizer", "--web-port", str(free_port()), "--data-dir", str(self.workdir / name),
                         "--log-level", self.log_level),
            self.env(TOUCHSTREAM_SESSIONIZER_APP_ID=app_id or f"{self.topic_prefix}sessionizer"),
            self.workdir / f"{name}.log",
        )
        self.components[name] = comp
        return comp

    def add_sink(self, index: int = 0, group: str | None = None) -> Component:
        name = f"sink-{index}"
        comp = Component(
            name,
            self._python("sink", "--client-id", name, "--log-level", self.log_level),
            self.env(TOUCHSTREAM_SINK_GROUP=group or f"{self.topic_prefix}sink", TOUCHSTREAM_SINK_METRICS_PORT="0"),
            self.workdir / f"{name}.log",
        )
        self.components[name] = comp
        return comp

    def add_dashboard(self, port: int) -> Component:
        """`touchstream dashboard` on `port` (loopback: no login), reading this pipeline's schema."""
        comp = Component("dashboard", self._python("touchstream.cli", "dashboard", "--port", str(port)), self.env(),
                         self.workdir / "dashboard.log")
        self.components[comp.name] = comp
        comp.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not comp.running:
                raise RuntimeError(f"the dashboard exited:\n{comp.log_tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2.0).status_code == 200:
                    return comp
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the dashboard did not answer within 30 s:\n{comp.log_tail()}")

    def start(self, sessionizers: int = 1, sinks: int = 1, ingest_workers: int = 1) -> None:
        if "ingest" not in self.components:
            self.add_ingest(ingest_workers)
            for i in range(sessionizers):
                self.add_sessionizer(i)
            for i in range(sinks):
                self.add_sink(i)
        if any(name.startswith("sink-") for name in self.components):
            self.migrate()
        for comp in self.components.values():
            comp.start()
        self.wait_edge_ready()

    def migrate(self, timeout: float = 120.0) -> None:
        """`touchstream migrate` with the sinks' settings, before they start, as an operator
        deploys: every table exists once `start` returns. Each sink also migrates when it starts
        (finding nothing left to do), but that runs beside the edge's start, and a caller that
        read a table as soon as the edge was ready could find none (CI saw `relation "sessions"
        does not exist`)."""
        run = subprocess.run(self._python("touchstream.cli", "migrate"), env=self.env(), capture_output=True,
                             text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if run.returncode != 0:
            raise RuntimeError(f"`touchstream migrate` exited {run.returncode}:\n{run.stdout}{run.stderr}")

    def wait_edge_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            edge = self.components.get("ingest")
            if edge is not None and not edge.running:
                raise RuntimeError(f"the edge exited:\n{edge.log_tail()}")
            try:
                response = httpx.get(f"{self.edge_url}/readyz", timeout=2.0)
                if response.status_code == 200:
                    return
                last = response.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise RuntimeError(f"the edge was not ready after {timeout}s: {last}")

    def check_alive(self) -> None:
        dead = [c for c in self.components.values() if c.process is not None and not c.running]
        if dead:
            detail = "\n\n".join(f"--- {c.name} (exit {c.process.returncode}):\n{c.log_tail()}" for c in dead)  # type: ignore[union-attr]
            raise RuntimeError(f"components exited:\n{detail}")

    def stop(self) -> None:
        for comp in self.components.values():
            comp.stop()
