"""The dashboard's pure parts: parameter parsing, the login's hash and cookie, SVG charts, CSV cells."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl
from datetime import date, datetime, timezone

import pytest

from dashboard.api import csv_cell, to_csv
from dashboard.auth import Gate, hash_password, verify_hash
from dashboard.charts import Bar, grouped, nice_top, stacked
from dashboard.params import BadParameters, Filters, SessionsQuery, TimeseriesQuery, today
from dashboard.queries import Table
from dashboard.settings import DashboardSettings


def test_a_query_string_round_trips():
    q = SessionsQuery.parse([("period", "custom"), ("from", "2026-03-01"), ("to", "2026-03-09"),
                             ("events", "lead"), ("events", "appointment"), ("channel", "Paid Search"), ("page", "2")])
    assert q.events == ["lead", "appointment"] and q.first_day == date(2026, 3, 1)
    assert SessionsQuery.parse(parse_qsl(q.query_string())) == q
    assert SessionsQuery.parse(parse_qsl(q.query_string(page=3))).page == 3


def test_presets_end_today_and_dates_alone_mean_custom():
    q = Filters.parse({"period": "7d"})
    assert q.last_day == today() and (q.last_day - q.first_day).days == 6 and len(q.days()) == 7
    assert Filters.parse({"from": "2026-01-01", "to": "2026-01-02"}).period == "custom"


@pytest.mark.parametrize("query,parameter", [
    ({"from": "2026-01-05", "to": "2026-01-01"}, "from"), ({"period": "7d", "from": "2026-01-01"}, "from"),
    ({"period": "custom", "to": "2026-01-01"}, "from"), ({"lookback": "0"}, "lookback"),
    ({"metric": "bounces"}, "metric"), ({"nonsense": "1"}, "nonsense"),
])
def test_problems_name_their_parameter(query, parameter):
    with pytest.raises(BadParameters) as info:
        TimeseriesQuery.parse(query)
    assert parameter in [p for p, _ in info.value.problems]


def test_password_hashes_verify_and_refuse():
    encoded = hash_password("correct horse")
    assert encoded.startswith("scrypt$") and verify_hash("correct horse", encoded)
    assert not verify_hash("wrong", encoded) and not verify_hash("x", "not-a-hash")


def test_cookies_are_signed_and_expire():
    gate = Gate(DashboardSettings(dashboard_password="pw", dashboard_session_hours=1), b"k" * 32)
    cookie = gate.issue(now=1000.0)
    assert gate.valid(cookie, now=1001.0) and not gate.valid(cookie, now=1000.0 + 3601)
    assert not gate.valid(cookie[:-1] + ("A" if cookie[-1] != "A" else "B"), now=1001.0)
    assert not Gate(gate.settings, b"other" * 8).valid(cookie, now=1001.0)
    header = gate.cookie_header(cookie)
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Secure" not in header
    assert gate.check_password("pw") and not gate.check_password("")


def test_charts_carry_their_data_and_escape_labels():
    bars = [Bar("2026-03-01", "Direct", 3), Bar("2026-03-01", "Email", 1.5), Bar("2026-03-02", "<b>", 2)]
    svg = str(stacked("c", "T", "Y", ["2026-03-01", "2026-03-02"], ["Direct", "Email", "<b>"], bars))
    found = re.findall(r'data-x="([^"]+)" data-series="([^"]+)" data-value="([^"]+)"', svg)
    assert found == [("2026-03-01", "Direct", "3"), ("2026-03-01", "Email", "1.5"), ("2026-03-02", "&lt;b&gt;", "2")]
    assert "<b>" not in svg and 'role="img"' in svg
    assert grouped("g", "T", "Y", ["a"], ["m1", "m2"], [Bar("a", "m1", 0.0)]).count("<rect") == 0


def test_axis_tops_are_round():
    assert nice_top(0) == (1.0, 0.25)
    top, step = nice_top(1234)
    assert top >= 1234 and top / step <= 5 and str(step)[0] in "125"


def test_csv_cells_read_back_exactly():
    assert csv_cell(0.1 + 0.2) == "0.30000000000000004" and float(csv_cell(1 / 3)) == 1 / 3
    assert csv_cell(None) == "" and csv_cell(True) == "true"
    assert csv_cell(datetime(2026, 3, 1, tzinfo=timezone.utc)) == "2026-03-01T00:00:00+00:00"
    assert to_csv(Table(["a", "b"], [{"a": 1, "b": "x,y"}])) == 'a,b\n1,"x,y"\n'


def test_attribution_values_are_one_column_per_currency_never_summed():
    from decimal import Decimal

    from dashboard.params import AttributionQuery
    from dashboard.queries import Scope, attribution_table

    q = AttributionQuery.parse({"model": "linear", "by": "person"})
    s = Scope(date(2026, 3, 1), date(2026, 3, 9), None, ["lead"], "linear", 30, 30)
    credit = {m: Decimal("0.5") for m in ("first_touch", "last_touch", "last_non_direct", "linear", "position_based",
                                          "time_decay")}
    rows = [{"channel": "Paid Search", **credit}, {"channel": "Direct", **credit}]
    values = [{"grp": "Paid Search", "currency": "USD", "value": Decimal("40")},
              {"grp": "Paid Search", "currency": "EUR", "value": Decimal("50.5")}]
    t = attribution_table(s, q, rows, values, 3, 2)
    assert t.columns[-2:] == ["value_EUR", "value_USD"]
    assert t.rows[0]["value_EUR"] == 50.5 and t.rows[0]["value_USD"] == 40.0 and t.rows[0]["linear"] == 0.5
    assert t.rows[1]["value_EUR"] is None and t.rows[1]["value_USD"] is None  # no valued conversion
    assert (t.meta["currencies"], t.meta["by"], t.meta["lookback"], t.meta["conversions"]) == (["EUR", "USD"],
                                                                                             "person", 30, 3)
    assert "value_EUR" in to_csv(t).splitlines()[0]
    with pytest.raises(BadParameters) as info:
        AttributionQuery.parse({"by": "household"})
    assert info.value.problems[0][0] == "by"
    assert AttributionQuery.parse({}).lookback is None  # absent: the configured one, resolved against the data
