"""GA4-style default channel grouping of a session (SPEC section 3, "Channel").

Decided once per session from its landing hit: click id, utm source/medium, referrer host
and the site's own host. First match wins, in this order:

  Paid Search     gclid / gbraid / wbraid / msclkid; or a paid medium (cpc, ppc, paid*, ...)
                  whose source is a search engine — or is unknown (GA4's "Paid Other" is
                  folded in here: there is no such channel in the SPEC's list)
  Paid Social     fbclid / ttclid / li_fat_id / twclid; or a paid medium whose source is a
                  social site, or a paid medium naming social (e.g. "paid_social")
  Display         dclid; or medium display / banner / cpm / interstitial / expandable
  Organic Search  source (utm_source, else the referrer host) is a search engine, or medium organic
  Organic Social  source is a social site, or medium social / social-network / sm / ...
  Email           source or medium email / e-mail / newsletter, or a webmail referrer
  Affiliates      medium affiliate
  Referral        medium referral / link / app, or (no campaign data) any other referrer
  Direct          no campaign data and no referrer, or a referrer on the site's own host
                  (with or without "www."): internal navigation is not a source
  Unassigned      campaign data that matches none of the above

Click ids are checked first so paid traffic is never misfiled as Direct (umami#3264): a
gclid landing with no referrer (apps, privacy browsers) is still Paid Search.

As in GA4, when the landing hit carries utm data its utm_source is the source and the
referrer is not consulted; without utm data the referrer host is the source.

The host lists are data: extend them here.
"""

from __future__ import annotations

import re
from functools import lru_cache

PAID_SEARCH = "Paid Search"
PAID_SOCIAL = "Paid Social"
DISPLAY = "Display"
ORGANIC_SEARCH = "Organic Search"
ORGANIC_SOCIAL = "Organic Social"
EMAIL = "Email"
AFFILIATES = "Affiliates"
REFERRAL = "Referral"
DIRECT = "Direct"
UNASSIGNED = "Unassigned"

CHANNELS = (
    PAID_SEARCH, PAID_SOCIAL, DISPLAY, ORGANIC_SEARCH, ORGANIC_SOCIAL, EMAIL, AFFILIATES, REFERRAL, DIRECT, UNASSIGNED,
)

PAID_SEARCH_CLICK_IDS = frozenset({"gclid", "gbraid", "wbraid", "msclkid"})
DISPLAY_CLICK_IDS = frozenset({"dclid"})
PAID_SOCIAL_CLICK_IDS = frozenset({"fbclid", "ttclid", "li_fat_id", "twclid"})

# Search engines, by the label before the public suffix ("google" in www.google.co.uk) or by
# a utm_source value as people type it.
SEARCH_ENGINES = frozenset({
    "google", "bing", "yahoo", "duckduckgo", "baidu", "yandex", "ecosia", "ask", "aol", "naver",
    "seznam", "startpage", "qwant", "sogou", "daum", "mojeek", "kagi", "dogpile", "presearch", "lycos",
    "googleads", "adwords", "google ads", "google_ads", "microsoft ads", "bing ads", "yahoo japan",
})
# Search engines whose host the label rule above misses.
SEARCH_HOSTS = frozenset({
    "search.yahoo.com", "search.aol.com", "search.brave.com", "cn.bing.com", "search.seznam.cz",
    "ya.ru", "go.mail.ru", "search.naver.com", "search.msn.com", "so.com", "m.so.com", "search.lycos.com",
})
SOCIAL_SITES = frozenset({
    "facebook", "fb", "instagram", "ig", "twitter", "x", "linkedin", "pinterest", "reddit",
    "tiktok", "youtube", "snapchat", "threads", "tumblr", "quora", "whatsapp", "messenger",
    "nextdoor", "vk", "weibo", "wechat", "telegram", "discord", "mastodon", "bluesky", "bsky",
    "meetup", "flickr", "vimeo", "twitch", "yelp", "tripadvisor", "foursquare",
    "meta", "fb ads", "facebook ads", "linkedin ads", "tiktok ads",
})
SOCIAL_HOSTS = frozenset({
    "t.co", "x.com", "lnkd.in", "fb.me", "fb.com", "m.me", "l.facebook.com", "lm.facebook.com",
    "m.facebook.com", "web.facebook.com", "l.instagram.com", "youtu.be", "m.youtube.com",
    "out.reddit.com", "old.reddit.com", "pin.it", "bsky.app", "threads.net", "vm.tiktok.com",
    "vk.com", "away.vk.com", "t.me", "line.me", "discord.com", "news.ycombinator.com",
})
EMAIL_SOURCES = frozenset({"email", "e-mail", "e_mail", "e mail", "newsletter", "mail"})
# Webmail referrers: mail.google.com would otherwise read as the search engine "google".
EMAIL_HOSTS = frozenset({
    "mail.google.com", "inbox.google.com", "outlook.live.com", "outlook.office.com", "outlook.office365.com",
    "mail.yahoo.com", "mail.aol.com", "mail.proton.me", "mail.zoho.com", "webmail", "mail.yandex.ru",
    "e.mail.ru", "mail.com", "gmx.net", "web.de", "icloud.com",
})

