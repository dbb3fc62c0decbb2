"""Refused files, kept content-addressed under ``$NEURONOVA_HOME/quarantine/`` (0700).

Layout: ``quarantine/<sha[:2]>/<sha>.dcm`` (the bytes, 0600) and
``<sha>.json`` (0600), the sidecar::

    {"sha256": ..., "size": ..., "first_seen": ..., "last_seen": ...,
     "reason": <latest>, "message": <latest>,
     "submissions": [{"reason", "message", "sender", "route", "at"}, ...]}

Identical bytes refused twice are stored once; the sidecar lists both
submissions. Times are UTC ISO 8601. :meth:`Quarantine.purge` removes entries
whose last submission is older than the retention
(``NEURONOVA_QUARANTINE_RETENTION_DAYS``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from neuronova_lib.filelock import exclusive_file_lock
from neuronova_lib.security.secret_store import ensure_private_dir, write_private_json

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class QuarantineEntry:
    """One quarantined file: its sidecar and where its bytes are."""

    sha256: str
    size: int
    reason: str
    message: str
    first_seen: datetime
    last_seen: datetime
    submissions: list[dict[str, Any]]
    path: Path

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()


def _now() -> datetime:
    return datetime.now(UTC)


def _check_sha(sha: str) -> str:
    if not isinstance(sha, str) or not _SHA_RE.match(sha):
        raise ValueError(f"not a sha256 hex digest: {sha!r}")
    return sha


class Quarantine:
    """The quarantine store.

    Parameters
    ----------
    settings : Settings, optional
        Gives the directory (``settings.quarantine_dir``) and the retention.
    root : Path, optional
        Another directory (tests).
    """

    def __init__(self, settings: Any = None, *, root: Path | None = None,
                 retention: timedelta | None = None) -> None:
        if settings is None and (root is None or retention is None):
            from neuronova_lib.config import get_settings

            settings = get_settings()
        self.root = Path(root) if root is not None else settings.quarantine_dir
        self.retention = retention or timedelta(days=settings.quarantine_retention_days)

    # ------------------------------------------------------------------ paths and locking
    def _paths(self, sha: str) -> tuple[Path, Path]:
        folder = self.root / sha[:2]
        return folder / f"{sha}.dcm", folder / f"{sha}.json"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        ensure_private_dir(self.root)
        with exclusive_file_lock(self.root / ".lock"):
            yield

    # ------------------------------------------------------------------ API
    def put(self, data: bytes, reason: str | Any, message: str | None = None, *,
            sender: str | None = None, route: str | None = None,
            when: datetime | None = None) -> QuarantineEntry:
        """Keep ``data`` refused for ``reason`` (a code, or a :class:`Verdict`)."""
        if not isinstance(reason, str):  # a Verdict
            message = reason.message if message is None else message
            reason = reason.reason or "unknown"
        message = message or ""
        at = (when or _now()).astimezone(UTC)
        sha = hashlib.sha256(data).hexdigest()
        blob, sidecar = self._paths(sha)
        submission = {"reason": reason, "message": message, "sender": sender, "route": route,
                      "at": at.isoformat()}
        with self._locked():
            ensure_private_dir(blob.parent)
            if not blob.exists():
                fd, tmp = tempfile.mkstemp(dir=blob.parent, prefix=f".{sha}.")
                try:
                    with os.fdopen(fd, "wb") as handle:
                        handle.write(data)
                    os.chmod(tmp, 0o600)
                    os.replace(tmp, blob)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
            meta = self._read_sidecar(sidecar) or {
                "sha256": sha, "size": len(data), "first_seen": at.isoformat(),
                "submissions": [],
            }
            meta["submissions"].append(submission)
            meta["reason"], meta["message"] = reason, message
            meta["last_seen"] = max(
                [at.isoformat()] + [s["at"] for s in meta["submissions"]])
            meta["first_seen"] = min(meta["first_seen"], at.isoformat())
            write_private_json(sidecar, meta)
        return self._entry(meta, blob)

    def get(self, sha: str) -> QuarantineEntry | None:
        blob, sidecar = self._paths(_check_sha(sha))
        meta = self._read_sidecar(sidecar)
        if meta is None or not blob.exists():
            return None
        return self._entry(meta, blob)

    def list(self) -> list[QuarantineEntry]:
        """Every entry, newest submission first."""
        entries = []
        if not self.root.is_dir():
            return entries
        for sidecar in self.root.glob("??/*.json"):
            sha = sidecar.stem
            if _SHA_RE.match(sha):
                entry = self.get(sha)
                if entry is not None:
                    entries.append(entry)
        return sorted(entries, key=lambda e: e.last_seen, reverse=True)

    def delete(self, sha: str) -> bool:
        """Remove one entry; whether it existed."""
        blob, sidecar = self._paths(_check_sha(sha))
        with self._locked():
            existed = blob.exists() or sidecar.exists()
            blob.unlink(missing_ok=True)
            sidecar.unlink(missing_ok=True)
            try:
                blob.parent.rmdir()
            except OSError:
                pass
        return existed

    def purge(self, older_than: timedelta | None = None, *,
              now: datetime | None = None) -> list[str]:
        """Delete entries last submitted before ``now - older_than`` (default: retention)."""
        cutoff = (now or _now()) - (older_than if older_than is not None else self.retention)
        removed = []
        for entry in self.list():
            if entry.last_seen < cutoff and self.delete(entry.sha256):
                removed.append(entry.sha256)
        return removed

    def clear(self) -> None:
        """Remove everything (tests, a deliberate reset)."""
        if self.root.exists():
            shutil.rmtree(self.root)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _read_sidecar(path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None

    @staticmethod
    def _entry(meta: dict[str, Any], blob: Path) -> QuarantineEntry:
        return QuarantineEntry(
            sha256=meta["sha256"], size=meta["size"], reason=meta["reason"],
            message=meta["message"], first_seen=datetime.fromisoformat(meta["first_seen"]),
            last_seen=datetime.fromisoformat(meta["last_seen"]),
            submissions=list(meta["submissions"]), path=blob,
        )
