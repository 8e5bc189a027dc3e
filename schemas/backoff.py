"""Exponential backoff: the one retry policy of every loop that waits for Kafka or PostgreSQL
(the sink's start-up and its batch writes, the edge's reconnection, the sessionizer's redone
rounds, `touchstream import`).

The first wait is `initial`, each further one twice the one before, and none longer than
`maximum`: a dependency that comes back is noticed within `maximum`, and one that stays away
costs one attempt per `maximum`, not a busy loop.
"""

from __future__ import annotations

from dataclasses import dataclass

_MAX_DOUBLINGS = 64  # 2**64 times any initial wait is past every maximum; a bigger power overflows a float


@dataclass(slots=True)
class Backoff:
    """Waits between attempts: `failed()` counts a failure and says how long to wait before the
    next attempt; `succeeded()` starts over."""

    initial: float
    maximum: float
    failures: int = 0  # since the last success

    def failed(self) -> float:
        self.failures += 1
        return self.wait(self.failures)

    def wait(self, failures: int) -> float:
        """The wait after the `failures`-th failure in a row (1: `initial`)."""
        doublings = min(max(failures - 1, 0), _MAX_DOUBLINGS)
        return min(self.initial * 2**doublings, self.maximum)

    def succeeded(self) -> None:
        self.failures = 0
