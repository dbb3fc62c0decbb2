"""The documentation agrees with the code: a generated configuration page, links that resolve."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from neuronova_lib.cli import main
from neuronova_lib.config import Settings, get_settings
from neuronova_lib.config_markdown import REGENERATE, configuration_markdown

ROOT = Path(__file__).resolve().parent.parent


def test_configuration_page_is_generated_from_the_settings_object() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == configuration_markdown(), (
        f"docs/configuration.md differs from the settings object: run `{REGENERATE}` "
        "from the repository root and commit the result")


def test_configuration_page_names_every_variable() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    missing = [name for name in Settings.model_fields if f"`NEURONOVA_{name.upper()}`" not in page]
    assert not missing, f"not on docs/configuration.md: {missing}; run `{REGENERATE}`"


def test_config_command_prints_the_page(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--markdown"]) == 0
    assert capsys.readouterr().out == configuration_markdown()


def test_config_command_hides_passwords(capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEURONOVA_DEMO_PASSWORD", "hunter2-demo")
    monkeypatch.setenv("NEURONOVA_DATABASE_URL", "postgresql+psycopg://nn:s3cret@db:5432/nn")
    monkeypatch.setenv("NEURONOVA_OPENEMR_CLIENT_SECRET", "emr-s3cret")
    monkeypatch.setenv("NEURONOVA_FHIR_TOKEN", "fhir-t0ken")
    get_settings.cache_clear()
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "hunter2-demo" not in out and "s3cret" not in out
    assert "emr-s3cret" not in out and "fhir-t0ken" not in out
    assert "NEURONOVA_DATABASE_URL=\"postgresql+psycopg://nn:***@db:5432/nn\"" in out


# [text](target) and [label]: target; a target ends at whitespace or ")" (titles are left out).
_INLINE = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
_FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def _doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def relative_links(path: Path) -> list[str]:
    """Every link target in a Markdown file that is not a URL or an in-page anchor."""
    text = _FENCE.sub("", path.read_text())
    targets = _INLINE.findall(text) + _REFERENCE.findall(text)
    return [t for t in targets
            if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I) and not t.startswith("#")]


def test_docs_exist() -> None:
    names = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert {"architecture.md", "security.md", "image-pipeline.md", "operations.md",
            "configuration.md"} <= names


def test_every_relative_link_resolves_inside_the_repository() -> None:
    checked = 0
    problems = []
    for doc in _doc_files():
        for target in relative_links(doc):
            checked += 1
            file_part = unquote(target.split("#", 1)[0])
            resolved = (doc.parent / file_part).resolve()
            where = f"{doc.relative_to(ROOT)} → {target}"
            if not resolved.is_relative_to(ROOT):
                problems.append(f"{where}: points outside the repository")
            elif not resolved.exists():
                problems.append(f"{where}: no such file in the repository")
    assert not problems, "broken links:\n" + "\n".join(problems)
    assert checked >= 5, "the link checker found no links: is its pattern broken?"


def test_link_checker_sees_links_that_leave_the_repository(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("See [x](../shared/ARCHITECTURE.md), [y](https://example.org), [z](#top),\n"
                    "[w]: other.md\n```\n[in code](ignored.md)\n```\n")
    assert relative_links(page) == ["../shared/ARCHITECTURE.md", "other.md"]
