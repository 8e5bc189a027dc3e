"""GA4's default channel group of a session (SPEC section 3, "Channel"), and operators' own rules.

Decided once per session from its landing hit, in two steps, as GA4 does:

1. The session's source / medium / campaign (`ChannelGrouping.touch`):
   - an ad click id sets its network's source and medium (gclid/gbraid/wbraid: google / cpc,
     msclkid: bing / cpc, dclid: dv360 / display, ttclid: tiktok / cpc, li_fat_id: linkedin /
     cpc, twclid: twitter / cpc), over what utm says, as GA4's auto-tagging does: paid traffic
     is never misfiled as Direct (umami#3264). fbclid is not an ad signal (Facebook adds it to
     every outbound link, organic posts too): it only gives facebook / referral when the
     landing has no utm source or medium;
   - otherwise, campaign data on the landing (any utm_* field): utm_source and utm_medium, each
     "(not set)" when absent; the referrer is not consulted;
   - otherwise the referrer: none, the site's own host (with or without "www.") or a referral
     exclusion (`referral_exclusions`: payment providers, the company's other domains) gives
     (direct) / (none); a search engine gives the engine / organic ("google" for
     www.google.co.uk); a webmail host (sources/email.txt, not in GA4's lists) host / email;
     any other host gives host / referral.
   The campaign is utm_campaign (lower case; "" when absent).

2. The channel: the operator's rules first (`channel_rules`, if any), in their order; then
   GA4's default rules (`default_channel`), first match wins, in the order of `CHANNELS`:

   Direct             source "(direct)" and medium "(not set)" or "(none)"
   Cross-network      campaign contains "cross-network"
   Paid Shopping      (source is a shopping site or campaign matches SHOP_CAMPAIGN) and medium matches PAID_MEDIUM
   Paid Search        source is a search site and medium matches PAID_MEDIUM
   Paid Social        source is a social site and medium matches PAID_MEDIUM
   Paid Video         source is a video site and medium matches PAID_MEDIUM
   Display            medium is display, banner, expandable, interstitial or cpm
   Paid Other         medium matches PAID_MEDIUM
   Organic Shopping   source is a shopping site or campaign matches SHOP_CAMPAIGN
   Organic Social     source is a social site, or medium is social, social-network, social-media, sm,
                      social network or social media
   Organic Video      source is a video site or medium contains "video"
   Organic Search     source is a search site or medium is organic
   Referral           medium is referral, app or link
   Email              source or medium is email, e-mail, e_mail or e mail
   Affiliates         medium is affiliate
   Audio              medium is audio
   SMS                source or medium is sms
   Mobile Push Notifications  medium ends with "push" or contains "mobile" or "notification",
                      or source is firebase
   Unassigned         none of the above

   Comparisons ignore case, as GA4's do.

Source categories are GA4's published lists, carried as data (sources/search.txt, social.txt,
shopping.txt, video.txt; a few newer sites are marked as additions). A source is in a category
when it is listed, or — for a host — when its host without "www."/"m." is, or one of its parent
domains is (es.pinterest.com: pinterest.com), or its name before the public suffix is listed as
a bare word (www.google.co.uk: "google"; only for names of three letters or more).

Pure: no clock, no I/O beyond reading the package's data files at import.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, Protocol

DIRECT = "Direct"
CROSS_NETWORK = "Cross-network"
PAID_SHOPPING = "Paid Shopping"
PAID_SEARCH = "Paid Search"
PAID_SOCIAL = "Paid Social"
PAID_VIDEO = "Paid Video"
DISPLAY = "Display"
PAID_OTHER = "Paid Other"
ORGANIC_SHOPPING = "Organic Shopping"
ORGANIC_SOCIAL = "Organic Social"
ORGANIC_VIDEO = "Organic Video"
ORGANIC_SEARCH = "Organic Search"
REFERRAL = "Referral"
EMAIL = "Email"
AFFILIATES = "Affiliates"
AUDIO = "Audio"
SMS = "SMS"
MOBILE_PUSH = "Mobile Push Notifications"
UNASSIGNED = "Unassigned"

# GA4's default channel group, in its order of evaluation.
CHANNELS = (
    DIRECT, CROSS_NETWORK, PAID_SHOPPING, PAID_SEARCH, PAID_SOCIAL, PAID_VIDEO, DISPLAY, PAID_OTHER,
    ORGANIC_SHOPPING, ORGANIC_SOCIAL, ORGANIC_VIDEO, ORGANIC_SEARCH, REFERRAL, EMAIL, AFFILIATES, AUDIO, SMS,
    MOBILE_PUSH, UNASSIGNED,
)

SEARCH, SOCIAL, SHOPPING, VIDEO = "search", "social", "shopping", "video"
CATEGORIES = (SEARCH, SOCIAL, SHOPPING, VIDEO)

PAID_MEDIUM = re.compile(r"^(.*cp.*|ppc|retargeting|paid.*)$")
SHOP_CAMPAIGN = re.compile(r"^(.*(([^a-df-z]|^)shop|shopping).*)$")
DISPLAY_MEDIA = frozenset({"display", "banner", "expandable", "interstitial", "cpm"})
SOCIAL_MEDIA = frozenset({"social", "social-network", "social-media", "sm", "social network", "social media"})
REFERRAL_MEDIA = frozenset({"referral", "app", "link"})
EMAIL_WORDS = frozenset({"email", "e-mail", "e_mail", "e mail"})
NOT_SET = "(not set)"
DIRECT_SOURCE = "(direct)"
NONE_MEDIUM = "(none)"

# Click id -> (source, medium) of its ad network. All but fbclid override utm (see above).
CLICK_IDS: dict[str, tuple[str, str]] = {
    "gclid": ("google", "cpc"), "gbraid": ("google", "cpc"), "wbraid": ("google", "cpc"),
    "dclid": ("dv360", "display"), "msclkid": ("bing", "cpc"), "ttclid": ("tiktok", "cpc"),
    "li_fat_id": ("linkedin", "cpc"), "twclid": ("twitter", "cpc"),
}
WEAK_CLICK_IDS: dict[str, tuple[str, str]] = {"fbclid": ("facebook", "referral")}

_SOURCES = Path(__file__).resolve().parent / "sources"
_HOST_PREFIXES = ("www.", "m.")
# Second-level labels of two-label public suffixes (co.uk, com.au, ne.jp, ...): enough to find
# the name of a search engine's or a shop's country domain without the whole suffix list.
_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "ac", "gov", "edu", "ne", "or", "go", "gob"})


def read_list(path: Path) -> frozenset[str]:
    """The entries of a data file: one a line, lower case; blank lines and `#` comments skipped."""
    entries = (line.split("#", 1)[0].strip().lower() for line in path.read_text(encoding="utf-8").splitlines())
    return frozenset(e for e in entries if e)


SOURCE_CATEGORIES: dict[str, frozenset[str]] = {c: read_list(_SOURCES / f"{c}.txt") for c in CATEGORIES}
WEBMAIL_HOSTS = read_list(_SOURCES / "email.txt")


class Touch(NamedTuple):
    """What the channel rules look at: the session's GA4-style traffic source."""

    source: str       # lower case: utm_source, the click id's network, the referrer's host or engine, "(direct)"
    medium: str       # lower case: utm_medium, "cpc", "organic", "referral", "email", "(none)", "(not set)"
    campaign: str     # lower case utm_campaign, "" when absent
    click_id: str     # the landing's click id type, "" when none
    referrer: str     # the landing's referrer host, lower case ("" when none, or excluded)
    category: str     # the source's category: search, social, shopping, video or ""


