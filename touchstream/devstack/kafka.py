"""The local Kafka brokers: KRaft, one node or a cluster of N (`up --brokers N`), jars from Maven
Central, each run as a background JVM; with `up --tls`, SASL_SSL and SSL listeners beside PLAINTEXT."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import string
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .paths import PACKAGE_DIR, KafkaNode, StackConfig
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
from .tls import SASL_USER
from .tls import material as tls_material

POM = PACKAGE_DIR / "pom.xml"
LOG4J2 = PACKAGE_DIR / "log4j2.xml"
PROPERTIES_TEMPLATE = PACKAGE_DIR / "server.properties"
TLS_TEMPLATE = PACKAGE_DIR / "server-tls.properties"
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
    pids: list[int | None] = field(default_factory=list)  # every broker's, in node order

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

def _listeners(cfg: StackConfig, node: KafkaNode) -> tuple[str, str, str]:
    """(listeners, advertised.listeners, listener.security.protocol.map) of a node."""
    h = node.host
    listeners = [f"PLAINTEXT://{h}:{node.port}"]
    protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
    if cfg.tls:
        listeners += [f"SASL_SSL://{h}:{node.sasl_ssl_port}", f"SSL://{h}:{node.ssl_port}"]
        protocols += ["SASL_SSL:SASL_SSL", "SSL:SSL"]
    return (",".join([*listeners, f"CONTROLLER://{h}:{node.controller_port}"]), ",".join(listeners),
            ",".join(protocols))


def _quorum(cfg: StackConfig) -> str:
    nodes = cfg.kafka_nodes
    if len(nodes) == 1:  # a dynamic quorum of one, formatted --standalone
        return f"controller.quorum.bootstrap.servers={nodes[0].host}:{nodes[0].controller_port}"
    # A static quorum: every node votes, the storage is formatted without initial controllers.
    return "controller.quorum.voters=" + ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in nodes)


def properties_text(cfg: StackConfig, node: KafkaNode) -> str:
    listeners, advertised, protocols = _listeners(cfg, node)
    tls = ""
    if cfg.tls:
        m = tls_material(cfg.root)
        tls = string.Template(TLS_TEMPLATE.read_text()).substitute(
            sasl_user=SASL_USER, sasl_password=m.secret("sasl"), keystore=m.broker_keystore,
            keystore_password=m.secret("keystore"), truststore=m.ca_cert,
        )
    return string.Template(PROPERTIES_TEMPLATE.read_text()).substitute(
        node_id=node.node_id,
        quorum=_quorum(cfg),
        listeners=listeners,
        advertised_listeners=advertised,
        protocol_map=protocols,
        log_dirs=node.data_dir,
        replicas=min(3, cfg.brokers),
        min_isr=min(2, cfg.brokers),
        tls=tls,
    )


def render_properties(cfg: StackConfig, node: KafkaNode | None = None) -> Path:
    """Write a node's server.properties (mode 0600: with TLS it holds the keystore password)."""
    node = node or cfg.kafka_nodes[0]
    text = properties_text(cfg, node)
    node.dir.mkdir(parents=True, exist_ok=True)
    if not node.properties.exists() or node.properties.read_text() != text:
        node.properties.write_text(text)
    os.chmod(node.properties, 0o600)
    shutil.copyfile(LOG4J2, node.dir / "log4j2.xml")
    return node.properties


def formatted(node: KafkaNode) -> bool:
    return (node.data_dir / "meta.properties").is_file()


def new_cluster_id() -> str:
    """What `kafka-storage random-uuid` prints (Kafka's Uuid: URL-safe base64 of 16 random
    bytes, no padding, never starting with '-'), without paying for a JVM start."""
    while True:
        raw = os.urandom(16)
        text = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        if not text.startswith("-") and raw not in (bytes(16), bytes(15) + b"\x01"):  # ZERO, METADATA_TOPIC_ID
            return text


def _layout_file(cfg: StackConfig) -> Path:
    return cfg.kafka_dir / "layout"


def check_layout(cfg: StackConfig) -> None:
    """Refuse to start a formatted stack as another shape: its quorum and SCRAM users were
    written when it was formatted."""
    wanted = f"brokers={cfg.brokers} scram=1"
    try:
        found = _layout_file(cfg).read_text().strip()
    except OSError:
        found = "brokers=1 scram=0"  # formatted before the layout was recorded
    if not formatted(cfg.kafka_nodes[0]) or found == wanted:
        return
    if not found.startswith(f"brokers={cfg.brokers} ") or cfg.tls:
        raise StackError(f"this stack's Kafka storage was formatted as {found!r}, not {wanted!r} (broker count, "
                         "SCRAM users for --tls): run `touchstream stack down --wipe` first")


