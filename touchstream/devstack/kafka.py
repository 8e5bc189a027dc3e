"""The local Kafka broker: KRaft, one node, jars from Maven Central, run as a background JVM."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import shutil
import string
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .paths import PACKAGE_DIR, StackConfig
from .process import (
    StackError,
    apt_install,
    cmdline,
    log,
    pid_alive,
    port_bindable,
    port_open,
    read_pid,
    run_sync,
    stack_lock,
    tail,
    terminate,
)

POM = PACKAGE_DIR / "pom.xml"
LOG4J2 = PACKAGE_DIR / "log4j2.xml"
PROPERTIES_TEMPLATE = PACKAGE_DIR / "server.properties"
HEAP = "-Xmx1g"
MAIN_CLASS = "kafka.Kafka"
LIBS_MARKER = ".complete"

# Popen handles of brokers started by this process (kept so they are not reported as leaked).
_children: dict[int, subprocess.Popen] = {}


@dataclass
class KafkaStatus:
    pid: int | None
    port: int
    controller_port: int
    ready: bool

    @property
    def running(self) -> bool:
        return self.pid is not None


# --- tools ----------------------------------------------------------------------------

def java_bin() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "java").is_file():
        return str(Path(home, "bin", "java"))
    found = shutil.which("java")
    if found:
        return found
    apt_install(["default-jre-headless"], "Java is missing (the broker runs on a JVM)")
    found = shutil.which("java")
    if not found:
        raise StackError("java is still not on PATH after installing it")
    return found


def mvn_bin() -> str:
    found = shutil.which("mvn")
    if found:
        return found
    apt_install(["maven"], "Maven is missing (it fetches the broker's jars)")
    found = shutil.which("mvn")
    if not found:
        raise StackError("mvn is still not on PATH after installing it")
    return found


def classpath(cfg: StackConfig) -> str:
    return f"{cfg.kafka_libs_dir}/*"


def kafka_clients_jar(cfg: StackConfig | None = None) -> Path:
    """The kafka-clients jar the broker runs with (tests use it to run the Java partitioner)."""
    cfg = cfg or StackConfig.from_env()
    jars = sorted(cfg.kafka_libs_dir.glob("kafka-clients-*.jar"))
    if not jars:
        raise StackError(f"no kafka-clients jar in {cfg.kafka_libs_dir}; run `touchstream stack up`")
    return jars[-1]


# --- jars -----------------------------------------------------------------------------

def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def libs_present(cfg: StackConfig) -> bool:
    marker = cfg.kafka_libs_dir / LIBS_MARKER
    try:
        return marker.read_text().strip() == _pom_digest()
    except OSError:
        return False


def ensure_libs(cfg: StackConfig) -> float | None:
    """Copy the broker's jars into the libs folder; None when they are already there."""
    if libs_present(cfg):
        return None
    started = time.monotonic()
    mvn = mvn_bin()
    java_bin()
    libs = cfg.kafka_libs_dir
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = libs.parent / f".libs-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    # Run Maven on a copy of the pom, so that nothing is written next to the package.
    pom = staging / "pom.xml"
    shutil.copyfile(POM, pom)
    log(f"  kafka: fetching the broker's jars with Maven into {libs} ...")
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
         "-DincludeScope=runtime", f"-DoutputDirectory={staging / 'jars'}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        out = "\n".join(result.stdout.splitlines()[-40:])
        raise StackError(f"mvn dependency:copy-dependencies failed (exit {result.returncode}):\n{out}")
    jars = staging / "jars"
    if not any(jars.glob("kafka_2.13-*.jar")) or not any(jars.glob("kafka-clients-*.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        raise StackError(f"Maven finished but {jars} holds no Kafka jars")
    (jars / LIBS_MARKER).write_text(_pom_digest() + "\n")
    shutil.rmtree(libs, ignore_errors=True)
    jars.rename(libs)
    shutil.rmtree(staging, ignore_errors=True)
    return time.monotonic() - started


# --- configuration and storage ----------------------------------------------------------

def render_properties(cfg: StackConfig) -> Path:
    text = string.Template(PROPERTIES_TEMPLATE.read_text()).substitute(
        host=cfg.host,
        port=cfg.kafka_port,
        controller_port=cfg.kafka_controller_port,
        log_dirs=cfg.kafka_data_dir,
    )
    cfg.kafka_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.kafka_properties.exists() or cfg.kafka_properties.read_text() != text:
        cfg.kafka_properties.write_text(text)
    shutil.copyfile(LOG4J2, cfg.kafka_dir / "log4j2.xml")
    return cfg.kafka_properties


def formatted(cfg: StackConfig) -> bool:
    return (cfg.kafka_data_dir / "meta.properties").is_file()


def new_cluster_id() -> str:
    """What `kafka-storage random-uuid` prints (Kafka's Uuid: URL-safe base64 of 16 random
    bytes, no padding, never starting with '-'), without paying for a JVM start."""
    while True:
        raw = os.urandom(16)
        text = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        if not text.startswith("-") and raw not in (bytes(16), bytes(15) + b"\x01"):  # ZERO, METADATA_TOPIC_ID
            return text


def format_storage(cfg: StackConfig) -> float | None:
    """Format the KRaft log directory once (a new cluster id); None when already formatted."""
    if formatted(cfg):
        return None
    started = time.monotonic()
    java = java_bin()
    base = [java, "-Xmx256m", f"-Dlog4j2.configurationFile={cfg.kafka_dir / 'log4j2.xml'}",
            "-cp", classpath(cfg), "kafka.tools.StorageTool"]
    cluster_id = new_cluster_id()
    shutil.rmtree(cfg.kafka_data_dir, ignore_errors=True)
    result = subprocess.run(
        [*base, "format", "--standalone", "-t", cluster_id, "-c", str(cfg.kafka_properties)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0 or not formatted(cfg):
        raise StackError(f"kafka StorageTool format failed:\n{result.stdout}{result.stderr}")
    return time.monotonic() - started


# --- process --------------------------------------------------------------------------

def kafka_pid(cfg: StackConfig) -> int | None:
    """The pid of this stack's broker if it runs (a stale pid file is removed)."""
    pid = read_pid(cfg.kafka_pid_file)
    if pid is None:
        return None
    if pid_alive(pid):
        args = cmdline(pid)
        # An unreadable command line (a process being set up) is given the benefit of the doubt.
        if not args or (MAIN_CLASS in args and str(cfg.kafka_properties) in args):
            return pid
    with contextlib.suppress(OSError):
        cfg.kafka_pid_file.unlink()
    return None


class _ProbeThreadFilter(logging.Filter):
    """Drops aiokafka's connection errors logged by a readiness probe (and nothing else):
    a broker that is still starting is expected, not an error worth printing."""

    threads: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread not in self.threads


_probe_filter = _ProbeThreadFilter()
for _name in ("aiokafka", "aiokafka.conn", "aiokafka.client", "aiokafka.admin.client", "aiokafka.cluster"):
    logging.getLogger(_name).addFilter(_probe_filter)


async def probe(bootstrap: str, timeout: float = 5.0) -> bool:
    """True when the broker answers a real metadata request and lists itself as a broker."""
    host, _, port = bootstrap.rpartition(":")
    if not port_open(host, int(port)):
        return False
    from aiokafka.admin import AIOKafkaAdminClient

    thread = threading.get_ident()
    _ProbeThreadFilter.threads.add(thread)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000),
                                client_id="touchstream-stack-probe")
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            cluster = await admin.describe_cluster()
        return bool(cluster.get("brokers"))
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
        _ProbeThreadFilter.threads.discard(thread)


def ready(cfg: StackConfig | None = None, timeout: float = 5.0) -> bool:
    cfg = cfg or StackConfig.from_env()
    return run_sync(probe(cfg.kafka_bootstrap, timeout))


def status(cfg: StackConfig | None = None) -> KafkaStatus:
    cfg = cfg or StackConfig.from_env()
    pid = kafka_pid(cfg)
    return KafkaStatus(pid=pid, port=cfg.kafka_port, controller_port=cfg.kafka_controller_port,
                       ready=pid is not None and ready(cfg, timeout=3.0))


def launch(cfg: StackConfig) -> dict[str, float]:
    """Start the broker in the background unless it runs; returns the time of each step."""
    timings: dict[str, float] = {}
    if kafka_pid(cfg) is not None:
        return timings
    for port in (cfg.kafka_port, cfg.kafka_controller_port):
        if not port_bindable(cfg.host, port):
            raise StackError(
                f"port {cfg.host}:{port} is taken by another process (not this stack's broker); "
                "stop it or choose other ports with TOUCHSTREAM_STACK_KAFKA_PORT")
    if (spent := ensure_libs(cfg)) is not None:
        timings["jars"] = spent
    render_properties(cfg)
    if (spent := format_storage(cfg)) is not None:
        timings["format"] = spent
    java = java_bin()
    cfg.kafka_log.parent.mkdir(parents=True, exist_ok=True)
    with open(cfg.kafka_log, "ab") as out:
        out.write(f"\n==== touchstream stack: starting Kafka at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            [java, HEAP, "-Xms256m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
             f"-Dlog4j2.configurationFile={cfg.kafka_dir / 'log4j2.xml'}",
             f"-Dkafka.logs.dir={cfg.kafka_dir}",
             "-cp", classpath(cfg), MAIN_CLASS, str(cfg.kafka_properties)],
            cwd=cfg.kafka_dir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    cfg.kafka_pid_file.write_text(f"{proc.pid}\n")
    return timings


def _fate(pid: int | None) -> str:
    """What became of a broker process we launched (for error messages)."""
    if pid is None:
        return "no pid file"
    time.sleep(0.5)  # let its last words reach the log
    proc = _children.get(pid)
    code = proc.poll() if proc is not None else None
    if code is not None:
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        return f"pid {pid}, {how}"
    if pid_alive(pid):
        return f"pid {pid} still runs but is not this stack's broker: {' '.join(cmdline(pid))[:200]}"
    return f"pid {pid}, gone"


def wait_ready(cfg: StackConfig, timeout: float = 120.0) -> float:
    """Block until the broker answers metadata requests; returns the seconds waited."""
    started = time.monotonic()
    deadline = started + timeout
    launched = read_pid(cfg.kafka_pid_file)
    while True:
        pid = kafka_pid(cfg)
        if pid is None:
            raise StackError(f"the Kafka broker exited during start-up ({_fate(launched)}); "
                             f"last lines of {cfg.kafka_log}:\n{tail(cfg.kafka_log)}")
        if ready(cfg, timeout=3.0):
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise StackError(f"the Kafka broker (pid {pid}) did not become ready within {timeout:.0f}s; "
                             f"see {cfg.kafka_log}:\n{tail(cfg.kafka_log)}")
        time.sleep(0.25)


def start(cfg: StackConfig | None = None, timeout: float = 120.0) -> dict[str, float]:
    """Idempotent: start the broker if needed and wait until it is ready."""
    cfg = cfg or StackConfig.from_env()
    with stack_lock(cfg.lock_file):
        timings = launch(cfg)
        timings["ready"] = wait_ready(cfg, timeout)
        return timings


def stop(cfg: StackConfig | None = None, timeout: float = 60.0, *, hard: bool = False) -> bool:
    """Stop the broker (SIGTERM and wait; SIGKILL when `hard`). False if it was not running."""
    cfg = cfg or StackConfig.from_env()
    with stack_lock(cfg.lock_file):
        pid = kafka_pid(cfg)
        if pid is None:
            return False
        terminate(pid, timeout, hard=hard)
        proc = _children.pop(pid, None)
        if proc is not None:
            with contextlib.suppress(Exception):
                proc.wait(timeout=1)
        with contextlib.suppress(OSError):
            cfg.kafka_pid_file.unlink()
        return True


def wipe(cfg: StackConfig) -> None:
    """Delete the broker's data and configuration (keeps the jars)."""
    shutil.rmtree(cfg.kafka_data_dir, ignore_errors=True)
    for name in ("server.properties", "kafka.log", "kafka.pid", "log4j2.xml"):
        with contextlib.suppress(OSError):
            (cfg.kafka_dir / name).unlink()
