"""`touchstream attribution`'s checks of what it is given, before anything reaches the database."""

from __future__ import annotations

from decimal import Decimal

import pytest

from touchstream.attribution import Rule, build_parser, lookback
from touchstream.console import CliError


def test_a_rule_with_value_and_currency():
    rule = Rule.of("purchase", "%/order/thank-you%", "19.99", "EUR", "checkout")
    assert (rule.name, rule.url_pattern, rule.value, rule.currency) == ("purchase", "%/order/thank-you%",
                                                                        Decimal("19.99"), "EUR")
    assert Rule.of("lead", "%/thanks%").value is None


@pytest.mark.parametrize("args, words", [
    (("", "%x%"), "NAME"),
    (("n" * 65, "%x%"), "NAME"),
    (("lead", ""), "PATTERN"),
    (("lead", "%x\\"), "lone"),
    (("lead", "%x%", "10", None), "go together"),
    (("lead", "%x%", None, "EUR"), "go together"),
    (("lead", "%x%", "ten", "EUR"), "not a number"),
    (("lead", "%x%", "NaN", "EUR"), "finite"),
    (("lead", "%x%", "1e13", "EUR"), "at most"),
    (("lead", "%x%", "10", "eur"), "ISO 4217"),
])
def test_bad_rules_say_which_argument(args, words):
    with pytest.raises(CliError) as info:
        Rule.of(*args)
    assert words in info.value.message


def test_the_lookback_is_1_to_365_days():
    assert lookback(30) == 30
    for days in (0, 366):
        with pytest.raises(CliError, match="1 to 365"):
            lookback(days)
    args = build_parser().parse_args(["set", "--lookback-days", "45"])
    assert (args.command, args.lookback_days) == ("set", 45)
    args = build_parser().parse_args(["rule", "add", "lead", "%/thanks%", "--value", "5", "--currency", "EUR"])
    assert (args.action, args.name, args.pattern, args.value) == ("add", "lead", "%/thanks%", "5")
