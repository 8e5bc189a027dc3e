"""The error tree. Components catch these, never bare exceptions, on their data paths.

    TouchstreamError
    ├── InvalidInput              a record or request that can never be accepted as it is
    │   ├── DecodeError           not JSON / not the expected shape at all
    │   ├── ValidationFailed      JSON of the right shape with field errors
    │   ├── UnsupportedVersion    a schema version this build does not read
    │   └── RejectedByDatabase    PostgreSQL (or its driver's encoder) refuses a row: isolate it
    └── Unavailable               a dependency (Kafka, PostgreSQL) cannot take work now: retry
        └── DatabaseUnavailable   a write failed for a reason that is not the rows': retry the batch
            └── PartitionMissing  a day partition went away under the sink: reload them, then retry

What a branch means is what its handler does: an `InvalidInput` is refused or dead-lettered and
never retried; an `Unavailable` is retried (with `schemas.backoff`) and never dead-lettered.
Library exceptions are turned into these where they are caught (`sink.writer.classify` for
asyncpg's), so callers dispatch on types, not on strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field: `field` is a dotted path (`event.name`), `message` says why."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class TouchstreamError(Exception):
    """Base of every error this project raises on purpose."""


@dataclass
class InvalidInput(TouchstreamError):
    """Input that can never be accepted as it is: refuse it or dead-letter it, never retry it."""

    reason: str
    errors: list[FieldError] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.reason)

    def __str__(self) -> str:
        if not self.errors:
            return self.reason
        detail = "; ".join(f"{e.field}: {e.message}" for e in self.errors)
        return f"{self.reason}: {detail}"


class DecodeError(InvalidInput):
    """The bytes are not JSON, or not a JSON object where one is required."""


class ValidationFailed(InvalidInput):
    """Well-formed JSON whose fields break the contract."""


class UnsupportedVersion(InvalidInput):
    """A record written with a schema version this build cannot read."""


class RejectedByDatabase(InvalidInput):
    """PostgreSQL (or asyncpg's encoder) refuses a value of the batch: some row can never be written."""


class Unavailable(TouchstreamError):
    """Kafka or PostgreSQL cannot take the work right now; the caller retries later."""


class DatabaseUnavailable(Unavailable):
    """A PostgreSQL write failed for a reason that is not the rows' (connection lost, server
    shutting down, deadlock, out of resources, ...): the batch is retried on a new connection."""


class PartitionMissing(DatabaseUnavailable):
    """A row's day partition does not exist (dropped behind the sink's back): the sink reloads
    its partition list, creates what is missing and retries; not the row's fault."""
