"""GET /v1/tracker.js: the browser tracker, served from a file with an ETag.

Whatever file is configured is served; it is re-read when it changes on disk, so a new
tracker goes out without restarting the edge.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

CONTENT_TYPE = b"text/javascript; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    etag: bytes
    stamp: tuple[int, int]  # (mtime_ns, size) it was read at


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class TrackerFile:
    def __init__(self, path: Path, max_age_s: int) -> None:
        self.path = path
        self.cache_control = f"public, max-age={max_age_s}".encode()
        self._asset: Asset | None = None

    def _load(self) -> Asset | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        stamp = (stat.st_mtime_ns, stat.st_size)
        asset = self._asset
        if asset is not None and asset.stamp == stamp:
            return asset
        try:
            body = self.path.read_bytes()
        except OSError:
            return None
        asset = Asset(body, b'"' + hashlib.blake2b(body, digest_size=12).hexdigest().encode() + b'"', stamp)
        self._asset = asset
        return asset

    def get(self, if_none_match: bytes | None) -> Reply:
        asset = self._load()
        if asset is None:
            return Reply(
                404, [(b"content-type", b"text/plain; charset=utf-8")], b"tracker.js is not installed on this edge\n"
            )
        headers = [
            (b"content-type", CONTENT_TYPE),
            (b"cache-control", self.cache_control),
            (b"etag", asset.etag),
            (b"cross-origin-resource-policy", b"cross-origin"),
            (b"x-content-type-options", b"nosniff"),
        ]
        if if_none_match is not None and _matches(if_none_match, asset.etag):
            return Reply(304, headers, b"")
        return Reply(200, headers, asset.body)


def _matches(header: bytes, etag: bytes) -> bool:
    tags = [t.strip().removeprefix(b"W/") for t in header.split(b",")]
    return b"*" in tags or etag in tags
