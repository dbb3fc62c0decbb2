"""The documentation agrees with the code: a generated configuration page, links that resolve."""

from __future__ import annotations

from pathlib import Path

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
    get_settings.cache_clear()
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "hunter2-demo" not in out and "s3cret" not in out
    assert "NEURONOVA_DATABASE_URL=\"postgresql+psycopg://nn:***@db:5432/nn\"" in out
