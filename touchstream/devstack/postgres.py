"""The local PostgreSQL server: Debian's packages, a private cluster under .stack/, loopback only."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pwd
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .paths import DATABASE, PG_USER, StackConfig
from .tls import PG_ANALYST, PG_OWNER, PG_WRITER
from .tls import material as tls_material
from .process import (
    StackError,
    apt_install,
    cmdline,
    is_root,
    pid_alive,
    port_bindable,
    run_sync,
    stack_lock,
    tail,
)

PREFERRED_VERSION = 15
# Settings written once into the cluster's postgresql.conf (ports and addresses are passed at start).
CLUSTER_SETTINGS = """
# --- touchstream dev stack ---
max_connections = 200
timezone = 'UTC'
log_timezone = 'UTC'
log_min_messages = warning
password_encryption = 'scram-sha-256'
include_if_exists = 'touchstream-tls.conf'
"""
TLS_CONF = "touchstream-tls.conf"
# Who may connect how: every login with its password (scram-sha-256), on loopback and the Unix
# socket alike (`trust` would let any local process in as the superuser). With TLS, every login
# but the stack's own superuser (its probes and set-up) only over TLS.
HBA_PLAIN = """# written by `touchstream stack up`
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""
HBA_TLS = """# written by `touchstream stack up --tls`
local all all scram-sha-256
host all postgres 127.0.0.1/32 scram-sha-256
hostssl all all 127.0.0.1/32 scram-sha-256
hostssl all all ::1/128 scram-sha-256
"""


@dataclass
class PostgresStatus:
    pid: int | None
    port: int
    ready: bool
    data_dir: Path

    @property
    def running(self) -> bool:
        return self.pid is not None


# --- binaries -------------------------------------------------------------------------

def _version_of(bin_dir: Path) -> int:
    match = re.search(r"/postgresql/(\d+)/bin", str(bin_dir))
    return int(match.group(1)) if match else 0


def find_bin_dir() -> Path | None:
    """Debian keeps each major version in /usr/lib/postgresql/<v>/bin; prefer 15, else the newest."""
    dirs = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    if dirs:
        preferred = [d for d in dirs if _version_of(d) == PREFERRED_VERSION]
        return preferred[0] if preferred else max(dirs, key=_version_of)
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def bin_dir() -> Path:
    found = find_bin_dir()
    if found is None:
        apt_install(["postgresql"], "the PostgreSQL server is not installed")
        found = find_bin_dir()
    if found is None:
        raise StackError("initdb is still missing after installing postgresql")
    return found


# --- who runs it, and where -----------------------------------------------------------

def _as_owner() -> list[str]:
    """initdb and pg_ctl refuse to run as root: run them as the postgres user then."""
    if not is_root():
        return []
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        raise StackError("running as root but there is no `postgres` user to own the cluster "
                         "(it comes with Debian's postgresql package)") from None
    return ["runuser", "-u", PG_USER, "--"]


def _owner_can_reach(path: Path) -> bool:
    if not is_root():
        return True
    return subprocess.run([*_as_owner(), "test", "-x", str(path)], cwd="/",
                          stdin=subprocess.DEVNULL).returncode == 0


def base_dir(cfg: StackConfig) -> Path:
    """Normally .stack/postgres. When the checkout lies where the postgres user cannot reach
    (e.g. under /root), the cluster goes to /var/tmp and .stack/postgres/LOCATION says where."""
    pointer = cfg.pg_dir / "LOCATION"
    if pointer.is_file():
        return Path(pointer.read_text().strip())
    cfg.pg_dir.mkdir(parents=True, exist_ok=True)
    if _owner_can_reach(cfg.pg_dir):
        return cfg.pg_dir
    digest = hashlib.sha1(str(cfg.root).encode()).hexdigest()[:10]
    elsewhere = Path("/var/tmp") / f"touchstream-postgres-{digest}"
    elsewhere.mkdir(parents=True, exist_ok=True)
    pointer.write_text(f"{elsewhere}\n")
    return elsewhere


def data_dir(cfg: StackConfig) -> Path:
    return base_dir(cfg) / "data"


def log_file(cfg: StackConfig) -> Path:
    return base_dir(cfg) / "log"


def _socket_dir(cfg: StackConfig) -> str:
    # Unix socket paths are limited to ~107 bytes; beyond that, TCP only.
    base = str(base_dir(cfg))
    return base if len(base) + len(f"/.s.PGSQL.{cfg.pg_port}.lock") < 100 else ""