_PAID_MEDIUM = re.compile(r"^(.*cpc.*|ppc|cpv|cpa|cpp|sem|retargeting|remarketing|paid.*|ads?)$")
DISPLAY_MEDIA = frozenset({"display", "banner", "cpm", "expandable", "interstitial", "programmatic"})
ORGANIC_MEDIA = frozenset({"organic"})
SOCIAL_MEDIA = frozenset({
    "social", "social-network", "social_network", "social network", "social-media", "social_media",
    "social media", "sm", "social-organic", "organic_social", "organic-social",
})
AFFILIATE_MEDIA = frozenset({"affiliate", "affiliates"})
REFERRAL_MEDIA = frozenset({"referral", "link", "app"})
DIRECT_SOURCES = frozenset({"(direct)", "direct"})
NONE_MEDIA = frozenset({"", "(none)", "(not set)", "none"})

_HOST_PREFIXES = ("www.", "m.", "l.", "lm.", "mobile.", "amp.")


def _strip_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    for prefix in _HOST_PREFIXES:
        if host.startswith(prefix):
            return host[len(prefix):]
    return host


def _kind(source: str) -> str | None:
    """'search', 'social', 'email' or None for a source: a referrer host or a utm_source value."""
    if not source:
        return None
    if source in EMAIL_HOSTS or source in EMAIL_SOURCES:
        return "email"
    if source in SEARCH_HOSTS or source in SEARCH_ENGINES:
        return "search"
    if source in SOCIAL_HOSTS or source in SOCIAL_SITES:
        return "social"
    if "." not in source:
        return None
    bare = _strip_host(source)
    if bare in EMAIL_HOSTS or bare.startswith(("mail.", "webmail.", "outlook.")):
        return "email"
    if bare in SEARCH_HOSTS:
        return "search"
    if bare in SOCIAL_HOSTS:
        return "social"
    label = bare.split(".", 1)[0]
    if label in SEARCH_ENGINES:
        return "search"
    if label in SOCIAL_SITES and len(label) > 2:  # "fb", "ig", "x", "vk" only as listed hosts
        return "social"
    return None


def is_internal(referrer_host: str | None, site: str | None, page_host: str | None = None) -> bool:
    """True when the referrer is the site itself (with or without "www.")."""
    if not referrer_host:
        return False
    ref = _strip_host(referrer_host)
    return any(own and _strip_host(own) == ref for own in (site, page_host))


@lru_cache(maxsize=16384)
def channel_for(
    utm_source: str | None,
    utm_medium: str | None,
    click_id_type: str | None,
    referrer_host: str | None,
    site: str | None,
    page_host: str | None = None,
    has_campaign: bool | None = None,
) -> str:
    """The channel of a session from its landing hit.

    `has_campaign` says whether the landing hit carried any utm field or click id; by default
    it is taken from utm_source/utm_medium/click_id_type only, so pass it when the hit carried
    e.g. only utm_campaign (such traffic is Unassigned, not Direct).
    """
    if click_id_type in PAID_SEARCH_CLICK_IDS:
        return PAID_SEARCH
    if click_id_type in DISPLAY_CLICK_IDS:
        return DISPLAY
    if click_id_type in PAID_SOCIAL_CLICK_IDS:
        return PAID_SOCIAL
    source = (utm_source or "").strip().lower()
    medium = (utm_medium or "").strip().lower()
    if has_campaign is None:
        has_campaign = bool(source or medium or click_id_type)
    if not has_campaign:
        # No campaign data: the referrer is the source.
        if not referrer_host or is_internal(referrer_host, site, page_host):
            return DIRECT
        kind = _kind(referrer_host.strip().lower())
        if kind == "search":
            return ORGANIC_SEARCH
        if kind == "social":
            return ORGANIC_SOCIAL
        if kind == "email":
            return EMAIL
        return REFERRAL

    kind = _kind(source)
    if _PAID_MEDIUM.match(medium):
        if kind == "social" or "social" in medium:
            return PAID_SOCIAL
        return PAID_SEARCH  # search engine, or an unknown network (GA4's "Paid Other")
    if medium in DISPLAY_MEDIA:
        return DISPLAY
    if kind == "search" or medium in ORGANIC_MEDIA:
        return ORGANIC_SEARCH
    if kind == "social" or medium in SOCIAL_MEDIA:
        return ORGANIC_SOCIAL
    if kind == "email" or medium in EMAIL_SOURCES:
        return EMAIL
    if medium in AFFILIATE_MEDIA:
        return AFFILIATES
    if medium in REFERRAL_MEDIA:
        return REFERRAL
    if source in DIRECT_SOURCES and medium in NONE_MEDIA:
        return DIRECT
    return UNASSIGNED
