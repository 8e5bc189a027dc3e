"""`touchstream dashboard`: the analysts' web app and its JSON API, read-only, over the rollups
of migration 0005 (docs/SPEC.md section 7; README "Dashboard")."""
