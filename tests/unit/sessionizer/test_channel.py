"""GA4's default channel group, case by case from its definition (sessionizer.channel's table):
one case per channel and per clause of its rule, then the order between rules, the source
categories, referral exclusions, and operators' own rules."""

from __future__ import annotations

import pytest

from sessionizer.channel import (
    CATEGORIES,
    CHANNELS,
    DEFAULT_GROUPING,
    SOURCE_CATEGORIES,
    ChannelGrouping,
    category_of,
    is_internal,
)

from .driver import T0, Partition, make_hit

SITE = "www.oakridge-apts.com"


def channel(source: str | None = None, medium: str | None = None, campaign: str | None = None, *,
            click: str | None = None, referrer: str | None = None, grouping: ChannelGrouping = DEFAULT_GROUPING,
            has_campaign: bool | None = None) -> str:
    return grouping.channel(source, medium, campaign, click, referrer, SITE, None, has_campaign)


# (utm_source, utm_medium, utm_campaign, click id, referrer host) -> channel; one row per clause.
TABLE = [
    # Direct: source exactly "(direct)" and medium "(not set)" or "(none)" — what no campaign
    # data and no referrer (or the site's own host) gives
    ("(direct)", "(none)", None, None, None, "Direct"),
    ("(direct)", "(not set)", None, None, None, "Direct"),
    ("(direct)", None, None, None, None, "Direct"),  # medium absent: (not set)
    (None, None, None, None, None, "Direct"),
    (None, None, None, None, "www.oakridge-apts.com", "Direct"),
    (None, None, None, None, "oakridge-apts.com", "Direct"),
    # Cross-network: campaign name contains "cross-network"
    ("google", "cpc", "spring-cross-network", None, None, "Cross-network"),
    ("partner", "email", "Cross-Network leasing", None, None, "Cross-network"),
    # Paid Shopping: (source is a shopping site OR campaign matches shop/shopping) AND paid medium
    ("amazon", "cpc", None, None, None, "Paid Shopping"),
    ("ebay.com", "paid", None, None, None, "Paid Shopping"),
    ("partner", "ppc", "shopping-week", None, None, "Paid Shopping"),
    ("partner", "retargeting", "shop", None, None, "Paid Shopping"),
    ("partner", "cpc", "eshop-sale", None, None, "Paid Shopping"),  # [^a-df-z]: "e" may precede shop
    ("partner", "cpc", "summer shop", None, None, "Paid Shopping"),
    # Paid Search: source is a search site AND medium matches ^(.*cp.*|ppc|retargeting|paid.*)$
    ("google", "cpc", None, None, None, "Paid Search"),
    ("bing", "ppc", None, None, None, "Paid Search"),
    ("baidu", "retargeting", None, None, None, "Paid Search"),
    ("yahoo.com", "paid-search", None, None, None, "Paid Search"),
    ("duckduckgo", "ecpc", None, None, None, "Paid Search"),
    (None, None, None, "gclid", None, "Paid Search"),  # auto-tagging: google / cpc
    (None, None, None, "gbraid", None, "Paid Search"),
    (None, None, None, "wbraid", "www.google.com", "Paid Search"),
    (None, None, None, "msclkid", None, "Paid Search"),  # bing / cpc
    # Paid Social: source is a social site AND paid medium
    ("facebook", "cpc", None, None, None, "Paid Social"),
    ("linkedin.com", "paid_social", None, None, None, "Paid Social"),
    ("ig", "paid", None, None, None, "Paid Social"),
    (None, None, None, "ttclid", None, "Paid Social"),  # tiktok / cpc
    (None, None, None, "li_fat_id", None, "Paid Social"),  # linkedin / cpc
    (None, None, None, "twclid", None, "Paid Social"),  # twitter / cpc
    # Paid Video: source is a video site AND paid medium
    ("youtube", "cpv", None, None, None, "Paid Video"),
    ("vimeo.com", "paid", None, None, None, "Paid Video"),
    # Display: medium is one of display, banner, expandable, interstitial, cpm
    ("dv360", "display", None, None, None, "Display"),
    ("gdn", "banner", None, None, None, "Display"),
    ("network", "expandable", None, None, None, "Display"),
    ("network", "interstitial", None, None, None, "Display"),
    ("network", "cpm", None, None, None, "Display"),
    (None, None, None, "dclid", None, "Display"),  # dv360 / display
    # Paid Other: a paid medium and nothing above
    ("zillow", "cpc", None, None, None, "Paid Other"),
    ("partner", "paid_social", None, None, None, "Paid Other"),  # the medium's word is not a source
    ("partner", "ppc", "workshop-2026", None, None, "Paid Other"),  # "kshop": not shop
    # Organic Shopping: source is a shopping site OR campaign matches shop/shopping
    ("amazon", None, None, None, None, "Organic Shopping"),
    (None, None, None, None, "www.amazon.de", "Organic Shopping"),
    (None, None, None, None, "www.etsy.com", "Organic Shopping"),
    ("partner", "referral", "holiday-shopping", None, None, "Organic Shopping"),
    # Organic Social: source is a social site OR medium is social, social-network, social-media,
    # sm, social network, social media
    (None, None, None, None, "l.facebook.com", "Organic Social"),
    (None, None, None, None, "t.co", "Organic Social"),
    (None, None, None, None, "www.linkedin.com", "Organic Social"),
    (None, None, None, None, "es.pinterest.com", "Organic Social"),  # a parent domain is listed
    ("facebook", "social", None, None, None, "Organic Social"),
    ("partner", "social", None, None, None, "Organic Social"),
    ("partner", "social-network", None, None, None, "Organic Social"),
    ("partner", "social-media", None, None, None, "Organic Social"),
    ("partner", "sm", None, None, None, "Organic Social"),
    ("partner", "social network", None, None, None, "Organic Social"),
    ("partner", "social media", None, None, None, "Organic Social"),
    (None, None, None, "fbclid", None, "Organic Social"),  # fbclid alone: facebook / referral
    # Organic Video: source is a video site OR medium matches ^(.*video.*)$
    (None, None, None, None, "www.youtube.com", "Organic Video"),
    (None, None, None, None, "m.youtube.com", "Organic Video"),
    ("partner", "video-embed", None, None, None, "Organic Video"),
    # Organic Search: source is a search site OR medium is organic
    (None, None, None, None, "www.google.com", "Organic Search"),
    (None, None, None, None, "www.google.co.uk", "Organic Search"),
    (None, None, None, None, "duckduckgo.com", "Organic Search"),
    (None, None, None, None, "search.yahoo.com", "Organic Search"),
    (None, None, None, None, "www.bing.com", "Organic Search"),
    ("google", None, None, None, None, "Organic Search"),
    ("whatever", "organic", None, None, None, "Organic Search"),
    # Referral: medium is referral, app or link (a referrer that is nothing above gives referral)
    (None, None, None, None, "www.apartments.com", "Referral"),
    (None, None, None, None, "docs.google.com", "Referral"),  # not a search engine's own host
    ("apartments.com", "referral", None, None, None, "Referral"),
    ("partner", "app", None, None, None, "Referral"),
    ("partner", "link", None, None, None, "Referral"),
    # Email: source or medium is email, e-mail, e_mail or e mail
    ("newsletter", "email", None, None, None, "Email"),
    ("mailchimp", "e-mail", None, None, None, "Email"),
    ("crm", "e_mail", None, None, None, "Email"),
    ("crm", "e mail", None, None, None, "Email"),
    ("email", None, None, None, None, "Email"),
    ("e-mail", "blast", None, None, None, "Email"),
    (None, None, None, None, "mail.google.com", "Email"),  # webmail (Touchstream's addition)
    (None, None, None, None, "outlook.live.com", "Email"),
    # Affiliates: medium is affiliate
    ("partner", "affiliate", None, None, None, "Affiliates"),
    # Audio: medium is audio
    ("spotify", "audio", None, None, None, "Audio"),
    # SMS: source or medium is sms
    ("sms", None, None, None, None, "SMS"),
    ("twilio", "sms", None, None, None, "SMS"),
    # Mobile Push Notifications: medium ends with "push", or contains "mobile" or
    # "notification", or source is firebase
    ("onesignal", "web-push", None, None, None, "Mobile Push Notifications"),
    ("app", "mobile", None, None, None, "Mobile Push Notifications"),
    ("app", "in-app-notification", None, None, None, "Mobile Push Notifications"),
    ("firebase", None, None, None, None, "Mobile Push Notifications"),
    # Unassigned: none of the above
    ("zillow", None, None, None, None, "Unassigned"),
    ("spring-flyer", "print", None, None, None, "Unassigned"),
    ("crm", "newsletter", None, None, None, "Unassigned"),  # GA4 knows no "newsletter" medium
    (None, None, "flyer", None, None, "Unassigned"),  # campaign only: (not set) / (not set)
]


