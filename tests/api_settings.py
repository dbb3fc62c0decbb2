"""Settings for an API under test, read from the environment as a service reads them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from neuronova_lib.config import Settings, get_settings
from neuronova_lib.db.engine import get_engine


@contextmanager
def service_settings(home: Path, monkeypatch: pytest.MonkeyPatch, demo_password: str,
                     **env: str) -> Iterator[Settings]:
    """A fresh data dir ``home`` and nothing else from the caller's NEURONOVA_* variables
    (plus ``env``, named without the prefix); the settings cache and engine are let go
    afterwards so that the next test starts clean."""
    for name in list(os.environ):
        if name.startswith("NEURONOVA_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NEURONOVA_HOME", str(home))
    monkeypatch.setenv("NEURONOVA_DEMO_PASSWORD", demo_password)
    for name, value in env.items():
        monkeypatch.setenv(f"NEURONOVA_{name}", value)
    get_settings.cache_clear()
    current = get_settings()
    try:
        yield current
    finally:
        get_settings.cache_clear()
        get_engine(current.sqlalchemy_url).dispose()
