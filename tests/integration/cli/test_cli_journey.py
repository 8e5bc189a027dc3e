"""`touchstream journey GUID` on the hand-built journeys of cli_helpers."""

from __future__ import annotations

import json
import uuid

from cli_helpers import SITE, T, cli_env, journeys, run_cli  # noqa: F401  (fixtures)


def table_rows(text: str, header: str = "#  started") -> list[list[str]]:
    """The rows of the rendered timeline table, cells split on the two-space column gap."""
    lines = text.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    return [[c.strip() for c in line.split("  ") if c.strip()] for line in lines[start + 2:] if line.strip()]


async def test_sessions_in_order_with_conversions_at_their_time_and_the_first_touch(journeys):
    guid = journeys.guids["A"]
    out = run_cli("journey", guid.upper(), env=cli_env(**journeys.env()))  # any case is the same device
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith(f"device {guid}\n")
    assert "  first seen 2026-03-14 12:00:00 UTC, last seen 2026-03-20 12:05:00 UTC, 4 sessions" in text
    assert "  first touch: Paid Search, google / cpc / spring (session 1)" in text
    assert "  4 sessions, 2 conversions, 1 late hit (in late_hits)" in text
    rows = table_rows(text)
    assert [r[0] for r in rows] == ["1", "2", "3", "2026-03-19 12:10:00", "4", "2026-03-20 12:05:00"]
    assert rows[0] == ["1", "2026-03-14 12:00:00", "2026-03-14 12:12:00", "12m00s", "Paid Search",
                       "google / cpc / spring", "/floorplans → /amenities", "3", "1", "inactivity", "closed"]
    assert rows[1][-1] == "closed, bounce" and rows[1][4:6] == ["Direct", "-"]
    assert rows[2][4:7] == ["Email", "newsletter / email / march", "/specials → /contact"]
    assert rows[3] == ["2026-03-19 12:10:00", "* lead", "module contact_form", "in session 3", "conversion"]
    assert rows[4] == ["4", "2026-03-20 12:00:00", "(open)", "5m00s", "Direct", "-", "/ → /schedule", "2", "1",
                       "-", "open"]
    assert rows[5] == ["2026-03-20 12:05:00", "* appointment", "module scheduler", "in session 4", "conversion"]
    assert "chat_open" not in text  # an event, not a conversion


async def test_json_has_the_same_timeline(journeys):
    guid = journeys.guids["C"]
    out = run_cli("journey", guid, "--format", "json", env=cli_env(**journeys.env()))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["guid"] == guid and doc["late_hits"] == 0
    assert doc["device"]["first_channel"] == "Direct" and doc["device"]["sessions"] == 2
    assert doc["device"]["first_session_id"] == journeys.sessions["C1"]
    kinds = [(item["type"], item.get("session_index") if item["type"] == "session" else item["conversion_name"])
             for item in doc["timeline"]]
    assert kinds == [("session", 1), ("session", 2), ("conversion", "lead")]
    first, second, lead = doc["timeline"]
    assert first["session_id"] == journeys.sessions["C1"] and first["started_at"] == "2026-03-17T12:00:00Z"
    assert first["landing_url"] == f"https://{SITE}/" and first["exit_url"] == f"https://{SITE}/floorplans"
    assert (second["pageviews"], second["events"], second["is_bounce"]) == (1, 1, False)
    assert lead["conversion_hit_id"] == journeys.hits["lead_C"]
    assert lead["session_index"] == 2 and lead["module"] == "chat"
    assert lead["converted_at"] == "2026-03-19T12:01:00Z"
    assert lead["properties"] == {"unit": "2b", "beds": 2}


async def test_unknown_and_invalid_guids(journeys):
    env = cli_env(**journeys.env())
    unknown = str(uuid.uuid4())
    out = run_cli("journey", unknown, env=env)
    assert out.returncode == 1
    assert out.stdout == ""
    assert f"no data for device {unknown}" in out.stderr
    out = run_cli("journey", "not-a-guid", env=env)
    assert out.returncode == 2
    assert "'not-a-guid' is not a valid guid: it holds characters a UUID cannot: '-'" not in out.stderr
    assert "'not-a-guid' is not a valid guid: it holds characters a UUID cannot" in out.stderr
    out = run_cli("journey", journeys.guids["A"][:-1], env=env)
    assert out.returncode == 2
    assert "a UUID has 32 hex digits, this has 31" in out.stderr
    out = run_cli("journey", "", env=env)
    assert out.returncode == 2 and "the guid is empty" in out.stderr


async def test_a_device_with_sessions_but_no_conversions(journeys):
    out = run_cli("journey", journeys.guids["D"], env=cli_env(**journeys.env()))
    assert out.returncode == 0, out.stderr
    assert "  first touch: Referral, - (session 1)" in out.stdout
    assert "  1 session, 0 conversions" in out.stdout
    rows = table_rows(out.stdout)
    assert len(rows) == 1 and rows[0][0] == "1" and rows[0][4] == "Referral"
    assert T.strftime("%Y-%m-%d %H:%M:%S") == rows[0][1]


async def test_a_person_by_user_id_every_device_in_one_timeline(journeys):
    c, d = journeys.guids["C"], journeys.guids["D"]
    out = run_cli("journey", "--user-id", "crm-c", env=cli_env(**journeys.env()))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith("person with user id 'crm-c': 2 devices\n")
    assert f"  D1  {c}  " in text and f"  D2  {d}  " in text  # by first seen: C (T-3d), then D (T)
    assert "  3 sessions, 1 conversion" in text
    rows = table_rows(text, header="device")
    assert [r[:2] for r in rows] == [["D1", "1"], ["D1", "2"], ["D1", "2026-03-19 12:01:00"], ["D2", "1"]]
    assert rows[3][5] == "Referral"

    doc = json.loads(run_cli("journey", "--user-id", "crm-c", "--format", "json",
                             env=cli_env(**journeys.env())).stdout)
    assert doc["user_id"] == "crm-c" and [x["guid"] for x in doc["devices"]] == [c, d]
    assert [(i["type"], i["device"], i["guid"]) for i in doc["timeline"]] == [
        ("session", "D1", c), ("session", "D1", c), ("conversion", "D1", c), ("session", "D2", d)]

    # A's person includes its GUID from before a storage clear (no sessions of its own)
    a = run_cli("journey", "--user-id", "crm-a", "--format", "json", env=cli_env(**journeys.env()))
    assert {x["guid"] for x in json.loads(a.stdout)["devices"]} == {journeys.guids["A"], journeys.old_a}


async def test_user_id_arguments_are_checked(journeys):
    env = cli_env(**journeys.env())
    out = run_cli("journey", "--user-id", "nobody", env=env)
    assert out.returncode == 1 and "no data for user id 'nobody'" in out.stderr
    out = run_cli("journey", journeys.guids["A"], "--user-id", "crm-a", env=env)
    assert out.returncode == 2 and "one of them" in out.stderr
    out = run_cli("journey", "--user-id", "x" * 257, env=env)
    assert out.returncode == 2 and "1 to 256 characters" in out.stderr
