"""`touchstream attribution` on the hand-built journeys of cli_helpers: the lookback and the URL
conversion rules change what the views count, and the rollups follow in the same transaction."""

from __future__ import annotations

from cli_helpers import cli_env, journeys, run_cli  # noqa: F401  (fixtures)


async def test_set_the_lookback_and_show_it(journeys, db):
    env = cli_env(**journeys.env())
    out = run_cli("attribution", "show", env=env)
    assert out.returncode == 0, out.stderr
    assert "lookback: 90 days" in out.stdout and "lead" in out.stdout and "(none)" in out.stdout
    # A's lead (T-1d+10m) has touches A1 (T-6d), A2, A3; with 5 days, A1 is out
    touches = "SELECT touch_count FROM attribution_credits WHERE conversion_name = 'lead' AND channel = 'Email' LIMIT 1"
    assert await db.fetchval(touches) == 3
    out = run_cli("attribution", "set", "--lookback-days", "5", env=env)
    assert out.returncode == 0, out.stderr
    assert "lookback: 5 days" in out.stdout and "hold 5, 7, 30, 90" in out.stdout
    assert await db.fetchval(touches) == 2
    # the rollups were rebuilt with the new lookback, equal to the view
    assert await db.fetchval("SELECT count(*) FROM rollup_credits WHERE lookback_days = 5") == await db.fetchval(
        "SELECT count(*) FROM attribution_credits WHERE model = 'linear'")
    out = run_cli("attribution", "set", "--lookback-days", "400", env=env)
    assert out.returncode == 2 and "1 to 365" in out.stderr


async def test_rules_add_and_remove(journeys, db):
    env = cli_env(**journeys.env())
    before = await db.fetchval("SELECT count(*) FROM conversions")
    out = run_cli("attribution", "rule", "add", "tour", "%/floorplans%", "--value", "30", "--currency", "EUR",
                  env=env)
    assert out.returncode == 0, out.stderr
    assert "%/floorplans%" in out.stdout and "EUR" in out.stdout
    added = await db.fetchval("SELECT count(*) FROM conversions WHERE conversion_name = 'tour' AND value = 30")
    assert added > 0 and await db.fetchval("SELECT count(*) FROM conversions") == before + added
    assert await db.fetchval("SELECT count(*) FROM rollup_pending_conversions") >= added  # queued for the drain
    out = run_cli("attribution", "rule", "add", "bad", "%x%", "--value", "3", env=env)
    assert out.returncode == 2 and "go together" in out.stderr
    out = run_cli("attribution", "rule", "remove", "tour", "%/floorplans%", env=env)
    assert out.returncode == 0, out.stderr
    assert await db.fetchval("SELECT count(*) FROM conversions") == before
    out = run_cli("attribution", "rule", "remove", "tour", "%/floorplans%", env=env)
    assert out.returncode == 2 and "no rule" in out.stderr