def format_storage(cfg: StackConfig, node: KafkaNode | None = None) -> float | None:
    """Format a node's KRaft log directory once; None when already formatted. Every node of a
    cluster gets the same cluster id, and the SCRAM users of the SASL_SSL listener."""
    node = node or cfg.kafka_nodes[0]
    if formatted(node):
        return None
    started = time.monotonic()
    java = java_bin()
    base = [java, "-Xmx256m", f"-Dlog4j2.configurationFile={node.dir / 'log4j2.xml'}",
            "-cp", classpath(cfg), "kafka.tools.StorageTool"]
    id_file = cfg.kafka_dir / "cluster-id"
    if node.node_id == 1 or not id_file.is_file():
        cfg.kafka_dir.mkdir(parents=True, exist_ok=True)
        id_file.write_text(new_cluster_id() + "\n")
    cluster_id = id_file.read_text().strip()
    quorum = ["--standalone"] if cfg.brokers == 1 else []
    password = tls_material(cfg.root).secret("sasl")
    # Each mechanism's credential of the one SASL user, stored in the cluster metadata.
    scram = [arg for mech in ("SCRAM-SHA-256", "SCRAM-SHA-512")
             for arg in ("--add-scram", f"{mech}=[name={SASL_USER},password={password}]")]
    shutil.rmtree(node.data_dir, ignore_errors=True)
    result = subprocess.run(
        [*base, "format", *quorum, "-t", cluster_id, "-c", str(node.properties), *scram],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0 or not formatted(node):
        output = f"{result.stdout}{result.stderr}".replace(password, "***")
        raise StackError(f"kafka StorageTool format of node {node.node_id} failed:\n{output}")
    _layout_file(cfg).write_text(f"brokers={cfg.brokers} scram=1\n")
    return time.monotonic() - started


# --- process --------------------------------------------------------------------------

def node_pid(cfg: StackConfig, node: KafkaNode) -> int | None:
    """The pid of a broker of this stack if it runs (a stale pid file is removed)."""
    pid = read_pid(node.pid_file)
    if pid is None:
        return None
    if pid_alive(pid):
        args = cmdline(pid)
        # An unreadable command line (a process being set up) is given the benefit of the doubt.
        if not args or (MAIN_CLASS in args and str(node.properties) in args):
            return pid
    with contextlib.suppress(OSError):
        node.pid_file.unlink()
    return None


def kafka_pid(cfg: StackConfig) -> int | None:
    """The pid of the stack's first broker if it runs."""
    return node_pid(cfg, cfg.kafka_nodes[0])


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
    return all(run_sync(probe(node.bootstrap, timeout)) for node in cfg.kafka_nodes)


def status(cfg: StackConfig | None = None) -> KafkaStatus:
    cfg = cfg or StackConfig.from_env()
    pids = [node_pid(cfg, node) for node in cfg.kafka_nodes]
    running = all(pid is not None for pid in pids)
    return KafkaStatus(pid=pids[0] if running else None, port=cfg.kafka_port,
                       controller_port=cfg.kafka_controller_port,
                       ready=running and ready(cfg, timeout=3.0), pids=pids)


def launch(cfg: StackConfig) -> dict[str, float]:
    """Start the brokers that do not run; returns the time of each step. A broker whose
    configuration changed (TLS on or off) is restarted."""
    timings: dict[str, float] = {}
    check_layout(cfg)
    if cfg.tls:
        started = time.monotonic()
        if tls_material(cfg.root).ensure():
            timings["certificates"] = time.monotonic() - started
    starting = []
    for node in cfg.kafka_nodes:
        pid = node_pid(cfg, node)
        if pid is not None and node.properties.is_file() and node.properties.read_text() == properties_text(cfg, node):
            continue
        if pid is not None:
            stop_node(cfg, node.node_id)
        for port in node.ports(cfg.tls):
            if not port_bindable(cfg.host, port):
                raise StackError(
                    f"port {cfg.host}:{port} is taken by another process (not this stack's broker); "
                    "stop it or choose other ports with TOUCHSTREAM_STACK_KAFKA_PORT")
        starting.append(node)
    if not starting:
        return timings
    if (spent := ensure_libs(cfg)) is not None:
        timings["jars"] = spent
    for node in starting:
        render_properties(cfg, node)
    started = time.monotonic()
    # The first node writes the cluster id the others are formatted with; then the others in
    # parallel (a JVM start each, ~5 s on two cores).
    format_storage(cfg, starting[0])
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda node: format_storage(cfg, node), starting[1:]))
    if (spent := time.monotonic() - started) > 0.05:
        timings["format"] = spent
    for node in starting:
        _spawn(cfg, node)
    return timings


