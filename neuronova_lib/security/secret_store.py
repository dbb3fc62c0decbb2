"""Secrets generated on first run into the data dir, readable by the owner only.

Nothing secret lives in code or in the repository: a fresh data dir gets fresh
secrets, and a file that exists is never overwritten, so restarts keep them.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) and refuse one that others can read."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def write_private_json(path: Path, data: Any) -> None:
    """Write atomically with mode 0600: a reader never sees half a file."""
    ensure_private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_or_create_json(path: Path, factory: Callable[[], Any]) -> Any:
    """Return the JSON in ``path``, creating it from ``factory()`` the first time."""
    if not path.exists():
        write_private_json(path, factory())
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(
            f"{path} is readable by others (mode {mode:o}); run `chmod 600 {path}`."
        )
    return json.loads(path.read_text())


def new_password(nbytes: int = 18) -> str:
    """A URL-safe random password (no characters that need quoting in a header)."""
    return secrets.token_urlsafe(nbytes)


def orthanc_service_account(secrets_dir: Path) -> dict[str, str]:
    """The internal account nginx and platform tools use to reach Orthanc."""
    return read_or_create_json(
        secrets_dir / "orthanc-service.json",
        lambda: {"username": "neuronova-service", "password": new_password()},
    )
