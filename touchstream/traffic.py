"""Synthetic but realistic traffic: several sites, campaigns, referrers, returning devices,
leads and appointments, and a crawler. Used by the demo, the load benchmark and fault tests.

Pure and seeded: the same arguments give the same hits, so a test can compare runs. Times are
passed in (`start`), never read from a clock.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.timefmt import iso

SITES = ("www.oakridge-apts.com", "www.maple-court.com", "www.riverside-lofts.com")
PAGES = ("/", "/floorplans", "/amenities", "/gallery", "/neighborhood", "/contact", "/apply", "/pricing")

USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0",
)
CRAWLER_UA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


@dataclass(frozen=True, slots=True)
class Source:
    """How a visit arrives: a query string to add to the landing URL and a referrer."""

    name: str
    weight: float
    query: str
    referrer: str


SOURCES = (
    Source("organic_google", 30, "", "https://www.google.com/"),
    Source("paid_google", 15, "utm_source=google&utm_medium=cpc&utm_campaign=spring_lease&gclid={click}", "https://www.google.com/"),
    Source("paid_facebook", 10, "utm_source=facebook&utm_medium=paid_social&utm_campaign=spring_lease&fbclid={click}", "https://m.facebook.com/"),
    Source("email", 8, "utm_source=newsletter&utm_medium=email&utm_campaign=may_newsletter", ""),
    Source("organic_bing", 5, "", "https://www.bing.com/"),
    Source("social", 7, "", "https://www.instagram.com/"),
    Source("referral", 7, "", "https://www.apartmentguide.com/listing/123"),
    Source("display", 3, "utm_source=gdn&utm_medium=display&utm_campaign=retarget", ""),
    Source("direct", 15, "", ""),
)


@dataclass(slots=True)
class TrafficShape:
    devices: int = 200
    span: timedelta = timedelta(days=3)
    max_sessions_per_device: int = 4
    max_pageviews_per_session: int = 8
    lead_rate: float = 0.08
    appointment_rate: float = 0.04
    crawler_pageviews: int = 60


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def generate(start: datetime, shape: TrafficShape | None = None, seed: int = 7) -> list[dict]:
    """Hits as a tracker would post them (HitIn-shaped dicts), sorted by created_at.

    Each hit carries `created_at` only, as an import or a trusted client would, so
    `occurred_at = created_at` and the sessions do not depend on when they are sent.
    """
    shape = shape or TrafficShape()
    rng = random.Random(seed)
    weights = [s.weight for s in SOURCES]
    hits: list[dict] = []
    for _ in range(shape.devices):
        guid = _uuid(rng)
        ua = rng.choice(USER_AGENTS)
        site = rng.choice(SITES)
        t = start + timedelta(seconds=rng.uniform(0, shape.span.total_seconds() * 0.8))
        for _ in range(rng.randint(1, shape.max_sessions_per_device)):
            source = rng.choices(SOURCES, weights)[0]
            query = source.query.format(click=_uuid(rng).replace("-", "")[:20])
            pages = rng.randint(1, shape.max_pageviews_per_session)
            for n in range(pages):
                path = "/" if n == 0 and rng.random() < 0.5 else rng.choice(PAGES)
                url = f"https://{site}{path}" + (f"?{query}" if n == 0 and query else "")
                hits.append(
                    {
                        "hit_id": _uuid(rng),
                        "guid": guid,
                        "type": "pageview",
                        "url": url,
                        "referrer": source.referrer if n == 0 else f"https://{site}/",
                        "title": f"{site} {path}",
                        "created_at": iso(t),
                        "_ua": ua,
                    }
                )
                t += timedelta(seconds=rng.uniform(5, 240))
            for name, rate, module in (
                ("lead", shape.lead_rate, rng.choice(("contact_form", "chat"))),
                ("appointment", shape.appointment_rate, "scheduler"),
            ):
                if rng.random() < rate:
                    hits.append(
                        {
                            "hit_id": _uuid(rng),
                            "guid": guid,
                            "type": "event",
                            "url": f"https://{site}/contact",
                            "created_at": iso(t),
                            "event": {"name": name, "module": module, "properties": {"unit": rng.choice(("1A", "2B", "3C"))}},
                            "_ua": ua,
                        }
                    )
                    t += timedelta(seconds=rng.uniform(5, 60))
            # Returning visit: hours to a day later, past the 30-minute timeout.
            t += timedelta(hours=rng.uniform(1, 20))
    crawler = _uuid(rng)
    t = start
    for _ in range(shape.crawler_pageviews):
        hits.append(
            {
                "hit_id": _uuid(rng),
                "guid": crawler,
                "type": "pageview",
                "url": f"https://{SITES[0]}{rng.choice(PAGES)}",
                "created_at": iso(t),
                "_ua": CRAWLER_UA,
            }
        )
        t += timedelta(seconds=rng.uniform(1, 30))
    hits.sort(key=lambda h: h["created_at"])
    return hits


def requests(hits: list[dict], window: int = 200) -> Iterator[tuple[str, list[dict]]]:
    """Group time-sorted hits into requests as browsers would send them: one user agent per
    request (`_ua` removed), grouped within consecutive windows so that time order is kept
    up to a window's span."""
    for start in range(0, len(hits), window):
        groups: dict[str, list[dict]] = {}
        for hit in hits[start : start + window]:
            hit = dict(hit)
            groups.setdefault(hit.pop("_ua"), []).append(hit)
        yield from groups.items()
