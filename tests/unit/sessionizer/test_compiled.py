"""The compiled session core (setup.py, mypyc) against its Python source: the same bytes and
snapshots for the same hits, the build actually compiled where a C compiler is, and the guard
against a compiled module older than its source."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from sessionizer import compiled
from sessionizer.compiled import StaleBuild, check, is_compiled

REPO = Path(__file__).resolve().parents[3]

# Bench-shaped hits (bench.hitgen) in time order, then with 10 % of them up to 5 minutes late,
# through the core in rounds as the worker runs it; a digest of every touched state's bytes and
# every snapshot. Run once on the imported modules and once on a copy of the sources alone.
DIGEST = r"""
import hashlib, random, sys
from datetime import datetime, timezone
from bench.hitgen import Shape, generate
from schemas.views import decode_hit_record
from sessionizer.machine import Emitted, Rules, on_hit, to_ms
import sessionizer.machine
hits = generate(Shape(hits=12000, devices=1200), datetime(2026, 12, 1, tzinfo=timezone.utc))
views = [decode_hit_record(v) for _, v in hits]
rng = random.Random(5)
late = sorted((to_ms(v.received_at) + (rng.randrange(1, 300001) if rng.random() < 0.1 else 0), n, v)
              for n, v in enumerate(views))
h = hashlib.sha256()
for order in (views, [v for _, _, v in late]):
    states, et, rules = {}, 0, Rules()
    for start in range(0, len(order), 1000):
        out, touched = Emitted(coalesce=True), {}
        for v in order[start:start + 1000]:
            t = to_ms(v.occurred_at); et = max(et, t); g = v.guid.lower()
            states[g] = touched[g] = on_hit(states.get(g), v, rules, et, out, occurred_ms=t)
        out.flush()
        for g in sorted(touched):
            h.update(touched[g].to_bytes())
        for snap in out.sessions:
            h.update(repr(sorted(snap.items())).encode())
print(sessionizer.machine.__file__.endswith(".py"), h.hexdigest())
"""


def _digest(pythonpath: list[Path]) -> tuple[bool, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath)}
    done = subprocess.run([sys.executable, "-c", DIGEST], cwd=pythonpath[0], env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    source, digest = done.stdout.split()
    return source == "True", digest


def test_compiled_and_source_give_the_same_states_and_snapshots(tmp_path: Path) -> None:
    installed_is_source, installed = _digest([REPO])
    # The sources alone: a copy of the package without the extensions, first on the path.
    pure = tmp_path / "pure"
    shutil.copytree(REPO / "sessionizer", pure / "sessionizer",
                    ignore=shutil.ignore_patterns("*.so", "compiled.json", "__pycache__"))
    source_is_source, source = _digest([pure, REPO])
    assert source_is_source, "the copy ran compiled modules: the comparison would compare nothing"
    assert installed == source, (
        f"the {'source' if installed_is_source else 'compiled'} core and the source differ on the same hits"
    )


def test_the_core_is_compiled_where_a_c_compiler_is() -> None:
    """setup.py falls back to the sources when it cannot compile; this says when that happened
    on a machine that could (or was told not to: TOUCHSTREAM_PURE_PYTHON)."""
    headers = Path(sysconfig.get_paths()["include"], "Python.h").exists()
    if os.environ.get("TOUCHSTREAM_PURE_PYTHON"):
        assert not is_compiled()
    elif (shutil.which("cc") or shutil.which("gcc")) and headers:
        assert is_compiled(), ("a C compiler and Python's headers are here but the session core runs from "
                               "source: see the `touchstream build:` lines of `pip install -e .` (make venv)")
    else:
        assert not is_compiled()


def _package(tmp_path: Path, source: bytes, recorded: bytes) -> Path:
    package = tmp_path / "sessionizer"
    package.mkdir()
    (package / "machine.py").write_bytes(source)
    (package / compiled.MANIFEST).write_text(json.dumps(
        {"sessionizer/machine.py": hashlib.sha256(recorded).hexdigest()}))
    return package


def test_a_source_changed_after_the_build_refuses_the_import(tmp_path: Path) -> None:
    package = _package(tmp_path, b"x = 2\n", recorded=b"x = 1\n")
    with pytest.raises(StaleBuild, match=r"sessionizer/machine.py changed after .*make venv"):
        check(package)


def test_an_unchanged_source_or_no_build_passes(tmp_path: Path) -> None:
    package = _package(tmp_path, b"x = 1\n", recorded=b"x = 1\n")
    check(package)
    (package / compiled.MANIFEST).unlink()
    check(package)  # not compiled: nothing to compare


def test_the_manifest_names_what_setup_compiles() -> None:
    setup = (REPO / "setup.py").read_text()
    for module in compiled.MODULES:
        assert f'"sessionizer/{module}.py"' in setup
    manifest = REPO / "sessionizer" / compiled.MANIFEST
    if manifest.exists():
        assert sorted(json.loads(manifest.read_text())) == sorted(f"sessionizer/{m}.py" for m in compiled.MODULES)


def test_extensions_left_without_a_manifest_refuse_the_import(tmp_path: Path) -> None:
    """A build that fell back to the sources (mypyc refused a type error) removed the manifest: the
    extensions of the build before would still be imported, running old code without a word."""
    package = _package(tmp_path, b"x = 2\n", recorded=b"x = 1\n")
    (package / compiled.MANIFEST).unlink()
    left = package / f"machine{EXTENSION_SUFFIXES[0]}"
    left.write_bytes(b"\x7fELF")
    with pytest.raises(StaleBuild, match=rf"{left.name} in .* come from an earlier build .*make venv"):
        check(package)
    left.unlink()
    check(package)  # the sources alone
