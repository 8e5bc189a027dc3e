"""`touchstream report` on the hand-built journeys of cli_helpers, against credits worked out by hand.

Touches per conversion (sessions of the device that started at or before it):
    lead A   (T-1d+10m)  A1 Paid Search, A2 Direct, A3 Email      ages 5d+10m, 1d+10m, 10m
    appt A   (T+5m)      A1, A2, A3, A4 Direct                    ages 6d+5m, 2d+5m, 1d+5m, 5m
    lead B   (T-1d+2m)   B1 Organic Social
    lead C   (T-1d+1m)   C1 Direct, C2 Direct                     (every touch Direct)
Position based: 3 touches 0.4/0.2/0.4, 4 touches 0.4/0.1/0.1/0.4, 2 touches 0.5/0.5.
Time decay: weight 2^(-age / 7 days), normalised per conversion.
"""

from __future__ import annotations

import csv
import io
import json
import struct

import pytest

from cli_helpers import cli_env, journeys, run_cli  # noqa: F401  (fixtures)
from touchstream.report import MODELS, attribution_table, channel_summary

MIN = 1 / 1440  # a minute in days


def decay(ages_days: list[float]) -> list[float]:
    weights = [2 ** (-age / 7) for age in ages_days]
    return [w / sum(weights) for w in weights]


LEAD_A = decay([5 + 10 * MIN, 1 + 10 * MIN, 10 * MIN])  # A1, A2, A3
APPT_A = decay([6 + 5 * MIN, 2 + 5 * MIN, 1 + 5 * MIN, 5 * MIN])  # A1..A4

# conversion name -> channel -> model -> credited conversions
EXPECTED = {
    "lead": {
        "Paid Search": {"first_touch": 1, "last_touch": 0, "last_non_direct": 0, "linear": 1 / 3,
                        "position_based": 0.4, "time_decay": LEAD_A[0]},
        "Direct": {"first_touch": 1, "last_touch": 1, "last_non_direct": 1, "linear": 1 / 3 + 1,
                   "position_based": 0.2 + 1, "time_decay": LEAD_A[1] + 1},
        "Email": {"first_touch": 0, "last_touch": 1, "last_non_direct": 1, "linear": 1 / 3,
                  "position_based": 0.4, "time_decay": LEAD_A[2]},
        "Organic Social": dict.fromkeys(MODELS, 1),
    },
    "appointment": {
        "Paid Search": {"first_touch": 1, "last_touch": 0, "last_non_direct": 0, "linear": 0.25,
                        "position_based": 0.4, "time_decay": APPT_A[0]},
        "Direct": {"first_touch": 0, "last_touch": 1, "last_non_direct": 0, "linear": 0.5,
                   "position_based": 0.5, "time_decay": APPT_A[1] + APPT_A[3]},
        "Email": {"first_touch": 0, "last_touch": 0, "last_non_direct": 1, "linear": 0.25,
                  "position_based": 0.1, "time_decay": APPT_A[2]},
    },
}
CAMPAIGN_OF = {"Paid Search": ("google", "spring"), "Direct": ("", ""), "Email": ("newsletter", "march"),
               "Organic Social": ("facebook", "")}


def parse_sections(text: str) -> dict[str, dict[str, list[str]]]:
    """The rendered report -> section title word ("lead", "appointment", "all") -> row label -> cells."""
    sections: dict[str, dict[str, list[str]]] = {}
    for block in text.strip().split("\n\n")[1:]:
        lines = block.split("\n")
        title = lines[0].split()[0]
        header = lines[1].split("  ")
        assert set(lines[2].replace(" ", "")) == {"-"}, block
        rows: dict[str, list[str]] = {}
        for line in lines[3:]:
            if set(line.replace(" ", "")) == {"-"}:
                continue
            cells = [c for c in line.split("  ") if c.strip()]
            rows[cells[0].strip()] = [c.strip() for c in cells[1:]]
        assert header[0] == "channel"
        sections[title] = rows
    return sections


