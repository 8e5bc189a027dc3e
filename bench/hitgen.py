"""Enriched hits for the sessionizer benchmarks, as the edge publishes them to `hits`.

Deterministic (seeded) and fast: 200,000 hits in well under a second. Each device gets
`hits_per_device` hits a few seconds to minutes apart, in one or two visits, so the sessionizer
does real work (open, extend, split on inactivity) rather than only opening sessions.

`compact=True` (the default) leaves out the keys whose value is null, which `Hit` reads the
same way (they all default to None): that keeps a hit near 300 bytes, the size the project's
throughput floors were measured with (STACK.md). `compact=False` gives the edge's full form
(every key present, about 800 bytes with a browser user agent).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timezone

from schemas import SCHEMA_VERSION
from schemas.wire import encode

UTC = timezone.utc
SITES = ("www.oakridge-apts.com", "www.maple-court.com", "www.riverside-lofts.com")
PAGES = ("/", "/floorplans", "/amenities", "/gallery", "/contact", "/apply", "/pricing")
UAS = ("Mozilla/5.0 (Windows NT 10.0) Chrome/126", "Mozilla/5.0 (iPhone) Safari/604", "Mozilla/5.0 (Android 14) Chrome/126")


@dataclass(frozen=True, slots=True)
class Shape:
    hits: int = 200_000
    devices: int = 20_000
    seed: int = 11
    compact: bool = True


def _uuid(rng: random.Random) -> str:
    h = "%032x" % rng.getrandbits(128)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def generate(shape: Shape, start: datetime) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs in publishing order: interleaved across devices, in time order per device."""
    rng = random.Random(shape.seed)
    per_device = max(1, shape.hits // shape.devices)
    start_ms = int(start.timestamp() * 1000)
    records: list[tuple[int, bytes, bytes]] = []
    for _ in range(shape.devices):
        guid = _uuid(rng)
        site = rng.choice(SITES)
        ua = rng.choice(UAS)
        t = start_ms + rng.randrange(0, 1_800_000)
        for n in range(per_device):
            if n and rng.random() < 0.1:
                t += rng.randrange(1_860_000, 5_400_000)  # a second visit, past the 30-min timeout
            else:
                t += rng.randrange(2_000, 120_000)
            path = rng.choice(PAGES)
            is_event = rng.random() < 0.05
            at = _iso(t)
            record: dict = {
                "v": SCHEMA_VERSION,
                "kind": "hit",
                "hit_id": _uuid(rng),
                "guid": guid,
                "type": "event" if is_event else "pageview",
                "url": f"https://{site}{path}",
                "path": path,
                "site": site,
                "referrer": "https://www.google.com/" if n == 0 else "",
                "referrer_host": "www.google.com" if n == 0 else None,
                "title": None,
                "utm_source": None,
                "utm_medium": None,
                "utm_campaign": None,
                "utm_term": None,
                "utm_content": None,
                "utm_id": None,
                "click_id": None,
                "click_id_type": None,
                "event_name": "lead" if is_event else None,
                "event_module": "chat" if is_event else None,
                "event_properties": {"unit": "2B"} if is_event else None,
                "previous_guid": None,
                "created_at": None,
                "sent_at": None,
                "received_at": at,
                "occurred_at": at,
                "ip": "203.0.113.0",
                "user_agent": ua,
            }
            if shape.compact:
                record = {k: v for k, v in record.items() if v is not None and v != ""}
            records.append((t, guid.encode(), encode(record)))
    records.sort(key=lambda r: r[0])
    return [(k, v) for _, k, v in records[: shape.hits]]
