"""The frame store: WADO-RS frame answers written once, served by nginx with ``sendfile``.

A viewer asks for every frame of a series with
``Accept: multipart/related; type="application/octet-stream"; transfer-syntax=*``:
the answer is the same bytes for every caller. So when Orthanc stores an
instance (every way in: the ingest gate, the bulk pipeline, the demo loader),
the NeuroNova Orthanc plugin writes each frame's whole answer body here, one
file per frame, under the same path as its DICOMweb URI::

    <root>/studies/<study>/series/<series>/instances/<sop>/frames/<n>.<ext>

An HTJ2K frame whose codestream allows it (RPCL, a tile-part per resolution: the
``…4.202`` syntax) is also kept 1 to 5 resolution levels down (as many as it has), cut
from the codestream (:func:`neuronova_lib.wado.reduced_frame`), as ``<n>.r<k>.<ext>``:
what nginx answers for ``…/frames/<n>?reduce=<k>`` (a viewer's first image in a fraction
of the bytes); for any other frame nginx answers the whole frame.

``ext`` names the transfer syntax (:func:`extension`); nginx maps it to the
answer's ``Content-Type`` (with its fixed :data:`BOUNDARY` and the
``transfer-syntax`` label OHIF decodes by), so nginx serves the file without
asking anything but the cached authorization decision. A series' metadata is
kept beside it (``metadata.dcmjson``), written by nginx itself from Orthanc's
answer (``proxy_store``) and dropped whenever the series changes.

It is a cache, never the only copy: a missing file falls back to Orthanc (and
is written again), ``neuronova frames rebuild`` rewrites it from Orthanc,
``neuronova frames verify`` compares it (sizes, SHA-256) with Orthanc, and an
instance deleted from Orthanc is dropped (the plugin's change callback).

Light to import (no pydicom, no numpy): Orthanc's Python plugin loads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..uids import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    NATIVE_LITTLE_ENDIAN,
    valid_uid,
)
from ..wado import FRAME_MEDIA_TYPES, OCTET_STREAM, STORED_REDUCE_LEVELS, reduced_frame

#: The multipart boundary of every stored body. Fixed, because nginx sends the
#: ``Content-Type`` from its configuration; a frame whose bytes contain it is not
#: stored (it is served from Orthanc with a random boundary instead).
BOUNDARY = "neuronova-frame-5f0c2a9e7d3b41c8a6e2b9d04f7a1c36"
METADATA_NAME = "metadata.dcmjson"
#: In each instance's folder: the Orthanc identifier of the copy its frames came from.
OWNER_NAME = "orthanc-id"
METADATA_TYPE = "application/dicom+json"
#: Stored syntaxes whose frames are sent as stored for ``transfer-syntax=*``.
STORABLE_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203",
    EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
    *sorted(s for s in FRAME_MEDIA_TYPES if not s.startswith("1.2.840.10008.1.2.4.20")),
)
#: Each label a stored body carries (implicit VR is labelled explicit, PS3.18 §8.7.3).
LABELS: tuple[str, ...] = tuple(dict.fromkeys(
    EXPLICIT_VR_LITTLE_ENDIAN if s == IMPLICIT_VR_LITTLE_ENDIAN else s for s in STORABLE_SYNTAXES))


def label(stored: str) -> str:
    """The ``transfer-syntax`` a frame stored in ``stored`` is answered with."""
    return EXPLICIT_VR_LITTLE_ENDIAN if stored in NATIVE_LITTLE_ENDIAN else stored


def extension(syntax_label: str) -> str:
    """The file name extension for a label (nginx takes the text after the last dot)."""
    return "ts" + syntax_label.replace(".", "_")


def content_type(syntax_label: str) -> str:
    """The answer's ``Content-Type`` for one stored frame (nginx's ``types`` has each)."""
    return (f'multipart/related; type="{OCTET_STREAM}"; transfer-syntax={syntax_label}; '
            f"boundary={BOUNDARY}")


def frame_body(frame: bytes, syntax_label: str) -> bytes | None:
    """One frame's whole answer body, as :func:`neuronova_lib.wado.multipart_body` frames it.

    ``None`` when the frame's bytes contain the fixed boundary.
    """
    if BOUNDARY.encode() in frame:
        return None
    head = (f"--{BOUNDARY}\r\nContent-Type: {OCTET_STREAM}; transfer-syntax={syntax_label}\r\n"
            f"Content-Length: {len(frame)}\r\n\r\n").encode()
    return head + frame + f"\r\n--{BOUNDARY}--\r\n".encode()


def frame_of(body: bytes) -> bytes:
    """The frame inside a stored body (for :meth:`FrameStore.verify`)."""
    head, _, rest = body.partition(b"\r\n\r\n")
    length = int(head.rsplit(b"Content-Length: ", 1)[1])
    return rest[:length]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _compare(path: Path, frame: bytes) -> str | None:
    """What is wrong with the stored answer at ``path`` for ``frame`` (None: nothing)."""
    try:
        stored = frame_of(path.read_bytes())
    except FileNotFoundError:
        return "missing"
    if len(stored) != len(frame) or _digest(stored) != _digest(frame):
        return f"differs from Orthanc ({len(stored)} bytes, Orthanc {len(frame)})"
    return None


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` so that nginx never sends a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class InstanceFrames:
    """What Orthanc holds for one instance, as the store needs it."""

    orthanc_id: str
    study: str
    series: str
    sop: str
    syntax: str
    frames: int


#: Reads one Orthanc REST URI (``/instances/{id}/frames/0/raw``) and returns its bytes.
OrthancGet = Callable[[str], bytes]


def describe(get: OrthancGet, orthanc_id: str) -> InstanceFrames:
    """An instance's UIDs, stored syntax and frame count, from Orthanc's REST API.

    Orthanc's own ``TransferSyntax`` metadata is empty for HTJ2K: the file header is read.
    """
    tags = json.loads(get(f"/instances/{orthanc_id}/tags?simplify"))
    header = json.loads(get(f"/instances/{orthanc_id}/header?simplify"))
    image = "Rows" in tags and "Columns" in tags
    return InstanceFrames(
        orthanc_id, str(tags.get("StudyInstanceUID", "")), str(tags.get("SeriesInstanceUID", "")),
        str(tags.get("SOPInstanceUID", "")),
        str(header.get("TransferSyntaxUID", EXPLICIT_VR_LITTLE_ENDIAN)),
        int(tags.get("NumberOfFrames") or 1) if image else 0,
    )


class FrameStore:
    """The frame store under one folder (``Settings.frames_dir``)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # -- where ---------------------------------------------------------------------------

    def series_dir(self, study: str, series: str) -> Path:
        for uid in (study, series):
            if not valid_uid(uid):
                raise ValueError(f"{uid[:80]!r} is not a DICOM UID")
        return self.root / "studies" / study / "series" / series

    def instance_dir(self, study: str, series: str, sop: str) -> Path:
        if not valid_uid(sop):
            raise ValueError(f"{sop[:80]!r} is not a DICOM UID")
        return self.series_dir(study, series) / "instances" / sop

    def frame_path(self, study: str, series: str, sop: str, number: int, syntax_label: str,
                   reduce: int = 0) -> Path:
        """One frame's answer body; ``reduce`` levels down when ``reduce`` (``?reduce=``)."""
        name = f"{number}.r{reduce}" if reduce else f"{number}"
        return self.instance_dir(study, series, sop) / "frames" / f"{name}.{extension(syntax_label)}"

    def metadata_path(self, study: str, series: str) -> Path:
        return self.series_dir(study, series) / METADATA_NAME

    def _index(self, orthanc_id: str) -> Path:
        if not orthanc_id or not all(c in "0123456789abcdef-" for c in orthanc_id):
            raise ValueError(f"{orthanc_id[:80]!r} is not an Orthanc identifier")
        return self.root / "by-id" / orthanc_id

    # -- writing ---------------------------------------------------------------------------

    def storable(self, info: InstanceFrames) -> bool:
        return info.frames > 0 and info.syntax in STORABLE_SYNTAXES

    def write_frame(self, info: InstanceFrames, number: int, frame: bytes) -> Path | None:
        """Store one frame's answer body, and its reduced ones where its codestream allows;
        ``None`` if it cannot be stored (boundary in it)."""
        tag = label(info.syntax)
        body = frame_body(frame, tag)
        if body is None:
            return None
        for levels, cut in self.reduced(info.syntax, frame):
            reduced = frame_body(cut, tag)
            if reduced is not None:
                _atomic_write(self.frame_path(info.study, info.series, info.sop, number, tag,
                                              levels), reduced)
        path = self.frame_path(info.study, info.series, info.sop, number, tag)
        _atomic_write(path, body)
        return path

    @staticmethod
    def reduced(syntax: str, frame: bytes) -> list[tuple[int, bytes]]:
        """``(levels, codestream)`` for each reduced answer kept for ``frame``."""
        out = []
        for levels in STORED_REDUCE_LEVELS:
            cut = reduced_frame(frame, syntax, levels)
            if cut is None:
                break
            out.append((levels, cut))
        return out

    def write_instance(self, get: OrthancGet, info: InstanceFrames) -> int:
        """Store every frame of an instance read from Orthanc; how many were stored.

        The series' metadata is dropped (it no longer lists every instance).
        """
        self.drop_metadata(info.study, info.series)
        if not self.storable(info):
            return 0
        self.claim(info)
        written = 0
        for number in range(1, info.frames + 1):
            frame = get(f"/instances/{info.orthanc_id}/frames/{number - 1}/raw")
            written += self.write_frame(info, number, frame) is not None
        return written

    def claim(self, info: InstanceFrames) -> None:
        """Make the instance's folder this Orthanc copy's, before frames are written to it.

        Another copy's frames there (the instance transcoded: deleted and stored again)
        are removed; the folder records its Orthanc id and the id's index points to it,
        so that deleting this copy in Orthanc drops it (:meth:`drop`).
        """
        folder = self.instance_dir(info.study, info.series, info.sop)
        owner = folder / OWNER_NAME
        try:
            current = owner.read_text()
        except FileNotFoundError:
            current = None
        if current == info.orthanc_id:
            return
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        _atomic_write(owner, info.orthanc_id.encode())
        _atomic_write(self._index(info.orthanc_id), str(folder.relative_to(self.root)).encode())

    def add(self, get: OrthancGet, orthanc_id: str) -> int:
        """The plugin's and ``rebuild``'s step for one stored instance."""
        return self.write_instance(get, describe(get, orthanc_id))

    # -- dropping --------------------------------------------------------------------------

    def drop_metadata(self, study: str, series: str) -> None:
        self.metadata_path(study, series).unlink(missing_ok=True)

    def drop(self, orthanc_id: str) -> bool:
        """Forget an instance Orthanc deleted (known only by its Orthanc id by then)."""
        index = self._index(orthanc_id)
        try:
            relative = index.read_text()
        except FileNotFoundError:
            return False
        folder = (self.root / relative).resolve()
        if self.root.resolve() not in folder.parents:
            raise ValueError(f"index {index} points outside the frame store")
        owner = folder / OWNER_NAME
        if owner.exists() and owner.read_text() == orthanc_id:  # not a newer copy's frames
            shutil.rmtree(folder, ignore_errors=True)
        (folder.parent.parent / METADATA_NAME).unlink(missing_ok=True)
        index.unlink(missing_ok=True)
        return True

    def clear(self) -> None:
        """Drop everything (``rebuild`` starts from nothing)."""
        for name in ("studies", "by-id"):
            shutil.rmtree(self.root / name, ignore_errors=True)

    # -- checking --------------------------------------------------------------------------

    def indexed(self) -> list[str]:
        folder = self.root / "by-id"
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def verify(self, get: OrthancGet, orthanc_ids: Iterable[str]) -> dict[str, Any]:
        """Compare the store with Orthanc: every frame's size and SHA-256, and stray entries.

        Returns counts and a list of problems (empty when the store matches Orthanc).
        """
        problems: list[str] = []
        checked = frames = 0
        known = set()
        for oid in orthanc_ids:
            known.add(oid)
            info = describe(get, oid)
            if not self.storable(info):
                continue
            checked += 1
            tag = label(info.syntax)
            for number in range(1, info.frames + 1):
                path = self.frame_path(info.study, info.series, info.sop, number, tag)
                if not path.exists():
                    problems.append(f"missing: {path.relative_to(self.root)}")
                    continue
                frames += 1
                frame = get(f"/instances/{oid}/frames/{number - 1}/raw")
                expected = [(path, frame)] + [
                    (self.frame_path(info.study, info.series, info.sop, number, tag, levels), cut)
                    for levels, cut in self.reduced(info.syntax, frame)]
                for where, data in expected:
                    problem = _compare(where, data)
                    if problem:
                        problems.append(f"{problem}: {where.relative_to(self.root)}")
        for oid in self.indexed():
            if oid not in known:
                problems.append(f"stray: instance {oid} is no longer in Orthanc")
        return {"instances": checked, "frames": frames, "problems": problems}
