"""The session snapshot on the `sessions` topic (keyed by session_id; the topic is compacted).

Each change of a session is published as a whole snapshot with a `version` that only grows,
so a consumer can keep the newest one and ignore stale or replayed ones (the sink's upsert
moves only to a higher version).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Tag

from schemas import SCHEMA_VERSION

EndReason = Literal["inactivity", "max_length", "campaign_change", "midnight", "storage_cleared"]


class SessionSnapshot(BaseModel):
    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = SCHEMA_VERSION
    session_id: str
    guid: str
    session_index: int
    site: str
    status: Literal["open", "closed"]
    started_at: datetime
    last_seen_at: datetime
    ended_at: datetime | None = None
    end_reason: EndReason | None = None
    duration_s: float
    landing_url: str
    landing_path: str
    exit_url: str | None = None
    referrer: str = ""
    referrer_host: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    utm_id: str | None = None
    click_id: str | None = None
    click_id_type: str | None = None
    channel: str
    ip: str | None = None
    user_agent: str = ""
    browser: str | None = None
    os: str | None = None
    device_type: str | None = None
    is_bot: bool = False
    pageviews: int
    events: int
    hits: int
    is_bounce: bool
    version: int


class SessionRetraction(BaseModel):
    """A session merged into another by a late hit (SPEC rule 6): no analyst-visible row may
    name it any more. Keyed by the retracted session_id on `sessions` (so compaction keeps it
    as that id's last word); `version` comes from the same per-device counter as snapshots, so
    the sink applies a retraction only over lower versions, and a later snapshot of the same
    id (a split giving it back) only over the retraction."""

    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = SCHEMA_VERSION
    kind: Literal["retraction"] = "retraction"
    session_id: str
    guid: str
    merged_into: str
    version: int


def _sessions_kind(value: Any) -> str:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return "retraction" if kind == "retraction" else "snapshot"


# What the `sessions` topic carries: snapshots (which have no `kind`, as before retractions
# existed) and retractions.
SessionsTopicRecord = Annotated[
    Annotated[SessionSnapshot, Tag("snapshot")] | Annotated[SessionRetraction, Tag("retraction")],
    Discriminator(_sessions_kind),
]