@pytest.mark.parametrize(("source", "medium", "campaign", "click", "referrer", "expected"), TABLE,
                         ids=[f"{row[-1]}:{'/'.join(str(v) for v in row[:-1])}" for row in TABLE])
def test_channel_table(source, medium, campaign, click, referrer, expected) -> None:
    assert channel(source, medium, campaign, click=click, referrer=referrer) == expected


def test_every_channel_is_covered() -> None:
    assert {row[-1] for row in TABLE} == set(CHANNELS)
    assert len(CHANNELS) == 19


# Where two rules both apply, the earlier one in GA4's order wins.
PRECEDENCE = [
    # (why, source, medium, campaign, click id, expected)
    ("Direct before Cross-network", "(direct)", "(none)", "cross-network", None, "Direct"),
    ("Cross-network before Paid Search", None, None, "pmax cross-network", "gclid", "Cross-network"),
    ("Paid Shopping before Paid Search", "google", "cpc", "shopping", None, "Paid Shopping"),
    ("Paid Search before Display (cpm is a paid medium)", "google", "cpm", None, None, "Paid Search"),
    ("Paid Social before Paid Video", "facebook", "cpv", None, None, "Paid Social"),
    ("Display before Paid Other", "partner", "cpm", None, None, "Display"),
    ("Paid Other before Organic Shopping", "partner", "paid", None, None, "Paid Other"),
    ("Organic Shopping before Organic Social", "facebook", "social", "shop-launch", None, "Organic Shopping"),
    ("Organic Social before Organic Video", "facebook", "video", None, None, "Organic Social"),
    ("Organic Video before Organic Search", "google", "video", None, None, "Organic Video"),
    ("Organic Search before Referral", "google", "referral", None, None, "Organic Search"),
    ("Referral before Email", "email", "referral", None, None, "Referral"),
    ("Email before Affiliates", "email", "affiliate", None, None, "Email"),
    ("Email before SMS", "email", "sms", None, None, "Email"),
    ("SMS before Mobile Push Notifications", "sms", "push", None, None, "SMS"),
    ("an ad click id over utm", "newsletter", "email", None, "gclid", "Paid Search"),
    ("utm over fbclid", "newsletter", "email", None, "fbclid", "Email"),
]