def _chown(path: Path) -> None:
    if is_root():
        entry = pwd.getpwnam(PG_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _run(args: list[str], what: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*_as_owner(), *args], cwd="/", capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise StackError(f"{what} failed (exit {result.returncode}):\n{result.stdout}{result.stderr}")
    return result


# --- cluster --------------------------------------------------------------------------

def initialised(cfg: StackConfig) -> bool:
    return (data_dir(cfg) / "PG_VERSION").is_file()


def initdb(cfg: StackConfig) -> float | None:
    """Create the cluster once (user postgres with the stack's password); None if it exists."""
    if initialised(cfg):
        return None
    started = time.monotonic()
    bins = bin_dir()
    base, data = base_dir(cfg), data_dir(cfg)
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    _chown(base)
    _chown(data)
    os.chmod(data, 0o700)
    # The password reaches initdb through a file (an argument would show in `ps`), beside the
    # cluster where the postgres user can read it, and gone once initdb has read it.
    pwfile = base / "initdb.password"
    _write_owned(pwfile, cfg.pg_password + "\n")
    try:
        _run([str(bins / "initdb"), "-D", str(data), "-A", "scram-sha-256", f"--pwfile={pwfile}", "-U", PG_USER,
              "-E", "UTF8", "--locale=C", "--no-sync"], "initdb")
    finally:
        pwfile.unlink(missing_ok=True)
    with open(data / "postgresql.conf", "a") as fh:
        fh.write(CLUSTER_SETTINGS)
    return time.monotonic() - started


def trusting(cfg: StackConfig) -> bool:
    """A cluster made before the stack asked for passwords: its pg_hba.conf still says `trust`."""
    try:
        lines = (data_dir(cfg) / "pg_hba.conf").read_text().splitlines()
    except OSError:
        return False
    return any(line.split()[-1:] == ["trust"] for line in lines if not line.lstrip().startswith("#"))


async def _set_password(dsn: str, password: str) -> None:
    """Give the superuser the stack's password (on a `trust` cluster, before pg_hba asks for it)."""
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        # Stored as a SCRAM verifier whatever the old cluster's setting; a literal, not a
        # parameter: utility statements take none (quotes doubled: the password may be the user's).
        await conn.execute("SET password_encryption = 'scram-sha-256'")
        literal = password.replace("'", "''")
        await conn.execute(f"ALTER ROLE {PG_USER} PASSWORD '{literal}'")
    finally:
        await conn.close()


def postgres_pid(cfg: StackConfig) -> int | None:
    try:
        first = (data_dir(cfg) / "postmaster.pid").read_text().splitlines()[0]
        pid = int(first.strip())
    except (OSError, ValueError, IndexError):
        return None
    if pid_alive(pid) and any("postgres" in part for part in cmdline(pid)[:1]):
        return pid
    return None


def running_port(cfg: StackConfig) -> int | None:
    """The port the running server listens on (line 4 of postmaster.pid)."""
    try:
        return int((data_dir(cfg) / "postmaster.pid").read_text().splitlines()[3])
    except (OSError, ValueError, IndexError):
        return None


async def probe(dsn: str, timeout: float = 3.0) -> bool:
    """True when a real connection runs a query."""
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=timeout)
    except Exception:
        return False
    try:
        return await conn.fetchval("SELECT 1", timeout=timeout) == 1
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await conn.close(timeout=timeout)


async def _refuses_password(dsn: str) -> bool:
    """True when the server answers and refuses the DSN's password (not merely not up yet)."""
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except asyncpg.InvalidPasswordError:
        return True
    except Exception:
        return False
    await conn.close()
    return False


def ready(cfg: StackConfig | None = None, timeout: float = 3.0) -> bool:
    cfg = cfg or StackConfig.from_env()
    return run_sync(probe(cfg.pg_dsn("postgres"), timeout))


async def _create_database(dsn: str, name: str) -> bool:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            return False
        return True
    finally:
        await conn.close()


def status(cfg: StackConfig | None = None) -> PostgresStatus:
    cfg = cfg or StackConfig.from_env()
    pid = postgres_pid(cfg)
    return PostgresStatus(pid=pid, port=running_port(cfg) or cfg.pg_port,
                          ready=pid is not None and ready(cfg), data_dir=data_dir(cfg))


