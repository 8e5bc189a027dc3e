"""Waiting in tests for what another process does: poll a check until it holds, or fail."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def wait_for(
    check: Callable[[], Awaitable[Any]],
    timeout: float = 30.0,
    what: str = "condition",
    every: float = 0.2,
    alive: Callable[[], None] | None = None,
) -> Any:
    """Poll `check` until it returns something truthy, and return that; AssertionError naming
    `what` after `timeout` s. `alive` runs before every poll: it raises when a process the test
    waits on has died, so the test fails at once with that reason instead of at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None:
            alive()
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(every)
