"""User agent enrichment: browser, OS, device type and the crawler flag (SPEC rule 11).

ua-parser (1.0.x with ua-parser-builtins) does the parsing. Without a native resolver
installed it falls back to pure-Python regexes, slow for an unseen string (`bench/micro_bench.py`
measures a parse against a cache hit), so parses are cached: many hits share a handful of user agents, and the core only
asks at the moment it builds a session snapshot.

A user agent is a crawler when ua-parser calls its device "Spider" or when it carries a
common crawler / automation token (`CRAWLER_TOKENS`). An empty user agent is *not* flagged:
the edge always records the header it got, and flagging every import without one would
hide real sessions.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

import ua_parser

# Matched case-insensitively anywhere in the string. "bot" is guarded so phone makers
# such as CUBOT are not crawlers.
CRAWLER_TOKENS = re.compile(
    r"(?<!cu)bot\b|crawl|spider|slurp|headless|lighthouse|python-requests|python-urllib|"
    r"aiohttp|httpx|curl/|wget|libwww|scrapy|okhttp|go-http-client|java/|apache-httpclient|axios|"
    r"node-fetch|phantomjs|selenium|puppeteer|playwright|facebookexternalhit|mediapartners|"
    r"feedfetcher|ia_archiver|archive\.org|pingdom|uptimerobot|statuscake|site24x7|gtmetrix|"
    r"pagespeed|bingpreview|semrush|ahrefs|petalsearch|yandex(?:bot|images)|baiduspider|"
    r"duckduckgo-favicons",
    re.IGNORECASE,
)

_TABLET_DEVICES = frozenset({"iPad", "Kindle", "Kindle Fire", "Generic Tablet", "Nexus 7", "Nexus 9", "Nexus 10"})
_MOBILE_OS = frozenset({"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "Firefox OS", "HarmonyOS"})


class Agent(NamedTuple):
    browser: str | None
    os: str | None
    device_type: str | None  # "desktop" | "mobile" | "tablet" | "bot", None when the string is empty
    is_bot: bool


_UNKNOWN = Agent(None, None, None, False)


def _family(value: object) -> str | None:
    family = getattr(value, "family", None)
    return None if family in (None, "", "Other") else family


@lru_cache(maxsize=8192)
def describe(user_agent: str) -> Agent:
    if not user_agent:
        return _UNKNOWN
    parsed = ua_parser.parse(user_agent)
    browser = _family(parsed.user_agent)
    os_name = _family(parsed.os)
    device = _family(parsed.device)
    is_bot = device == "Spider" or CRAWLER_TOKENS.search(user_agent) is not None
    if is_bot:
        device_type = "bot"
    elif (
        device in _TABLET_DEVICES
        or "Tablet" in user_agent
        or "iPad" in user_agent
        or (os_name == "Android" and "Mobile" not in user_agent)
    ):
        device_type = "tablet"
    elif os_name in _MOBILE_OS or "Mobile" in user_agent or "iPhone" in user_agent:
        device_type = "mobile"
    else:
        device_type = "desktop"
    return Agent(browser, os_name, device_type, is_bot)


def is_crawler(user_agent: str) -> bool:
    return describe(user_agent).is_bot


def warm() -> None:
    """Load and compile ua-parser's rules now (about a second) rather than on the first hit."""
    describe.__wrapped__("Mozilla/5.0 (Windows NT 10.0; Win64; x64)")