class Rule(Protocol):
    """An operator's rule (`sessionizer.channel_rules`): a channel and a test of the touch."""

    channel: str

    def matches(self, touch: Touch) -> bool: ...


def _bare(host: str) -> str:
    for prefix in _HOST_PREFIXES:
        if host.startswith(prefix):
            return host[len(prefix):]
    return host


def _name(host: str) -> str | None:
    """The name before the public suffix of a host: google in google.co.uk or google.com; None
    when the host has more labels than that (docs.google.com)."""
    labels = host.split(".")
    if len(labels) == 2:
        return labels[0]
    if len(labels) == 3 and labels[1] in _SECOND_LEVEL and len(labels[2]) == 2:
        return labels[0]
    return None


def _in(host: str, listed: frozenset[str]) -> bool:
    """The host or one of its parent domains is listed."""
    while True:
        if host in listed:
            return True
        _, dot, parent = host.partition(".")
        if not dot or "." not in parent:  # (never down to a bare top-level domain)
            return False
        host = parent


@lru_cache(maxsize=16384)
def category_of(source: str) -> str:
    """GA4's source category of a (lower-case) source: a utm_source value or a host; "" if none."""
    if not source:
        return ""
    for category in CATEGORIES:
        if source in SOURCE_CATEGORIES[category]:
            return category
    if "." not in source:
        return ""
    bare = _bare(source)
    for category in CATEGORIES:
        if _in(bare, SOURCE_CATEGORIES[category]):
            return category
    name = _name(bare)
    if name is not None and len(name) >= 3:
        for category in CATEGORIES:
            if name in SOURCE_CATEGORIES[category]:
                return category
    return ""


