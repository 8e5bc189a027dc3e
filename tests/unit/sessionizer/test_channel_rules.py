"""Operators' channel rules (sessionizer.channel_rules): read, validated, applied before GA4's;
and referral exclusions applied by the core (channel and rule 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from sessionizer.channel_rules import ChannelRulesError, grouping, load_rules
from sessionizer.rules import Rules
from sessionizer.settings import SessionizerSettings

from .driver import MIN, T0, Partition, make_hit

SITE = "www.oakridge-apts.com"

RULES = """
[[rule]]
channel = "Paid Social"
click_id = "fbclid"

[[rule]]
channel = "Email"
medium = ["newsletter", "CRM"]

[[rule]]
channel = "Partners"
referrer = {regex = '(.+\\.)?partner-network\\.com'}

[[rule]]
channel = "Listing Sites"
source = {regex = "(www\\\\.)?(zillow|apartments)\\\\.com|zillow"}
medium = ["referral", "(not set)"]

[[rule]]
channel = "Social Ads"
category = "social"
campaign = {regex = ".*retarget.*"}
"""


def write(tmp_path: Path, text: str, name: str = "channels.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def channel(g, source=None, medium=None, campaign=None, click=None, referrer=None) -> str:
    return g.channel(source, medium, campaign, click, referrer, SITE, None, None)


def test_rules_come_before_ga4s(tmp_path: Path) -> None:
    g = grouping(write(tmp_path, RULES))
    assert channel(g, click="fbclid") == "Paid Social"  # GA4: Organic Social
    assert channel(g, "crm", "newsletter") == "Email"  # GA4: Unassigned
    assert channel(g, "crm", "crm") == "Email"  # values compare without case
    assert channel(g, referrer="deals.partner-network.com") == "Partners"  # GA4: Referral
    assert channel(g, referrer="partner-network.com.evil.net") == "Referral"  # a regex matches the whole value
    assert channel(g, referrer="www.zillow.com") == "Listing Sites"  # source zillow.com / referral
    assert channel(g, "zillow") == "Listing Sites"  # zillow / (not set)
    assert channel(g, "zillow", "cpc") == "Paid Other"  # every condition must hold
    assert channel(g, "facebook", "cpc", "Spring-Retarget") == "Social Ads"  # GA4: Paid Social
    assert channel(g, "google", "cpc", "spring-retarget") == "Paid Search"  # not a social source
    # Everything else as GA4 has it.
    assert channel(g, "google", "cpc") == "Paid Search"
    assert channel(g) == "Direct"


def test_without_defaults_the_rest_is_unassigned(tmp_path: Path) -> None:
    g = grouping(write(tmp_path, 'defaults = false\n[[rule]]\nchannel = "Ads"\nmedium = {regex = ".*cp.*"}\n'))
    assert channel(g, "google", "cpc") == "Ads"
    assert channel(g, referrer="www.google.com") == "Unassigned"
    assert channel(g) == "Unassigned"


def test_json_rules(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps({"rule": [{"channel": "Print", "medium": "print"}]}), "channels.json")
    assert channel(grouping(path), "flyer", "print") == "Print"


@pytest.mark.parametrize(("text", "says"), [
    ('[[rule]]\nchannel = "X"\nmedium = {regex = "("}\n', "rule[1].medium.regex: Value error, not a regular expression"),
    ('[[rule]]\nchannel = "X"\n', "rule[1]: Value error, a rule needs at least one condition"),
    ('[[rule]]\nchannel = "X"\nsource = 5\n', 'rule[1].source: must be a string, a list of strings or {regex = "..."}'),
    ('[[rule]]\nchannel = "X"\nmedium = "a"\n[[rule]]\nchannel = "Y"\nsorce = "a"\n', "rule[2].sorce: Extra inputs"),
    ('[[rule]]\nchannel = ""\nmedium = "a"\n', "rule[1].channel: String should have at least 1 character"),
    ('[[rule]]\nchannel = "X"\ncategory = "news"\n', "rule[1].category"),
    ('defaults = "maybe"\n', "defaults: Input should be a valid boolean"),
    ("[[rule]\n", "not valid TOML"),
])
def test_a_bad_file_says_where(tmp_path: Path, text: str, says: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ChannelRulesError) as caught:
        load_rules(path)
    assert str(path) in str(caught.value) and says in str(caught.value)


def test_a_file_of_another_kind_or_none(tmp_path: Path) -> None:
    with pytest.raises(ChannelRulesError, match="must be .toml or .json"):
        load_rules(write(tmp_path, "rule: []", "channels.yaml"))
    with pytest.raises(ChannelRulesError, match="cannot be read"):
        load_rules(tmp_path / "missing.toml")


def test_a_bad_file_fails_the_settings_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHSTREAM_SESSION_CHANNEL_RULES_FILE", str(write(tmp_path, '[[rule]]\nchannel = "X"\n')))
    with pytest.raises(ValidationError) as caught:
        SessionizerSettings()
    text = str(caught.value)
    assert "session_channel_rules_file" in text and "a rule needs at least one condition" in text


def test_settings_give_the_core_its_grouping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHSTREAM_SESSION_CHANNEL_RULES_FILE", str(write(tmp_path, RULES)))
    monkeypatch.setenv("TOUCHSTREAM_SESSION_REFERRAL_EXCLUSIONS", "paypal.com, Stripe.com ,")
    rules = SessionizerSettings().rules()
    assert rules.channels.referral_exclusions == {"paypal.com", "stripe.com"}
    part = Partition(rules=rules)
    part.hit(make_hit(T0, hid=1, url=f"https://{SITE}/?fbclid=x"))
    part.hit(make_hit(T0 + 60 * MIN, hid=2, url=f"https://{SITE}/thanks", referrer="https://www.paypal.com/checkout"))
    part.finish()
    assert [s["channel"] for s in part.sessions()] == ["Paid Social", "Direct"]


# -- referral exclusions and rule 4 (campaign_change) -------------------------------------------

PAYPAL_RETURN = f"https://{SITE}/thanks?utm_source=paypal&utm_medium=referral"


def play(rules: Rules, *, late: bool) -> list[tuple[str, str | None]]:
    """A google/cpc visit that goes to PayPal and comes back with PayPal's utm tags, then a new
    campaign; with `late`, the return hit arrives after the campaign hit (out of order)."""
    hits = [
        make_hit(T0, hid=1, url=f"https://{SITE}/?utm_source=google&utm_medium=cpc"),
        make_hit(T0 + 5 * MIN, hid=2, url=PAYPAL_RETURN, referrer="https://www.paypal.com/checkoutnow"),
        make_hit(T0 + 10 * MIN, hid=3, url=f"https://{SITE}/?utm_source=newsletter&utm_medium=email"),
    ]
    part = Partition(rules=rules)
    for h in ([hits[0], hits[2], hits[1]] if late else hits):
        part.hit(h)
    part.finish()
    return [(s["channel"], s["end_reason"]) for s in part.sessions()]


@pytest.mark.parametrize("late", [False, True], ids=["in order", "out of order"])
def test_an_excluded_referral_does_not_split_by_campaign(late: bool) -> None:
    split = Rules(split_on_campaign=True)
    assert play(split, late=late) == [("Paid Search", "campaign_change"), ("Referral", "campaign_change"),
                                      ("Email", "inactivity")]
    excluding = Rules(split_on_campaign=True, channels=grouping(None, ["paypal.com"]))
    assert play(excluding, late=late) == [("Paid Search", "campaign_change"), ("Email", "inactivity")]
