"""Headless Chromium and its driver for the browser tests: Debian's `chromium` and
`chromium-driver` (tools that download their own browser cannot fetch one on these machines)."""

from __future__ import annotations

import os
from pathlib import Path

from .process import apt_install

PACKAGES = {"chromium": "chromium", "chromedriver": "chromium-driver"}


def binaries() -> dict[str, str]:
    """Binary name -> path the tests use (TOUCHSTREAM_CHROMIUM / TOUCHSTREAM_CHROMEDRIVER override)."""
    return {
        "chromium": os.environ.get("TOUCHSTREAM_CHROMIUM", "/usr/bin/chromium"),
        "chromedriver": os.environ.get("TOUCHSTREAM_CHROMEDRIVER", "/usr/bin/chromedriver"),
    }


def missing() -> list[str]:
    """The Debian packages of the binaries that are not there (empty when both are)."""
    return [
        PACKAGES[name] for name, path in binaries().items()
        if not (Path(path).is_file() and os.access(path, os.X_OK))
    ]


def ensure() -> list[str]:
    """Install what is missing (as root, or through password-less sudo); returns what was installed.
    Without either, raises StackError at once with the exact command to run."""
    packages = missing()
    if packages:
        apt_install(packages, "headless Chromium is needed by the browser tests")
    return packages
