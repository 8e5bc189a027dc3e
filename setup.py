"""The session core compiled with mypyc when a C compiler is there; pure Python otherwise.

pyproject.toml holds the project; this file adds only the compiled modules. The core is typed
Python that mypy checks: mypyc turns those modules into C extensions (native classes, direct
calls), which makes the sessionizer's per-hit work about a quarter cheaper. The Python source
stays the reference and is what runs wherever the build cannot compile:

    TOUCHSTREAM_PURE_PYTHON=1 pip install -e .   # no compilation (the same code, interpreted)

A build writes `sessionizer/compiled.json`: each compiled module with the sha256 of the source
it was built from. `sessionizer/__init__.py` refuses to import a compiled module whose source
has changed since (run `make venv`), so an edit is never silently ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
# The pure core and what it calls for every hit (sessionizer.machine's imports), nothing that
# imports Faust, Kafka or pydantic at run time.
COMPILED = [
    "sessionizer/state.py",
    "sessionizer/machine.py",
    "sessionizer/snapshot.py",
    "sessionizer/timeline.py",
    "sessionizer/identity.py",
    "sessionizer/processor.py",
    "sessionizer/clock.py",
    "sessionizer/rules.py",
]
MANIFEST = ROOT / "sessionizer" / "compiled.json"


def _note(message: str) -> None:
    print(f"touchstream build: {message}", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """A failed compilation leaves the pure Python modules in place instead of failing the install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, no Python headers: the interpreted core is the same code
            _note(f"not compiled ({exc}); the session core runs as pure Python")
            self._clean()
            return
        MANIFEST.write_text(json.dumps(
            {path: hashlib.sha256((ROOT / path).read_bytes()).hexdigest() for path in COMPILED}, indent=1) + "\n")

    def _clean(self) -> None:
        MANIFEST.unlink(missing_ok=True)
        for ext in self.extensions:
            built = Path(self.get_ext_fullpath(ext.name))
            built.unlink(missing_ok=True)


def _remove_old_extensions() -> None:
    """A build that runs the sources removes what an earlier build compiled: Python would import
    those extensions before the sources (sessionizer.compiled.check refuses them, loudly)."""
    for path in COMPILED:
        for old in (ROOT / path).parent.glob(f"{Path(path).stem}.*.so"):
            old.unlink()
    for old in (ROOT / "sessionizer").glob("core__mypyc.*.so"):
        old.unlink()


def _ext_modules() -> list:
    MANIFEST.unlink(missing_ok=True)
    modules = _compiled_modules()
    if not modules:
        _remove_old_extensions()
    return modules


def _compiled_modules() -> list:
    if os.environ.get("TOUCHSTREAM_PURE_PYTHON"):
        _note("TOUCHSTREAM_PURE_PYTHON is set: the session core runs as pure Python")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as exc:  # (a build without the build-system requirements, e.g. --no-build-isolation)
        _note(f"mypyc is not available ({exc}); the session core runs as pure Python")
        return []
    # The compiled modules import the project's other modules and its dependencies, which the
    # isolated build environment does not hold: mypy treats them as Any (checked, not compiled).
    try:
        return mypycify(["--ignore-missing-imports", "--follow-imports=silent", *COMPILED], opt_level="3",
                        group_name="sessionizer.core")  # (its shared library goes inside the package)
    except BaseException as exc:  # (mypyc reports a type error by exiting)
        _note(f"mypyc could not compile the session core ({exc!r}); it runs as pure Python")
        return []


setup(ext_modules=_ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
