"""The conformance scenarios, as copied into the repository (tests/data/conformance).

`scenarios.json` and `arrival-order.json` are data handed to the project with the contract
(docs/SPEC.md): the expected sessions must not be edited to make a test pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data" / "conformance"


def load(name: str = "scenarios.json") -> list[dict[str, Any]]:
    """The scenarios of one file (`scenarios.json` or `arrival-order.json`)."""
    return json.loads((DATA / name).read_text())["scenarios"]
