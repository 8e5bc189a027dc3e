"""User agent enrichment: browser, OS, device type and the crawler flag (SPEC rule 11).

ua-parser (1.0.x with ua-parser-builtins) does the parsing. Without a native resolver
installed it falls back to pure-Python regexes, slow for an unseen string (`bench/micro_bench.py`
measures a parse against a cache hit), so parses are cached: many hits share a handful of user agents, and the core only
asks at the moment it builds a session snapshot.

A user agent is a crawler when ua-parser calls its device "Spider" or when it matches the
crawler list of the `crawler-user-agents` package (PyPI; the maintained community list of
crawler, scraper, monitoring and HTTP-library patterns, released every few weeks: upgrading the
pin upgrades the list). An empty user agent is *not* flagged: the edge always records the header
it got, and flagging every import without one would hide real sessions.

The edge adds a second signal: hits from a configured data-centre address range carry
`datacenter` (ingest.datacentre), which flags their session too (sessionizer.snapshot).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import crawleruseragents
import ua_parser

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
    is_bot = device == "Spider" or crawleruseragents.is_crawler(user_agent)
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
    """Load and compile ua-parser's rules and the crawler list now (about a second) rather than
    on the first hit."""
    describe.__wrapped__("Mozilla/5.0 (Windows NT 10.0; Win64; x64)")
