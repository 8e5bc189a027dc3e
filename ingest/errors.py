"""What the edge refuses, as types: each knows its HTTP status.

    schemas.errors.TouchstreamError
    ├── InvalidInput
    │   └── BodyRefused            the request as a whole is refused (nothing in it accepted)
    │       ├── MalformedBody      400: not JSON, empty, or not an object / array of objects
    │       ├── TooManyItems       400: more items than `ingest_max_items`
    │       ├── PayloadTooLarge    413: more bytes than `ingest_max_body_bytes`
    │       ├── UnsupportedMediaType 415: a content type or encoding the edge does not read
    │       ├── OriginNotAllowed   403: a browser origin outside `ingest_cors_origins`
    │       └── ClientGone         the client went away mid-body (or its read deadline closed it)
    └── Unavailable
        └── PublishUnavailable     503: Kafka did not acknowledge in time (or is known to be down)

Per-item problems are not exceptions: they are `FieldError`s reported by index in a 202/400
body (see `ingest.intake`).
"""

from __future__ import annotations

from typing import ClassVar

from schemas.errors import DecodeError, FieldError, InvalidInput, Unavailable

__all__ = [
    "BodyRefused",
    "ClientGone",
    "FieldError",
    "MalformedBody",
    "OriginNotAllowed",
    "PayloadTooLarge",
    "PublishUnavailable",
    "TooManyItems",
    "UnsupportedMediaType",
]


class BodyRefused(InvalidInput):
    """The whole request is refused; `status` is the HTTP status, `refusal` the metrics label."""

    status: ClassVar[int] = 400
    refusal: ClassVar[str] = "malformed_body"
    # Whether the body is worth a dead letter (it was read, and it is data someone sent).
    dead_letter: ClassVar[bool] = False


class MalformedBody(BodyRefused, DecodeError):
    status = 400
    refusal = "malformed_body"
    dead_letter = True


class TooManyItems(BodyRefused):
    status = 400
    refusal = "too_many_items"
    dead_letter = True


class PayloadTooLarge(BodyRefused):
    status = 413
    refusal = "too_large"


class UnsupportedMediaType(BodyRefused):
    status = 415
    refusal = "unsupported_media_type"


class OriginNotAllowed(BodyRefused):
    status = 403
    refusal = "origin_not_allowed"


class ClientGone(BodyRefused):
    """The body never arrived whole: the client disconnected, or was disconnected by its read
    deadline (`ingest.connection`). Nobody reads the answer, and the partial bytes are not
    something a client sent, so no dead letter (slow clients would otherwise fill `deadletter`)."""

    status = 400
    refusal = "client_gone"


class PublishUnavailable(Unavailable):
    """Kafka cannot take the hits now. Nothing of the request is reported accepted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
