"""The migration files and the runner's plan (no database)."""

from __future__ import annotations

import re

import pytest

from sink.migrations import Migration, MigrationError, discover
from sink.migrations.runner import Roles, _params, plan, quote_ident


def test_there_are_several_migrations_in_version_order():
    migrations = discover()
    versions = [m.version for m in migrations]
    assert len(migrations) >= 2
    # In order and unique; a number may be left free for a migration another branch brings.
    assert versions == sorted(set(versions)) and versions[0] == 1


def test_files_name_nothing_in_a_fixed_schema():
    for m in discover():
        assert "public." not in m.template.lower(), m.name


def test_every_placeholder_a_file_uses_is_provided():
    params = _params("s", Roles())
    for m in discover():
        rendered = m.render(params)
        assert not re.search(r"\{\{[a-z_]+\}\}", rendered)


def test_placeholders_are_quoted_identifiers_and_literals():
    m = Migration(9, "x", "GRANT USAGE ON SCHEMA {{schema}} TO {{writer_role}}; SELECT {{writer_role_name}};")
    sql = m.render(_params('we"ird', Roles("w'r", "a")))
    assert sql == 'GRANT USAGE ON SCHEMA "we""ird" TO "w\'r"; SELECT \'w\'\'r\';'


def test_an_unknown_placeholder_is_an_error():
    with pytest.raises(MigrationError, match="unknown placeholder"):
        Migration(9, "x", "SELECT {{nope}}").render(_params("s", Roles()))


def test_checksum_is_over_the_template_and_ignores_line_endings():
    a = Migration(1, "a", "CREATE TABLE t (x int);\n")
    assert a.checksum == Migration(1, "a", "CREATE TABLE t (x int);\r\n").checksum
    assert a.checksum != Migration(1, "a", "CREATE TABLE t (y int);\n").checksum


M = [Migration(1, "one", "SELECT 1"), Migration(2, "two", "SELECT 2"), Migration(3, "three", "SELECT 3")]


def test_plan_applies_what_is_missing_up_to_the_target():
    assert plan(M, {}, None) == M
    assert plan(M, {}, 2) == M[:2]
    assert plan(M, {1: ("one", M[0].checksum)}, None) == M[1:]
    assert plan(M, {m.version: (m.name, m.checksum) for m in M}, None) == []


def test_plan_refuses_an_edited_migration():
    with pytest.raises(MigrationError, match="changed after it was applied"):
        plan(M, {1: ("one", "0" * 64)}, None)


def test_plan_refuses_a_database_newer_than_the_build():
    with pytest.raises(MigrationError, match="newer"):
        plan(M, {4: ("four", "x")}, None)


def test_plan_refuses_a_migration_that_sorts_before_an_applied_one():
    with pytest.raises(MigrationError, match="sort before"):
        plan(M, {1: ("one", M[0].checksum), 3: ("three", M[2].checksum)}, None)


def test_quote_ident_doubles_quotes():
    assert quote_ident('a"b') == '"a""b"'
