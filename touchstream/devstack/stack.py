"""The whole local stack: both services together (what `touchstream stack ...` and the tests call)."""

from __future__ import annotations

import concurrent.futures
import shutil
import time
from dataclasses import dataclass

from . import kafka, postgres
from .paths import StackConfig, StackInfo, info
from .process import StackError, port_bindable, stack_lock


@dataclass
class UpReport:
    info: StackInfo
    kafka: dict[str, float]
    postgres: dict[str, float]
    kafka_pid: int | None
    postgres_pid: int | None
    kafka_reused: bool
    postgres_reused: bool
    seconds: float


def _preflight(cfg: StackConfig, postgres_runs: bool) -> None:
    """Refuse before doing anything when a port this stack needs is taken by someone else."""
    wanted = [(port, "TOUCHSTREAM_STACK_KAFKA_PORT") for node in cfg.kafka_nodes
              if kafka.node_pid(cfg, node) is None for port in node.ports(cfg.tls)]
    wanted += [] if postgres_runs else [(cfg.pg_port, "TOUCHSTREAM_STACK_PG_PORT")]
    for port, setting in wanted:
        if not port_bindable(cfg.host, port):
            raise StackError(f"port {cfg.host}:{port} is taken by another process (not this stack's); "
                             f"stop it or choose another port with {setting}")


def up(cfg: StackConfig | None = None, timeout: float = 180.0) -> UpReport:
    """Start what is not running (reuse what is) and wait until both services answer."""
    cfg = cfg or StackConfig.from_env()
    started = time.monotonic()
    with stack_lock(cfg.lock_file):
        kafka_reused = kafka.kafka_pid(cfg) is not None
        postgres_reused = postgres.postgres_pid(cfg) is not None
        _preflight(cfg, postgres_reused)
        # PostgreSQL comes up in a thread while the broker's jars are fetched, its storage is
        # formatted and the JVM starts (the stack lock is held by this thread for both).
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            pg_future = pool.submit(postgres.start_locked, cfg, timeout)
            try:
                k_times = kafka.launch(cfg)
                k_times["ready"] = kafka.wait_ready(cfg, timeout=timeout)
            finally:
                p_times = pg_future.result()
        return UpReport(info=info(cfg), kafka=k_times, postgres=p_times,
                        kafka_pid=kafka.kafka_pid(cfg), postgres_pid=postgres.postgres_pid(cfg),
                        kafka_reused=kafka_reused, postgres_reused=postgres_reused,
                        seconds=time.monotonic() - started)


def ensure_up(cfg: StackConfig | None = None, timeout: float = 180.0) -> StackInfo:
    """Idempotent: make sure the broker and the database are up; return how to reach them."""
    return up(cfg, timeout).info


def down(cfg: StackConfig | None = None, *, wipe: bool = False) -> dict[str, bool]:
    """Stop both services (and delete their data with `wipe`; the broker's jars are kept). Data
    about to be deleted needs no clean shutdown: with `wipe` the processes are killed at once."""
    cfg = cfg or StackConfig.from_env()
    with stack_lock(cfg.lock_file):
        stopped = {"kafka": kafka.stop(cfg, hard=wipe), "postgres": postgres.stop(cfg, hard=wipe)}
        if wipe:
            kafka.wipe(cfg)
            postgres.wipe(cfg)
            shutil.rmtree(cfg.java_dir, ignore_errors=True)
            shutil.rmtree(cfg.tls_dir, ignore_errors=True)
        return stopped


# The fault tests stop and start one service at a time; all of these are idempotent.

def start_kafka(cfg: StackConfig | None = None, timeout: float = 120.0) -> StackInfo:
    cfg = cfg or StackConfig.from_env()
    kafka.start(cfg, timeout)
    return info(cfg)


def stop_kafka(cfg: StackConfig | None = None, *, hard: bool = False, timeout: float = 60.0) -> bool:
    """SIGTERM and wait (SIGKILL after `timeout`); `hard=True` sends SIGKILL at once."""
    return kafka.stop(cfg, timeout, hard=hard)


def stop_broker(cfg: StackConfig, node_id: int, *, hard: bool = False, timeout: float = 60.0) -> bool:
    """One broker of a cluster (`hard=True`: SIGKILL, as a crashed machine)."""
    return kafka.stop_node(cfg, node_id, timeout, hard=hard)


def start_broker(cfg: StackConfig, node_id: int, timeout: float = 120.0) -> float:
    """Start one broker again; returns the seconds until it answered."""
    return kafka.start_node(cfg, node_id, timeout)


def start_postgres(cfg: StackConfig | None = None, timeout: float = 60.0) -> StackInfo:
    cfg = cfg or StackConfig.from_env()
    postgres.start(cfg, timeout)
    return info(cfg)


def stop_postgres(cfg: StackConfig | None = None, *, hard: bool = False, timeout: float = 60.0) -> bool:
    """pg_ctl stop -m fast (`hard=True`: -m immediate, i.e. no clean shutdown)."""
    return postgres.stop(cfg, timeout, hard=hard)


__all__ = ["StackError", "UpReport", "down", "ensure_up", "start_broker", "start_kafka", "start_postgres",
           "stop_broker", "stop_kafka", "stop_postgres", "up"]