def _spawn(cfg: StackConfig, node: KafkaNode) -> None:
    java = java_bin()
    node.log.parent.mkdir(parents=True, exist_ok=True)
    # Several brokers share two cores and the memory with everything else: a smaller heap each.
    heap = HEAP if cfg.brokers == 1 else "-Xmx512m"
    with open(node.log, "ab") as out:
        out.write(f"\n==== touchstream stack: starting Kafka node {node.node_id} at "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            [java, heap, "-Xms256m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
             f"-Dlog4j2.configurationFile={node.dir / 'log4j2.xml'}",
             f"-Dkafka.logs.dir={node.dir}",
             "-cp", classpath(cfg), MAIN_CLASS, str(node.properties)],
            cwd=node.dir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    node.pid_file.write_text(f"{proc.pid}\n")


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


async def _cluster_size(bootstrap: str, timeout: float) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000),
                                client_id="touchstream-stack-probe")
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            return len((await admin.describe_cluster()).get("brokers") or [])
    except Exception:
        return 0
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def wait_ready(cfg: StackConfig, timeout: float = 120.0, nodes: list[KafkaNode] | None = None) -> float:
    """Block until the brokers answer metadata requests (and, for a cluster, every broker is
    registered with the controller); returns the seconds waited."""
    started = time.monotonic()
    deadline = started + timeout
    nodes = nodes or cfg.kafka_nodes
    launched = {node.node_id: read_pid(node.pid_file) for node in nodes}
    waiting = list(nodes)
    while True:
        for node in list(waiting):
            if node_pid(cfg, node) is None:
                raise StackError(f"Kafka node {node.node_id} exited during start-up ({_fate(launched[node.node_id])}); "
                                 f"last lines of {node.log}:\n{tail(node.log)}")
            if run_sync(probe(node.bootstrap, 3.0)):
                waiting.remove(node)
        if not waiting and (cfg.brokers == 1 or run_sync(_cluster_size(cfg.kafka_bootstrap, 3.0)) == cfg.brokers):
            return time.monotonic() - started
        if time.monotonic() > deadline:
            node = (waiting or nodes)[0]
            raise StackError(f"Kafka node {node.node_id} did not become ready within {timeout:.0f}s; "
                             f"see {node.log}:\n{tail(node.log)}")
        time.sleep(0.25)


def start(cfg: StackConfig | None = None, timeout: float = 120.0) -> dict[str, float]:
    """Idempotent: start the brokers if needed and wait until they are ready."""
    cfg = cfg or StackConfig.from_env()
    with stack_lock(cfg.lock_file):
        timings = launch(cfg)
        timings["ready"] = wait_ready(cfg, timeout)
        return timings


def start_node(cfg: StackConfig, node_id: int, timeout: float = 120.0) -> float:
    """Start one broker of the cluster again (after `stop_node`); returns the seconds it took."""
    node = cfg.node(node_id)
    with stack_lock(cfg.lock_file):
        started = time.monotonic()
        if node_pid(cfg, node) is None:
            _spawn(cfg, node)
        wait_ready(cfg, timeout, nodes=[node])
        return time.monotonic() - started


def stop_node(cfg: StackConfig, node_id: int, timeout: float = 60.0, *, hard: bool = False) -> bool:
    """Stop one broker (SIGTERM and wait; SIGKILL at once when `hard`). False if it was not running."""
    node = cfg.node(node_id)
    with stack_lock(cfg.lock_file):
        pid = node_pid(cfg, node)
        if pid is None:
            return False
        terminate(pid, timeout, hard=hard)
        proc = _children.pop(pid, None)
        if proc is not None:
            with contextlib.suppress(Exception):
                proc.wait(timeout=1)
        with contextlib.suppress(OSError):
            node.pid_file.unlink()
        return True


def present(cfg: StackConfig) -> StackConfig:
    """`cfg` with every broker whose folder exists (a cluster started with `--brokers N` is
    stopped and wiped whole by a plain `down`)."""
    count = cfg.brokers
    while (cfg.root / f"kafka-{count + 1}").is_dir():
        count += 1
    return dataclasses.replace(cfg, brokers=count)


def stop(cfg: StackConfig | None = None, timeout: float = 60.0, *, hard: bool = False) -> bool:
    """Stop every broker (SIGTERM and wait; SIGKILL when `hard`). False if none was running."""
    cfg = present(cfg or StackConfig.from_env())
    stopped = [stop_node(cfg, node.node_id, timeout, hard=hard) for node in cfg.kafka_nodes]
    return any(stopped)


def wipe(cfg: StackConfig) -> None:
    """Delete the brokers' data and configuration (keeps the jars)."""
    for node in present(cfg).kafka_nodes:
        shutil.rmtree(node.data_dir, ignore_errors=True)
        for name in ("server.properties", "kafka.log", "kafka.pid", "log4j2.xml"):
            with contextlib.suppress(OSError):
                (node.dir / name).unlink()
        if node.node_id > 1:
            shutil.rmtree(node.dir, ignore_errors=True)
    for name in ("cluster-id", "layout"):
        with contextlib.suppress(OSError):
            (cfg.kafka_dir / name).unlink()
