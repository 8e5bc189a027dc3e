"""Whether the session core runs compiled (setup.py builds it with mypyc), and a guard against a
compiled module older than its source.

An editable install builds the extensions next to the sources; Python then imports the
extension, not the `.py`. An edited source with the old extension beside it would run the old
code without a word, so the build records each source's sha256 in `compiled.json` and
`check` refuses the import when a source no longer matches: `make venv` (or
`pip install -e .`) builds it again; `TOUCHSTREAM_PURE_PYTHON=1 pip install -e .` installs
without compiling.
"""

from __future__ import annotations

import hashlib
import json
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
MANIFEST = "compiled.json"
# (setup.py's COMPILED: what the manifest is expected to name)
MODULES = ("state", "machine", "snapshot", "timeline", "identity", "processor", "clock", "rules")


class StaleBuild(ImportError):
    """A compiled module was built from a source that has changed since."""


def check(package: Path = PACKAGE) -> None:
    """Raise StaleBuild when a compiled module's source changed after the build."""
    manifest = package / MANIFEST
    if not manifest.exists():
        # Not compiled: the sources run as they are, unless extensions of an earlier build are
        # still there (a build that fell back to the sources, say on a type error mypyc refused,
        # removes the manifest first): Python would import those, as old as they are.
        left = sorted(p.name for m in MODULES for suffix in EXTENSION_SUFFIXES
                      if (p := package / f"{m}{suffix}").exists())
        if left:
            raise StaleBuild(
                f"{', '.join(left)} in {package} come from an earlier build (the last one did not compile the "
                f"session core and left no {MANIFEST}): they would run old code. Build again (`make venv`, and "
                f"read its `touchstream build:` lines), or remove them to run the sources."
            )
        return
    root = package.parent
    for path, digest in json.loads(manifest.read_text()).items():
        source = root / path
        if source.exists() and hashlib.sha256(source.read_bytes()).hexdigest() != digest:
            raise StaleBuild(
                f"{path} changed after the session core was compiled from it; the compiled module would run "
                f"the old code. Build it again: `make venv` (or `pip install -e .`), or remove {manifest} and "
                f"the {package.name}/*.so files to run the sources as they are."
            )


def is_compiled() -> bool:
    """Whether the core modules were imported as compiled extensions."""
    import sessionizer.machine as machine
    import sessionizer.state as state

    return all(not str(m.__file__).endswith(".py") for m in (machine, state))
