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


def _make_recipe(target: str) -> str:
    """The recipe lines of one Makefile target."""
    text = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)*)", text, re.M)
    assert match, f"the Makefile has no {target} target"
    return match.group(1)


def test_make_bench_runs_every_benchmark() -> None:
    runnable = {p.name for p in (ROOT / "benchmarks").glob("*.py")
                if 'if __name__ == "__main__"' in p.read_text()}
    run = set(re.findall(r"benchmarks/([A-Za-z0-9_]+\.py)", _make_recipe("bench")))
    assert runnable, "no runnable benchmark found"
    assert runnable <= run, f"make bench leaves out {sorted(runnable - run)}"
    listed = (ROOT / "benchmarks" / "README.md").read_text()
    assert all(f"`{name}`" in listed for name in runnable), "benchmarks/README.md lists each one"


def test_make_test_fast_deselects_e2e() -> None:
    assert '-m "not e2e"' in _make_recipe("test-fast")


def test_no_test_skips_because_something_is_missing() -> None:
    """Missing things are installed by `make test`, or the test fails naming them: never a skip."""
    skip = "skip"  # spelled apart so that this file does not match itself
    pattern = re.compile(rf"pytest\.{skip}\(|importor{skip}\(|mark\.{skip}(if)?\b")
    offenders = [f"{path.name}:{n}: {line.strip()}"
                 for path in sorted((ROOT / "tests").glob("*.py")) if path.name != "test_project.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, "tests that skip:\n" + "\n".join(offenders)


def test_system_deps_install_the_postgresql_server() -> None:
    script = (ROOT / "scripts" / "install-system-deps.sh").read_text()
    packages = re.search(r"^packages=\(([^)]*)\)", script, re.M)
    assert packages and "postgresql" in packages.group(1).split()


def test_every_example_notebook_is_clean_and_listed() -> None:
    """Committed with clean outputs, on the python3 kernel, in both READMEs (the hub e2e
    module runs every one of them; this says which is missing without a stack)."""
    import json

    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert len(notebooks) >= 4
    readme, listing = (ROOT / "README.md").read_text(), (ROOT / "notebooks" / "README.md").read_text()
    for path in notebooks:
        book = json.loads(path.read_text())
        assert book["metadata"]["kernelspec"]["name"] == "python3", path.name
        code = [c for c in book["cells"] if c["cell_type"] == "code"]
        assert code and all(not c["outputs"] and c["execution_count"] is None for c in code), (
            f"{path.name}: commit it with clean outputs")
        assert f"`{path.name}`" in readme and f"`{path.name}`" in listing, path.name
        tagged = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
        assert len(tagged) <= 1 and (not tagged or code.index(tagged[0]) <= 1), (
            f"{path.name}: one parameters cell, at the top")
