"""Debian tools the tests use as independent referees (dciodvfy, ojph_expand)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest


def tool(name: str, package: str) -> str:
    """The tool's path; a missing one fails the test with the package to install."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: install the Debian package {package} (make test does)")
    return path


def ojph_expand(codestream: bytes, dtype: np.dtype, shape: tuple[int, ...],
                workdir: Path) -> np.ndarray:
    """Decode with OpenJPH's own command-line decoder.

    Its raw writer clips negative samples to 0 (the codestream is right: OpenJPEG
    decodes it exactly), so callers compare signed frames clipped.
    """
    source, target = workdir / "f.j2c", workdir / "f.raw"
    source.write_bytes(codestream)
    done = subprocess.run([tool("ojph_expand", "openjph-tools"), "-i", str(source), "-o",
                           str(target)], check=False, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    return np.fromfile(target, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
