"""A blocking, cross-process exclusive lock on a file beside the data it guards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive_file_lock(lock_path: Path) -> Iterator[None]:
    """Hold ``flock(LOCK_EX)`` on ``lock_path`` (created 0600) for the block.

    Where fcntl does not exist (Windows) there are no concurrent local starts
    to guard, and the block runs unlocked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        yield
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
