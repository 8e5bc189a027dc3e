from __future__ import annotations

import pytest

from sessionizer.useragent import Agent, describe, is_crawler

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)
SAFARI_IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/16.6 Mobile/15E148 Safari/604.1"
)
FIREFOX_MAC = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.4; rv:125.0) Gecko/20100101 Firefox/125.0"
ANDROID_PHONE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36"
)
ANDROID_TABLET = (
    "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
CUBOT_PHONE = (
    "Mozilla/5.0 (Linux; Android 10; CUBOT_X30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36"
)


def test_chrome_desktop() -> None:
    assert describe(CHROME_WINDOWS) == Agent("Chrome", "Windows", "desktop", False)


def test_safari_iphone() -> None:
    assert describe(SAFARI_IPHONE) == Agent("Mobile Safari", "iOS", "mobile", False)


def test_other_devices() -> None:
    assert describe(SAFARI_IPAD).device_type == "tablet"
    assert describe(FIREFOX_MAC) == Agent("Firefox", "Mac OS X", "desktop", False)
    assert describe(ANDROID_PHONE)[1:] == ("Android", "mobile", False)
    assert describe(ANDROID_TABLET).device_type == "tablet"
    assert describe(CUBOT_PHONE).is_bot is False


@pytest.mark.parametrize("ua", [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/119.0.0.0 Mobile Safari/537.36 Chrome-Lighthouse",
    "python-requests/2.32.3",
    "curl/8.5.0",
    "Wget/1.21.4",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)",
    # from the maintained list (crawler-user-agents), beyond what a hand-written regex held
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)",
    "Mozilla/5.0 (compatible; Bytespider; spider-feedback@bytedance.com) AppleWebKit/537.36",
    "Go-http-client/1.1",
    "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
])
def test_crawlers_are_flagged(ua: str) -> None:
    agent = describe(ua)
    assert agent.is_bot and agent.device_type == "bot" and is_crawler(ua)


def test_googlebot_is_named() -> None:
    assert describe("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)").browser == "Googlebot"


def test_empty_user_agent() -> None:
    assert describe("") == Agent(None, None, None, False)


def test_parses_are_cached() -> None:
    describe.cache_clear()
    describe(CHROME_WINDOWS)
    describe(CHROME_WINDOWS)
    assert describe.cache_info().hits >= 1


@pytest.mark.parametrize("ua", [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
    "[FBAN/FBIOS;FBAV/450.0.0.38.108;FBBV/584870385]",
    "Mozilla/5.0 (Linux; Android 13; SM-S918B Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Version/4.0 Chrome/120.0.6099.230 Mobile Safari/537.36 Instagram 312.0.0.32.112 Android",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 "
    "Edg/120.0.0.0",
    CUBOT_PHONE,
])
def test_people_in_app_browsers_are_not_crawlers(ua: str) -> None:
    assert not describe(ua).is_bot and not is_crawler(ua)
