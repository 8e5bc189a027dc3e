"""The README agrees with the code: its settings table is the one the settings classes give,
and it names exactly the two set-up commands the Makefile provides."""

from __future__ import annotations

import re

from touchstream.settings_table import REPO, readme_section, render


def test_readme_settings_table_matches_the_code():
    readme = (REPO / "README.md").read_text()
    assert readme_section(readme) == render(), "README settings table is stale: run `python -m touchstream.settings_table --write`"


def test_readme_two_commands_exist_in_the_makefile():
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Two commands", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    makefile = (REPO / "Makefile").read_text()
    for target in ("demo", "test"):
        assert re.search(rf"^{target}:", makefile, re.M), target


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO / ".ci" / "run").read_text()