def start(cfg: StackConfig | None = None, timeout: float = 60.0) -> dict[str, float]:
    """Idempotent: install, initdb, start the server, create the database; returns step timings."""
    cfg = cfg or StackConfig.from_env()
    with stack_lock(cfg.lock_file):
        return start_locked(cfg, timeout)


def start_locked(cfg: StackConfig, timeout: float = 60.0) -> dict[str, float]:
    """`start` for a caller that holds the stack lock already."""
    timings: dict[str, float] = {}
    pid = postgres_pid(cfg)
    if pid is not None and running_port(cfg) not in (None, cfg.pg_port):
        raise StackError(f"this stack's PostgreSQL already runs on port {running_port(cfg)}, not "
                         f"{cfg.pg_port}; run `touchstream stack down` first")
    # A cluster from before passwords starts (or keeps running) with its old pg_hba.conf until
    # its superuser has the password; then the new one applies (below).
    legacy = initialised(cfg) and trusting(cfg)
    if initialised(cfg) and not legacy and _configure_access(cfg) and pid is not None:
        _reload(cfg)
        timings["reload"] = 0.0
    if pid is None:
        if not port_bindable(cfg.host, cfg.pg_port):
            raise StackError(f"port {cfg.host}:{cfg.pg_port} is taken by another process; stop it or "
                             "choose another port with TOUCHSTREAM_STACK_PG_PORT")
        if (spent := initdb(cfg)) is not None:
            timings["initdb"] = spent
            _configure_access(cfg)
        started = time.monotonic()
        bins = bin_dir()
        options = f"-p {cfg.pg_port} -c listen_addresses={cfg.host} " \
                  f"-c unix_socket_directories={shlex.quote(_socket_dir(cfg))}"
        log_path = log_file(cfg)
        if not log_path.exists():
            log_path.touch()
            _chown(log_path)
        result = subprocess.run(
            [*_as_owner(), str(bins / "pg_ctl"), "-D", str(data_dir(cfg)), "-l", str(log_path),
             "-o", options, "-w", "-t", str(int(timeout)), "start"],
            cwd="/", capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise StackError(f"pg_ctl start failed (exit {result.returncode}):\n{result.stdout}"
                             f"{result.stderr}\nlast lines of {log_path}:\n{tail(log_path)}")
        timings["start"] = time.monotonic() - started
    started = time.monotonic()
    deadline = started + timeout
    while not ready(cfg):
        if not legacy and run_sync(_refuses_password(cfg.pg_dsn("postgres"))):
            raise StackError("PostgreSQL refuses the stack's password: its cluster was made with another "
                             "(TOUCHSTREAM_STACK_PG_PASSWORD, default `ts-dev-password`). Set the one it was made "
                             "with, or run `touchstream stack down --wipe` (deletes its data) and `stack up` again")
        if time.monotonic() > deadline:
            raise StackError(f"PostgreSQL did not accept connections within {timeout:.0f}s; "
                             f"see {log_file(cfg)}:\n{tail(log_file(cfg))}")
        time.sleep(0.2)
    if legacy:
        _migrate_from_trust(cfg)
        timings["password"] = time.monotonic() - started
    if run_sync(_create_database(cfg.pg_dsn("postgres"), DATABASE)):
        timings["createdb"] = time.monotonic() - started
    else:
        timings["ready"] = time.monotonic() - started
    if cfg.tls:
        run_sync(_create_logins(cfg))
    return timings


def _reload(cfg: StackConfig) -> None:
    _run([str(bin_dir() / "pg_ctl"), "-D", str(data_dir(cfg)), "reload"], "pg_ctl reload")


def _migrate_from_trust(cfg: StackConfig) -> None:
    """Set the superuser's password on a `trust` cluster, then switch pg_hba.conf to passwords
    (reloaded, no restart). Its data stays; if this cannot be done, the way out is a new cluster."""
    try:
        run_sync(_set_password(cfg.pg_dsn("postgres"), cfg.pg_password))
    except Exception as exc:
        raise StackError(f"this stack's PostgreSQL was made with `trust` authentication and its superuser could "
                         f"not be given a password ({exc}); run `touchstream stack down --wipe` (deletes its "
                         "data) and `touchstream stack up` again") from exc
    _configure_access(cfg)
    _reload(cfg)
    if not ready(cfg):
        raise StackError("PostgreSQL does not accept the stack's password after the switch from `trust`; run "
                         "`touchstream stack down --wipe` (deletes its data) and `touchstream stack up` again")


def _write_owned(path: Path, text: str, mode: int = 0o600) -> bool:
    """Write a file the server reads (owned by the postgres user); True if it changed."""
    if path.is_file() and path.read_text() == text:
        return False
    path.write_text(text)
    os.chmod(path, mode)
    _chown(path)
    return True


def _configure_access(cfg: StackConfig) -> bool:
    """pg_hba.conf and the TLS settings for `cfg.tls`; True if anything changed (then a running
    server must reload: ssl and pg_hba are reloadable)."""
    data = data_dir(cfg)
    changed = False
    conf = data / "postgresql.conf"
    if "touchstream-tls.conf" not in conf.read_text():  # a cluster made before TLS support
        with open(conf, "a") as fh:
            fh.write("include_if_exists = 'touchstream-tls.conf'\n")
        changed = True
    tls = ""
    if cfg.tls:
        m = tls_material(cfg.root)
        m.ensure()
        # The server refuses a key others can read: copies owned by the postgres user.
        cert, key = data / "touchstream-server.crt", data / "touchstream-server.key"
        changed |= _write_owned(cert, m.pg_cert.read_text(), 0o644)
        changed |= _write_owned(key, m.pg_key.read_text())
        tls = (f"ssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'\n"
               "ssl_min_protocol_version = 'TLSv1.2'\npassword_encryption = 'scram-sha-256'\n")
    changed |= _write_owned(data / TLS_CONF, tls)
    changed |= _write_owned(data / "pg_hba.conf", HBA_TLS if cfg.tls else HBA_PLAIN)
    return changed


async def _create_logins(cfg: StackConfig) -> None:
    """The three logins of a production-like setup (`--tls`), each holding one role: the schema
    owner (migrations), the sink's writer and the analysts' reader. The roles are made here so
    the grants can be made before the first migration (which makes them only when missing)."""
    import asyncpg

    m = tls_material(cfg.root)
    conn = await asyncpg.connect(cfg.pg_dsn("postgres"), timeout=10)
    try:
        for role in ("touchstream_writer", "touchstream_analyst"):
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                await conn.execute(f"CREATE ROLE {role} NOLOGIN")
        logins = {PG_OWNER: ("pg-owner", "CREATEROLE", None), PG_WRITER: ("pg-writer", "", "touchstream_writer"),
                  PG_ANALYST: ("pg-analyst", "", "touchstream_analyst")}
        for login, (secret, options, role) in logins.items():
            verb = "ALTER" if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", login) else "CREATE"
            # A literal, not a parameter: utility statements take none. The password is hex.
            await conn.execute(f"{verb} ROLE {login} LOGIN {options} PASSWORD '{m.secret(secret)}'")
            if role:
                await conn.execute(f"GRANT {role} TO {login}")
        await conn.execute(f'ALTER DATABASE "{DATABASE}" OWNER TO {PG_OWNER}')
    finally:
        await conn.close()


def stop(cfg: StackConfig | None = None, timeout: float = 60.0, *, hard: bool = False) -> bool:
    """pg_ctl stop -m fast (immediate when `hard`). False if it was not running."""
    cfg = cfg or StackConfig.from_env()
    with stack_lock(cfg.lock_file):
        pid = postgres_pid(cfg)
        if pid is None:
            return False
        bins = bin_dir()
        result = subprocess.run(
            [*_as_owner(), str(bins / "pg_ctl"), "-D", str(data_dir(cfg)), "-m",
             "immediate" if hard else "fast", "-w", "-t", str(int(timeout)), "stop"],
            cwd="/", capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0 and postgres_pid(cfg) is not None:
            raise StackError(f"pg_ctl stop failed (exit {result.returncode}):\n{result.stdout}{result.stderr}")
        return True


def wipe(cfg: StackConfig) -> None:
    """Delete the cluster and its log (the server must be stopped)."""
    base = base_dir(cfg)
    shutil.rmtree(base / "data", ignore_errors=True)
    with contextlib.suppress(OSError):
        (base / "log").unlink()
    if base != cfg.pg_dir:
        shutil.rmtree(base, ignore_errors=True)
    shutil.rmtree(cfg.pg_dir, ignore_errors=True)
