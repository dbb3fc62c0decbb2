"""An on-disk cache of frames and series metadata, written atomically.

Layout under the cache folder::

    frames/<SOPInstanceUID>/<frame number>_<transfer syntax UID>.bin   (bytes as served)
    metadata/<StudyInstanceUID>/<SeriesInstanceUID>.json               (WADO-RS metadata)

Frames are kept as the server sent them (an HTJ2K frame stays small) and
decoded on every load; the transfer syntax is part of the key, so a frame
re-served in another syntax is another entry. A SOP Instance UID names
immutable pixels (DICOM gives changed pixels a new UID), so frames never go
stale; metadata is only read back when asked for (``offline=True``).

Every file is written to a temporary name in its folder and renamed into
place, so a reader never sees a half-written file and concurrent loads of
the same series are safe. Only UIDs (digits and dots) become path parts.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from ..uids import valid_uid

logger = logging.getLogger(__name__)



def _uid(value: str, what: str) -> str:
    if not valid_uid(value):
        raise ValueError(f"{what} {str(value)[:80]!r} is not a DICOM UID; it cannot key the cache")
    return value


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class FrameCache:
    """Frames and metadata under one folder (see the module docstring for the layout).

    Parameters
    ----------
    root : str or Path
        Created if missing.

    Attributes
    ----------
    hits, misses, writes : int
        Frame look-ups answered from disk, not found, and frames written.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FrameCache({str(self.root)!r})"

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    # -- frames --------------------------------------------------------------
    def _instance_dir(self, sop_uid: str) -> Path:
        return self.root / "frames" / _uid(sop_uid, "SOPInstanceUID")

    def get_frame(self, sop_uid: str, frame: int) -> tuple[str, bytes] | None:
        """``(transfer syntax, bytes)`` of a cached frame, or ``None``."""
        folder = self._instance_dir(sop_uid)
        prefix = f"{int(frame)}_"
        try:
            names = [n for n in os.listdir(folder) if n.startswith(prefix) and n.endswith(".bin")]
        except FileNotFoundError:
            names = []
        for name in sorted(names):
            syntax = name[len(prefix):-len(".bin")]
            if not valid_uid(syntax):
                continue
            try:
                data = (folder / name).read_bytes()
            except FileNotFoundError:  # removed meanwhile
                continue
            self._count("hits")
            return syntax, data
        self._count("misses")
        return None

    def put_frame(self, sop_uid: str, frame: int, transfer_syntax: str,
                  data: bytes | memoryview) -> None:
        """Store one frame as served."""
        syntax = _uid(transfer_syntax, "transfer syntax")
        _atomic_write(self._instance_dir(sop_uid) / f"{int(frame)}_{syntax}.bin", bytes(data))
        self._count("writes")

    def discard_frame(self, sop_uid: str, frame: int, transfer_syntax: str) -> None:
        """Forget one frame (it failed to decode)."""
        path = self._instance_dir(sop_uid) / f"{int(frame)}_{_uid(transfer_syntax, 'transfer syntax')}.bin"
        path.unlink(missing_ok=True)

    # -- metadata -------------------------------------------------------------
    def _metadata_path(self, study_uid: str, series_uid: str) -> Path:
        return (self.root / "metadata" / _uid(study_uid, "StudyInstanceUID")
                / f"{_uid(series_uid, 'SeriesInstanceUID')}.json")

    def get_metadata(self, study_uid: str, series_uid: str) -> list[dict[str, Any]] | None:
        path = self._metadata_path(study_uid, series_uid)
        try:
            return list(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except ValueError:
            logger.warning("ignoring unreadable cached metadata %s", path)
            return None

    def put_metadata(self, study_uid: str, series_uid: str, instances: list[dict[str, Any]]) -> None:
        path = self._metadata_path(study_uid, series_uid)
        _atomic_write(path, json.dumps(instances).encode("utf-8"))