async def test_the_table_shows_the_hand_computed_credits_per_conversion_name_with_totals(journeys):
    out = run_cli("report", env=cli_env(**journeys.env()))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith("Conversions credited by channel under each model (all time; 4 conversions: "
                           "3 lead, 1 appointment)")
    sections = parse_sections(text)
    assert set(sections) == {"lead", "appointment", "all"}
    for name, channels in EXPECTED.items():
        rows = sections[name]
        assert set(rows) == set(channels) | {"total"}
        for channel, credits in channels.items():
            assert rows[channel] == [f"{credits[m]:.2f}" for m in MODELS], (name, channel)
        count = 3 if name == "lead" else 1
        assert rows["total"] == [f"{count:.2f}"] * len(MODELS)
    everything = sections["all"]
    for channel in ("Paid Search", "Direct", "Email", "Organic Social"):
        want = [sum(EXPECTED[n].get(channel, dict.fromkeys(MODELS, 0))[m] for n in EXPECTED) for m in MODELS]
        assert everything[channel] == [f"{v:.2f}" for v in want], channel
    assert everything["total"] == ["4.00"] * len(MODELS)
    assert "Referral" not in text  # D's only event is not a conversion


async def test_the_same_numbers_as_csv_and_json_by_campaign_and_by_module(journeys):
    env = cli_env(**journeys.env())
    out = run_cli("report", "--by", "campaign", "--format", "csv", env=env)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert rows and list(rows[0]) == ["conversion_name", "utm_source", "utm_campaign", *MODELS]
    got = {(r["conversion_name"], r["utm_source"], r["utm_campaign"]): {m: float(r[m]) for m in MODELS} for r in rows}
    want: dict[tuple[str, str, str], dict[str, float]] = {}
    for name, channels in EXPECTED.items():
        for channel, credits in channels.items():
            key = (name, *CAMPAIGN_OF[channel])  # one campaign per channel in this journey
            want[key] = {m: float(credits[m]) for m in MODELS}
    assert set(got) == set(want)
    for key, credits in want.items():
        assert got[key] == pytest.approx(credits, abs=1e-6), key

    out = run_cli("report", "--by", "module", "--model", "linear,last_touch", "--format", "json", env=env)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["by"] == "module" and doc["models"] == ["linear", "last_touch"]
    assert doc["conversions"] == {"lead": {"total": 3, "with_touches": 3},
                                  "appointment": {"total": 1, "with_touches": 1}}
    by_key = {(r["conversion_name"], r["module"], r["channel"], m): r[m] for r in doc["rows"]
              for m in ("linear", "last_touch")}
    want_module = {
        ("lead", "contact_form", "Paid Search"): (1 / 3, 0.0),
        ("lead", "contact_form", "Direct"): (1 / 3, 0.0),
        ("lead", "contact_form", "Email"): (1 / 3, 1.0),
        ("lead", "chat", "Organic Social"): (1.0, 1.0),
        ("lead", "chat", "Direct"): (1.0, 1.0),
        ("appointment", "scheduler", "Paid Search"): (0.25, 0.0),
        ("appointment", "scheduler", "Direct"): (0.5, 1.0),
        ("appointment", "scheduler", "Email"): (0.25, 0.0),
    }
    assert by_key == pytest.approx({(*k, m): v[i] for k, v in want_module.items()
                                    for i, m in enumerate(("linear", "last_touch"))}, abs=1e-6)
    assert doc["totals"] == {"lead": {"linear": 3.0, "last_touch": 3.0},
                             "appointment": {"linear": 1.0, "last_touch": 1.0}}


