"""GA4-style default channel grouping."""

from __future__ import annotations

import pytest

from sessionizer.channel import CHANNELS, channel_for, is_internal

from .driver import T0, Partition, make_hit

SITE = "www.oakridge-apts.com"

# (utm_source, utm_medium, click_id_type, referrer_host) -> channel
TABLE = [
    # Paid Search
    (None, None, "gclid", None, "Paid Search"),
    (None, None, "gbraid", None, "Paid Search"),
    (None, None, "wbraid", "www.google.com", "Paid Search"),
    (None, None, "msclkid", None, "Paid Search"),
    ("google", "cpc", None, None, "Paid Search"),
    ("bing", "ppc", None, "www.bing.com", "Paid Search"),
    ("google", "paidsearch", None, None, "Paid Search"),
    ("duckduckgo", "paid", None, None, "Paid Search"),
    ("zillow", "cpc", None, None, "Paid Search"),  # unknown network, paid medium
    # Paid Social
    (None, None, "fbclid", "l.facebook.com", "Paid Social"),
    (None, None, "ttclid", None, "Paid Social"),
    (None, None, "li_fat_id", None, "Paid Social"),
    (None, None, "twclid", None, "Paid Social"),
    ("facebook", "cpc", None, None, "Paid Social"),
    ("facebook", "paid_social", None, None, "Paid Social"),
    ("instagram.com", "paid", None, None, "Paid Social"),
    ("partner", "paid-social", None, None, "Paid Social"),
    # Display
    (None, None, "dclid", None, "Display"),
    ("dv360", "display", None, None, "Display"),
    ("gdn", "banner", None, None, "Display"),
    ("network", "cpm", None, None, "Display"),
    # Organic Search
    (None, None, None, "www.google.com", "Organic Search"),
    (None, None, None, "www.google.co.uk", "Organic Search"),
    (None, None, None, "duckduckgo.com", "Organic Search"),
    (None, None, None, "search.yahoo.com", "Organic Search"),
    (None, None, None, "www.bing.com", "Organic Search"),
    ("google", "organic", None, None, "Organic Search"),
    ("whatever", "organic", None, None, "Organic Search"),
    # Organic Social
    (None, None, None, "l.facebook.com", "Organic Social"),
    (None, None, None, "t.co", "Organic Social"),
    (None, None, None, "www.linkedin.com", "Organic Social"),
    (None, None, None, "www.reddit.com", "Organic Social"),
    ("facebook", "social", None, None, "Organic Social"),
    ("nextdoor", None, None, None, "Organic Social"),
    ("partner", "sm", None, None, "Organic Social"),
    ("partner", "social-network", None, None, "Organic Social"),
    # Email
    ("newsletter", "email", None, None, "Email"),
    ("mailchimp", "e-mail", None, None, "Email"),
    ("crm", "newsletter", None, None, "Email"),
    (None, None, None, "mail.google.com", "Email"),
    (None, None, None, "outlook.live.com", "Email"),
    # Affiliates
    ("partner", "affiliate", None, None, "Affiliates"),
    # Referral
    (None, None, None, "www.apartments.com", "Referral"),
    (None, None, None, "liveatthemill.com", "Referral"),
    ("apartments.com", "referral", None, None, "Referral"),
    # Direct
    (None, None, None, None, "Direct"),
    (None, None, None, "www.oakridge-apts.com", "Direct"),
    (None, None, None, "oakridge-apts.com", "Direct"),
    ("(direct)", "(none)", None, None, "Direct"),
    # Unassigned
    ("zillow", None, None, None, "Unassigned"),
    ("spring-flyer", "print", None, None, "Unassigned"),
]


@pytest.mark.parametrize(("source", "medium", "click", "referrer", "channel"), TABLE,
                         ids=[f"{row[-1]}:{row[0]}/{row[1]}/{row[2]}/{row[3]}" for row in TABLE])
def test_channel_table(source, medium, click, referrer, channel) -> None:
    assert channel_for(source, medium, click, referrer, SITE) == channel


def test_every_channel_is_covered() -> None:
    assert {row[-1] for row in TABLE} == set(CHANNELS)


@pytest.mark.parametrize("referrer", [None, "www.oakridge-apts.com", "www.facebook.com", "www.apartments.com"])
@pytest.mark.parametrize("medium", [None, "email", "referral", "(none)", "organic"])
def test_gclid_is_never_direct(referrer, medium) -> None:
    # umami#3264: paid traffic with a gclid misfiled as Direct.
    assert channel_for(None, medium, "gclid", referrer, SITE) == "Paid Search"


def test_own_host_is_internal() -> None:
    assert is_internal("oakridge-apts.com", "www.oakridge-apts.com")
    assert is_internal("www.oakridge-apts.com", "oakridge-apts.com")
    assert is_internal("WWW.Oakridge-Apts.com", "www.oakridge-apts.com")
    assert not is_internal("blog.example.com", "www.oakridge-apts.com")
    # A site named explicitly (not a host): the page's own host still counts.
    assert channel_for(None, None, None, "www.oakridge-apts.com", "oakridge", "www.oakridge-apts.com") == "Direct"


def test_campaign_data_without_source_or_medium_is_unassigned() -> None:
    assert channel_for(None, None, None, None, SITE, None, True) == "Unassigned"


def test_session_channel_comes_from_its_landing_hit() -> None:
    part = Partition()
    part.hit(make_hit(T0, hid=1, url="https://www.oakridge-apts.com/?gclid=abc"))
    part.hit(make_hit(T0 + 60_000, hid=2, url="https://www.oakridge-apts.com/floorplans",
                      referrer="https://www.oakridge-apts.com/?gclid=abc"))
    part.hit(make_hit(T0 + 2 * 3_600_000, hid=3, url="https://www.oakridge-apts.com/",
                      referrer="https://www.oakridge-apts.com/floorplans"))
    part.hit(make_hit(T0 + 4 * 3_600_000, hid=4, url="https://www.oakridge-apts.com/?utm_campaign=flyer"))
    part.finish()
    assert [s["channel"] for s in part.sessions()] == ["Paid Search", "Direct", "Unassigned"]
