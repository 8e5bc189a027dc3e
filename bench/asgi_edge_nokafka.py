"""An ablation for bench/ingest_bench.py (`--ablation`): the edge app exactly as `touchstream
ingest` serves it (same validation, enrichment, encoding, metrics, responses), but with a
publisher that acknowledges every record at once and drops it: no Kafka client, no broker.

bare -> this -> edge splits the edge's cost in two: its own request handling (this minus bare)
and what publishing to Kafka and waiting for the acknowledgement adds (edge minus this). It
is a measuring tool only: nothing it "accepts" is stored anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

from ingest.app import IngestApp, create_app
from ingest.metrics import Metrics
from ingest.publisher import Record
from ingest.settings import IngestSettings
from schemas.runtime import tune_gc


class InstantPublisher:
    """Acknowledges at once; keeps nothing."""

    last_error = ""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def ready(self) -> bool:
        return True

    async def publish(self, batches: Sequence[tuple[str, Sequence[Record]]], timeout: float) -> None:
        return None


def app() -> IngestApp:
    """uvicorn factory, built like `ingest.__main__.app_from_env` apart from the publisher."""
    settings = IngestSettings()
    edge = create_app(settings, InstantPublisher(), metrics=Metrics())
    tune_gc(settings)
    return edge