async def test_since_and_until_select_conversions_by_their_time(journeys):
    env = cli_env(**journeys.env())
    # The leads happened on 2026-03-19, the appointment on 2026-03-20 (UTC).
    after = json.loads(run_cli("report", "--since", "2026-03-20", "--format", "json", env=env).stdout)
    assert after["conversions"] == {"appointment": {"total": 1, "with_touches": 1}}
    assert {r["channel"] for r in after["rows"]} == {"Paid Search", "Direct", "Email"}
    before = json.loads(run_cli("report", "--until", "2026-03-19", "--format", "json", env=env).stdout)
    assert before["conversions"] == {"lead": {"total": 3, "with_touches": 3}}
    # a time with a zone: only lead B (T-1d+2m) and lead A (T-1d+10m) are at or after 12:02; rows
    # with no credit under the chosen models (A's Direct and Email touches) are left out
    window = run_cli("report", "--since", "2026-03-19T12:02:00Z", "--until", "2026-03-19T13:00:00+00:00",
                     "--model", "first_touch", env=env)
    assert window.returncode == 0, window.stderr
    assert "(2026-03-19 12:02 to 2026-03-19 13:00 UTC; 2 conversions: 2 lead)" in window.stdout
    sections = parse_sections(window.stdout)
    assert sections["lead"] == {"Organic Social": ["1.00"], "Paid Search": ["1.00"], "total": ["2.00"]}
    empty = run_cli("report", "--since", "2027-01-01", env=env)
    assert empty.returncode == 0 and "no conversions in this period" in empty.stdout


async def test_chart_writes_a_png(journeys, tmp_path):
    path = tmp_path / "charts" / "credits.png"
    out = run_cli("report", "--chart", str(path), env=cli_env(**journeys.env()))
    assert out.returncode == 0, out.stderr
    assert f"chart written to {path}" in out.stdout
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 300 and height > 200


async def test_bad_arguments_and_a_schema_without_tables_are_clear_errors(journeys, pg_schema):
    env = cli_env(**journeys.env())
    out = run_cli("report", "--model", "u_shaped", env=env)
    assert out.returncode == 2 and "unknown model u_shaped" in out.stderr and "first_touch" in out.stderr
    out = run_cli("report", "--since", "yesterday", env=env)
    assert out.returncode == 2 and "'yesterday' is not a date" in out.stderr
    out = run_cli("report", "--since", "2026-03-20", "--until", "2026-03-19", env=env)
    assert out.returncode == 2 and "--since must be before --until" in out.stderr
    bare = cli_env(TOUCHSTREAM_PG_DSN=pg_schema.dsn, TOUCHSTREAM_PG_SCHEMA="no_such_schema_here")
    out = run_cli("report", env=bare)
    assert out.returncode == 2 and "has no Touchstream tables" in out.stderr and "touchstream migrate" in out.stderr
    out = run_cli("report", env=cli_env(TOUCHSTREAM_PG_DSN="postgresql://nobody@127.0.0.1:1/x",
                                        TOUCHSTREAM_PG_CONNECT_TIMEOUT_S="3"))
    assert out.returncode == 3 and "cannot connect to PostgreSQL at postgresql://nobody@127.0.0.1:1/x" in out.stderr
    out = run_cli("report", env=cli_env(**{**journeys.env(), "TOUCHSTREAM_PG_SCHEMA": "bad-name; drop"}))
    assert out.returncode == 2 and "TOUCHSTREAM_PG_SCHEMA" in out.stderr


async def test_the_functions_the_demo_calls(journeys, db):
    table = await attribution_table(db)
    assert "Organic Social" in table and "total" in table
    assert parse_sections(table)["lead"]["Email"] == [f"{EXPECTED['lead']['Email'][m]:.2f}" for m in MODELS]
    summary = await channel_summary(db)
    lines = {line.split("  ")[0]: line.split() for line in summary.split("\n")[4:] if line and line[0] != "-"}
    # Direct: A2 (1 pv, bounce), A4 (2 pv), C1 (2 pv), C2 (1 pv + an event: no bounce); conversions in
    # Direct sessions: the appointment (A4) and lead C (C2).
    assert lines["Direct"] == ["Direct", "4", "50.0%", "2", "25.0%", "1.50", "2"]
    assert lines["Paid Search"] == ["Paid", "Search", "1", "12.5%", "1", "0.0%", "3.00", "0"]
    assert lines["total"] == ["total", "8", "100.0%", "12.5%", "1.62", "4"]
    assert summary.startswith("Sessions per channel (all time; 8 sessions)")