@pytest.mark.parametrize(("why", "source", "medium", "campaign", "click", "expected"), PRECEDENCE,
                         ids=[row[0] for row in PRECEDENCE])
def test_precedence(why, source, medium, campaign, click, expected) -> None:
    assert channel(source, medium, campaign, click=click) == expected


def test_comparisons_ignore_case() -> None:
    assert channel("Google", "CPC") == "Paid Search"
    assert channel("NewsLetter", "EMAIL") == "Email"
    assert channel(referrer="WWW.Google.COM") == "Organic Search"


def test_campaign_data_wins_over_the_referrer() -> None:
    # As in GA4: with utm data on the landing, the referrer is not consulted.
    assert channel("spring-flyer", "print", referrer="www.google.com") == "Unassigned"
    assert channel(referrer="www.google.com", has_campaign=True) == "Unassigned"  # e.g. only utm_term


@pytest.mark.parametrize("referrer", [None, "www.oakridge-apts.com", "www.facebook.com", "www.apartments.com"])
@pytest.mark.parametrize("medium", [None, "email", "referral", "(none)", "organic"])
def test_gclid_is_never_direct(referrer, medium) -> None:
    # umami#3264: paid traffic with a gclid misfiled as Direct.
    assert channel(None, medium, click="gclid", referrer=referrer) == "Paid Search"


def test_own_host_is_internal() -> None:
    assert is_internal("oakridge-apts.com", "www.oakridge-apts.com")
    assert is_internal("www.oakridge-apts.com", "oakridge-apts.com")
    assert is_internal("WWW.Oakridge-Apts.com", "www.oakridge-apts.com")
    assert not is_internal("blog.example.com", "www.oakridge-apts.com")
    # A site named explicitly (not a host): the page's own host still counts.
    assert DEFAULT_GROUPING.channel(None, None, None, None, "www.oakridge-apts.com", "oakridge",
                                    "www.oakridge-apts.com", False) == "Direct"


