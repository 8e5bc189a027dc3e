"""Test doubles for the edge: a publisher that keeps what it is given."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ingest.errors import PublishUnavailable
from ingest.publisher import Record


class FakePublisher:
    """Records every publish. `fail` makes publish raise PublishUnavailable; `hang` makes it
    wait past its timeout (as a dead broker would)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, list[Record]]] = []
        self.fail: str | None = None
        self.hang = False
        self.is_ready = True
        self.started = self.stopped = False
        self.last_error = ""

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def ready(self) -> bool:
        return self.is_ready

    async def publish(self, batches: Sequence[tuple[str, Sequence[Record]]], timeout: float) -> None:
        if self.fail:
            raise PublishUnavailable(self.fail)
        if self.hang:
            await asyncio.sleep(timeout)
            raise PublishUnavailable(f"Kafka did not acknowledge within {timeout:g} s")
        for topic, records in batches:
            if records:
                self.published.append((topic, list(records)))

    def records(self, topic: str) -> list[Record]:
        return [r for t, records in self.published if t == topic for r in records]