def default_channel(touch: Touch) -> str:
    """GA4's default channel group of a touch (the table in the module docstring)."""
    source, medium, campaign, _, _, category = touch
    if source == DIRECT_SOURCE and medium in (NOT_SET, NONE_MEDIUM):
        return DIRECT
    if "cross-network" in campaign:
        return CROSS_NETWORK
    paid = PAID_MEDIUM.match(medium) is not None
    shop_campaign = SHOP_CAMPAIGN.match(campaign) is not None
    if paid:
        if category == SHOPPING or shop_campaign:
            return PAID_SHOPPING
        if category == SEARCH:
            return PAID_SEARCH
        if category == SOCIAL:
            return PAID_SOCIAL
        if category == VIDEO:
            return PAID_VIDEO
    if medium in DISPLAY_MEDIA:
        return DISPLAY
    if paid:
        return PAID_OTHER
    if category == SHOPPING or shop_campaign:
        return ORGANIC_SHOPPING
    if category == SOCIAL or medium in SOCIAL_MEDIA:
        return ORGANIC_SOCIAL
    if category == VIDEO or "video" in medium:
        return ORGANIC_VIDEO
    if category == SEARCH or medium == "organic":
        return ORGANIC_SEARCH
    if medium in REFERRAL_MEDIA:
        return REFERRAL
    if source in EMAIL_WORDS or medium in EMAIL_WORDS:
        return EMAIL
    if medium == "affiliate":
        return AFFILIATES
    if medium == "audio":
        return AUDIO
    if source == "sms" or medium == "sms":
        return SMS
    if medium.endswith("push") or "mobile" in medium or "notification" in medium or source == "firebase":
        return MOBILE_PUSH
    return UNASSIGNED


def _host(host: str | None) -> str:
    return (host or "").strip().lower().rstrip(".")


def is_internal(referrer_host: str | None, site: str | None, page_host: str | None = None) -> bool:
    """True when the referrer is the site itself (with or without "www.")."""
    if not referrer_host:
        return False
    ref = _bare(_host(referrer_host))
    return any(own and _bare(_host(own)) == ref for own in (site, page_host))


class ChannelGrouping:
    """The channel of a session's landing hit: the operator's rules, then GA4's (unless
    `defaults` is False), with the referral exclusions applied. Built once from the settings;
    its answers are cached (many sessions share a landing's campaign and referrer)."""

    def __init__(self, rules: Sequence[Rule] = (), *, defaults: bool = True,
                 referral_exclusions: Iterable[str] = ()) -> None:
        self.rules = tuple(rules)
        self.defaults = defaults
        self.referral_exclusions = frozenset(_bare(_host(h)) for h in referral_exclusions if _host(h))
        self.channel = lru_cache(maxsize=16384)(self._channel)
        self.excludes = lru_cache(maxsize=4096)(self._excludes)

    def _excludes(self, referrer_host: str | None) -> bool:
        """True when a referral from this host does not count as one: the host or a parent
        domain of it is a referral exclusion."""
        exclusions = self.referral_exclusions
        if not exclusions or not referrer_host:
            return False
        return _in(_bare(_host(referrer_host)), exclusions)

    def touch(self, utm_source: str | None, utm_medium: str | None, utm_campaign: str | None,
              click_id_type: str | None, referrer_host: str | None, site: str | None,
              page_host: str | None = None, has_campaign: bool | None = None) -> Touch:
        """The landing hit's source / medium / campaign as GA4 derives them (module docstring).

        `has_campaign`: whether the landing carried any utm field or click id; by default taken
        from the fields given, so pass it when the hit carried e.g. only utm_term."""
        source = (utm_source or "").strip().lower()
        medium = (utm_medium or "").strip().lower()
        campaign = (utm_campaign or "").strip().lower()
        click = (click_id_type or "").lower()
        referrer = _host(referrer_host)
        if referrer and (self.excludes(referrer) or is_internal(referrer, site, page_host)):
            referrer = ""
        if has_campaign is None:
            has_campaign = bool(source or medium or campaign or click)
        if click in CLICK_IDS:
            source, medium = CLICK_IDS[click]
        elif click in WEAK_CLICK_IDS and not source and not medium:
            source, medium = WEAK_CLICK_IDS[click]
        elif has_campaign:
            source, medium = source or NOT_SET, medium or NOT_SET
        elif not referrer:
            source, medium = DIRECT_SOURCE, NONE_MEDIUM
        else:
            source, medium = self._referral(referrer)
        return Touch(source, medium, campaign, click, referrer, category_of(source))

    @staticmethod
    def _referral(host: str) -> tuple[str, str]:
        bare = _bare(host)
        if _in(bare, WEBMAIL_HOSTS):
            return bare, "email"
        if category_of(host) == SEARCH:
            name = _name(bare)
            return (name if name is not None and name in SOURCE_CATEGORIES[SEARCH] else bare), "organic"
        return bare, "referral"

    def _channel(self, utm_source: str | None, utm_medium: str | None, utm_campaign: str | None,
                 click_id_type: str | None, referrer_host: str | None, site: str | None,
                 page_host: str | None = None, has_campaign: bool | None = None) -> str:
        touch = self.touch(utm_source, utm_medium, utm_campaign, click_id_type, referrer_host, site, page_host,
                           has_campaign)
        for rule in self.rules:
            if rule.matches(touch):
                return rule.channel
        return default_channel(touch) if self.defaults else UNASSIGNED


DEFAULT_GROUPING = ChannelGrouping()
