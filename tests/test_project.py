"""Project files that must agree with each other."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_environment_yml_installs_extras_that_exist() -> None:
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    line = re.search(r"-e \.\[([^\]]+)\]", (ROOT / "environment.yml").read_text())
    assert line, "environment.yml must install the project with pip -e .[extras]"
    assert set(line.group(1).split(",")) <= extras


def test_makefile_installs_the_same_extras_as_environment_yml() -> None:
    make = re.search(r"^EXTRAS := (.+)$", (ROOT / "Makefile").read_text(), re.M)
    env = re.search(r"-e \.\[([^\]]+)\]", (ROOT / "environment.yml").read_text())
    assert make and env and make.group(1).strip() == env.group(1)


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / "README.md").read_text()
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)
