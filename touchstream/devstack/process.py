"""Process, port and lock helpers shared by the Kafka and PostgreSQL modules."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import fcntl
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class StackError(RuntimeError):
    """A service could not be brought up or down; the message says why and what to do."""


def log(message: str) -> None:
    """Progress goes to stderr so that stdout carries only the `export` lines."""
    print(message, file=sys.stderr, flush=True)


def is_root() -> bool:
    return os.geteuid() == 0


# --- processes ------------------------------------------------------------------------

def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone; our own exited children are reaped)."""
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        if state in (b"Z", b"X"):
            return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def wait_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return not pid_alive(pid)


def terminate(pid: int, timeout: float, *, hard: bool = False) -> bool:
    """SIGTERM (or SIGKILL when `hard`), wait, and SIGKILL after `timeout`. True if it had to kill."""
    sig = signal.SIGKILL if hard else signal.SIGTERM
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    if wait_for_exit(pid, timeout):
        return hard
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_for_exit(pid, 10)
    return True


# --- ports ----------------------------------------------------------------------------

def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def port_bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def listener_ports() -> range:
    """Where a test's own listeners go: from 20000 up to the kernel's ephemeral range, which
    outgoing connections take their local ports from. A listener stopped and started again on
    its port (a broker's restart in the fault tests) found that port held by a client's
    connection from the ephemeral range: Kafka's "Unable to start acceptor"."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # (Linux's default)
    return range(20_000, max(low, 21_000))


def free_port(host: str = "127.0.0.1", attempts: int = 200) -> int:
    """A port that can be bound now, below the ephemeral range (`listener_ports`), not a stack's own."""
    return free_port_block(1, host, attempts)


def stack_port(port: int) -> bool:
    """Whether `port` is one a checkout's own stack may use (broker blocks from …9092, PostgreSQL
    on …5432, helpers' 69xx): a private stack keeps off them even while that stack is down, or
    it would take the port from under it when it comes up."""
    low = port % 10_000
    return 9090 <= low < 9140 or 5430 <= low < 5440 or 6900 <= port < 7000


def free_port_block(count: int, host: str = "127.0.0.1", attempts: int = 200) -> int:
    """The first of `count` consecutive ports that can all be bound now (a broker's block), below
    the ephemeral range (`listener_ports`), none of them a stack's own (`stack_port`)."""
    rng = random.Random()
    ports = listener_ports()
    for _ in range(attempts):
        base = rng.randrange(ports.start, ports.stop - count)
        block = range(base, base + count)
        if not any(stack_port(port) for port in block) and all(port_bindable(host, port) for port in block):
            return base
    raise StackError(f"found no {count} consecutive free ports on {host}")


# --- running coroutines from sync code ------------------------------------------------

def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a private loop in a worker thread, so that callers
    with (or without) their own event loop, e.g. pytest-asyncio's, are left undisturbed."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="devstack") as pool:
        return pool.submit(asyncio.run, coro).result()


# --- locking --------------------------------------------------------------------------

_local = threading.local()


@contextlib.contextmanager
def stack_lock(lock_file: Path) -> Iterator[None]:
    """An exclusive, re-entrant (per thread) lock on the stack folder."""
    held: dict[str, int] = getattr(_local, "held", None) or {}
    _local.held = held
    key = str(lock_file)
    if held.get(key):
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        held[key] = 1
        try:
            yield
        finally:
            held[key] = 0
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- system packages ------------------------------------------------------------------

def apt_install(packages: list[str], why: str) -> None:
    """Install Debian packages (as root, or through sudo), updating the lists when needed."""
    if not shutil.which("apt-get"):
        raise StackError(f"{why}: install {' '.join(packages)} with your package manager")
    prefix: list[str] = []
    if not is_root():
        command = f"sudo apt-get update && sudo apt-get install -y --no-install-recommends {' '.join(packages)}"
        if not shutil.which("sudo") or subprocess.run(
            ["sudo", "-n", "true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ).returncode != 0:
            # Not root and no password-less sudo: stop now with the command, not after a failed apt-get.
            raise StackError(f"{why}: run `{command}`, then try again")
        prefix = ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    log(f"  {why}: apt-get install {' '.join(packages)}")
    lists = Path("/var/lib/apt/lists")
    has_lists = lists.is_dir() and any("_Packages" in p.name for p in lists.iterdir())
    if has_lists and subprocess.run(install, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL).returncode == 0:
        return
    subprocess.run([*prefix, "apt-get", "update", "-q"], env=env, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, check=False)
    result = subprocess.run(install, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    if result.returncode != 0:
        raise StackError(f"{why}: `apt-get install {' '.join(packages)}` failed (exit {result.returncode})")


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