# -- source categories -----------------------------------------------------------------------


@pytest.mark.parametrize(("source", "category"), [
    ("google", "search"), ("baidu", "search"), ("search.yahoo.com", "search"), ("news.google.com", "search"),
    ("www.google.de", "search"),  # name before the public suffix
    ("www.google.co.uk", "search"),
    ("facebook", "social"), ("fb", "social"), ("l.facebook.com", "social"), ("www.reddit.com", "social"),
    ("de.pinterest.com", "social"),  # parent domain
    ("amazon", "shopping"), ("www.ebay.de", "shopping"), ("Google Shopping".lower(), "shopping"),
    ("youtube", "video"), ("www.youtube.com", "video"), ("player.vimeo.com", "video"),
    ("apartments.com", ""), ("docs.google.com", ""), ("ig.com", ""),  # a short name is not a match
    ("com", ""), ("", ""),
])
def test_source_categories(source, category) -> None:
    assert category_of(source) == category


def test_category_lists_are_data() -> None:
    # GA4 puts each source in one category; the lists hold its several hundred sources.
    assert set(SOURCE_CATEGORIES) == set(CATEGORIES)
    sizes = {c: len(s) for c, s in SOURCE_CATEGORIES.items()}
    assert sizes["social"] > 500 and sizes["search"] > 100 and sizes["shopping"] > 40 and sizes["video"] > 40
    for a in CATEGORIES:
        for b in CATEGORIES:
            if a < b:
                assert not SOURCE_CATEGORIES[a] & SOURCE_CATEGORIES[b], (a, b)
    assert all(s == s.strip().lower() and s for c in SOURCE_CATEGORIES.values() for s in c)


# -- referral exclusions ---------------------------------------------------------------------

EXCLUDING = ChannelGrouping(referral_exclusions=["paypal.com", "Checkout.Stripe.com", "oakridge-leasing.com"])


@pytest.mark.parametrize(("referrer", "without"), [
    ("www.paypal.com", "Referral"), ("paypal.com", "Referral"), ("checkout.paypal.com", "Referral"),
    ("checkout.stripe.com", "Organic Shopping"),  # (GA4 lists it as a shopping site)
    ("www.oakridge-leasing.com", "Referral"),
])
def test_an_excluded_referrer_is_no_referrer(referrer, without) -> None:
    assert channel(referrer=referrer) == without
    assert channel(referrer=referrer, grouping=EXCLUDING) == "Direct"
    assert EXCLUDING.excludes(referrer)


@pytest.mark.parametrize("referrer", ["paypal.com.example.net", "notpaypal.com", "stripe.com", "www.google.com"])
def test_other_referrers_still_count(referrer) -> None:
    assert not EXCLUDING.excludes(referrer)
    assert channel(referrer=referrer, grouping=EXCLUDING) == channel(referrer=referrer)


def test_exclusions_leave_campaign_data_alone() -> None:
    assert channel("google", "cpc", referrer="www.paypal.com", grouping=EXCLUDING) == "Paid Search"
    assert channel(click="gclid", referrer="www.paypal.com", grouping=EXCLUDING) == "Paid Search"


# -- a session's channel comes from its landing hit -------------------------------------------


def test_session_channel_comes_from_its_landing_hit() -> None:
    part = Partition()
    part.hit(make_hit(T0, hid=1, url="https://www.oakridge-apts.com/?gclid=abc"))
    part.hit(make_hit(T0 + 60_000, hid=2, url="https://www.oakridge-apts.com/floorplans",
                      referrer="https://www.oakridge-apts.com/?gclid=abc"))
    part.hit(make_hit(T0 + 2 * 3_600_000, hid=3, url="https://www.oakridge-apts.com/",
                      referrer="https://www.oakridge-apts.com/floorplans"))
    part.hit(make_hit(T0 + 4 * 3_600_000, hid=4, url="https://www.oakridge-apts.com/?utm_campaign=flyer"))
    part.hit(make_hit(T0 + 6 * 3_600_000, hid=5, url="https://www.oakridge-apts.com/?utm_source=google&utm_medium=cpc"
                      "&utm_campaign=pmax-cross-network"))
    part.finish()
    assert [s["channel"] for s in part.sessions()] == ["Paid Search", "Direct", "Unassigned", "Cross-network"]
