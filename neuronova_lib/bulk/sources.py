"""Where a bulk run finds its instances: folders, files, lists of files, Orthanc studies.

A source spec is a string, as on the command line:

* a folder — every regular file under it, recursively (names that start
  with ``.`` are left out: temporary and system files);
* a file — that file;
* ``@LIST`` — a text file with one path per line (for lists too long for a
  command line);
* ``orthanc:UID[,UID...]`` — the studies with these Study Instance UIDs, in
  the platform's Orthanc, transcoded in place;
* ``orthanc:all`` — every study in that Orthanc.

Each instance becomes an :class:`Item` with a stable key, so that the
manifest can tell a re-run what is already done. Items are produced lazily:
a folder is walked one directory at a time, Orthanc is listed one study at a
time, so the client never holds a whole archive in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from neuronova_lib.uids import valid_uid

from .orthanc_source import OrthancAccess

ORTHANC_PREFIX = "orthanc:"


class SourceError(ValueError):
    """A source spec that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Item:
    """One instance to transcode.

    Attributes
    ----------
    key : str
        Stable identity in the manifest. A file's key includes its size and
        modification time, so a file replaced by another is processed again;
        an Orthanc instance's key is its Orthanc identifier, which Orthanc
        derives from the UIDs and so survives the in-place replacement.
    kind : {"file", "orthanc"}
        Where the bytes are read from (and whether the original is replaced).
    locator : str
        Absolute path, or Orthanc instance identifier.
    size : int
        Bytes, as listed (used to size batches).
    source : str
        The spec this item came from, for the report.
    """

    key: str
    kind: Literal["file", "orthanc"]
    locator: str
    size: int
    source: str


def file_item(path: Path, source: str, stat: os.stat_result | None = None) -> Item:
    """The item of one file (``path`` absolute); ``stat`` saves a system call when known."""
    st = stat or path.stat()
    return Item(
        key=f"file:{path}|{st.st_size}|{st.st_mtime_ns}",
        kind="file",
        locator=str(path),
        size=int(st.st_size),
        source=source,
    )


def orthanc_item(instance: dict[str, object], source: str) -> Item:
    """The item of one Orthanc instance, from an entry of ``/studies/{id}/instances``."""
    instance_id = str(instance["ID"])
    return Item(
        key=f"orthanc:{instance_id}",
        kind="orthanc",
        locator=instance_id,
        size=int(instance.get("FileSize", 0) or 0),  # type: ignore[call-overload]
        source=source,
    )


@dataclass(frozen=True)
class FolderSource:
    """Every regular file under a folder, walked in sorted order."""

    path: Path
    spec: str
    needs_orthanc = False

    def items(self, orthanc: OrthancAccess | None = None) -> Iterator[Item]:
        for root, dirs, files in os.walk(self.path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith("."):
                    continue
                path = Path(root, name)
                try:
                    st = path.stat()
                except OSError:
                    continue  # vanished or a dangling link: not an instance
                if path.is_file():
                    yield file_item(path, self.spec, st)


@dataclass(frozen=True)
class FilesSource:
    """Files named one by one (an argument, or the lines of an ``@LIST`` file)."""

    paths: tuple[Path, ...]
    spec: str
    needs_orthanc = False

    def items(self, orthanc: OrthancAccess | None = None) -> Iterator[Item]:
        for path in self.paths:
            try:
                yield file_item(path, self.spec)
            except OSError:
                # Listed but unreadable now: keep it, so that the report names it.
                yield Item(f"file:{path}|missing", "file", str(path), 0, self.spec)


@dataclass(frozen=True)
class OrthancSource:
    """Studies in the platform's Orthanc, by Study Instance UID (``None``: every study)."""

    study_uids: tuple[str, ...] | None
    spec: str
    needs_orthanc = True

    def study_ids(self, orthanc: OrthancAccess) -> Iterator[str]:
        """Orthanc identifiers of the studies; :class:`SourceError` for a UID not stored."""
        if self.study_uids is None:
            yield from orthanc.iter_study_ids()
            return
        for uid in self.study_uids:
            study_id = orthanc.find_study(uid)
            if study_id is None:
                raise SourceError(
                    f"study {uid} is not in Orthanc at {orthanc.base_url}; check the UID "
                    "(neuronova lists stored studies at /api/pacs/dicom-web/studies)"
                )
            yield study_id

    def check(self, orthanc: OrthancAccess) -> None:
        """Fail before any work if a named study is missing."""
        for _ in self.study_ids(orthanc):
            pass

    def items(self, orthanc: OrthancAccess | None = None) -> Iterator[Item]:
        if orthanc is None:
            raise SourceError(f"{self.spec}: an Orthanc source needs a connection to Orthanc")
        for study_id in self.study_ids(orthanc):
            for instance in orthanc.study_instances(study_id):
                yield orthanc_item(instance, self.spec)


@dataclass(frozen=True)
class BackupSource:
    """Originals left in the backup folder by a replacement that was interrupted.

    A worker that dies after deleting an Orthanc instance and before storing
    its HTJ2K copy leaves the original only in ``<backup_dir>/<id>.dcm``; the
    study no longer lists that instance, so every run adds these files to its
    work (the worker then finishes the replacement or restores the original).
    """

    path: Path
    spec: str
    needs_orthanc = True

    def items(self, orthanc: OrthancAccess | None = None) -> Iterator[Item]:
        if not self.path.is_dir():
            return
        for backup in sorted(self.path.glob("*.dcm")):
            yield Item(f"orthanc:{backup.stem}", "orthanc", backup.stem,
                       backup.stat().st_size, self.spec)


Source = FolderSource | FilesSource | OrthancSource | BackupSource


def parse_source(spec: str) -> Source:
    """Turn one command-line spec into a source.

    Parameters
    ----------
    spec : str
        A folder, a file, ``@LIST``, ``orthanc:UID[,UID...]`` or ``orthanc:all``.

    Returns
    -------
    FolderSource, FilesSource or OrthancSource

    Raises
    ------
    SourceError
        For a path that does not exist, an empty or malformed ``orthanc:``
        spec, or a list file that cannot be read.
    """
    if spec.startswith(ORTHANC_PREFIX):
        rest = spec[len(ORTHANC_PREFIX):].strip()
        if rest == "all":
            return OrthancSource(None, spec)
        uids = tuple(u.strip() for u in rest.split(",") if u.strip())
        if not uids:
            raise SourceError(
                f"{spec!r}: name the studies, e.g. orthanc:1.2.840.1234 or orthanc:all"
            )
        bad = [u for u in uids if not valid_uid(u)]
        if bad:
            raise SourceError(
                f"{spec!r}: {bad[0]!r} is not a Study Instance UID (PS3.5 9.1: digits and dots, no leading zeros, at most 64)"
            )
        return OrthancSource(uids, spec)
    if spec.startswith("@"):
        listing = Path(spec[1:]).expanduser()
        try:
            lines = listing.read_text().splitlines()
        except OSError as exc:
            raise SourceError(f"{spec!r}: cannot read the list of files: {exc}") from exc
        paths = tuple(
            Path(line.strip()).expanduser().absolute()
            for line in lines
            if line.strip() and not line.lstrip().startswith("#")
        )
        return FilesSource(paths, spec)
    path = Path(spec).expanduser().absolute()
    if path.is_dir():
        return FolderSource(path, spec)
    if path.is_file():
        return FilesSource((path,), spec)
    raise SourceError(
        f"{spec!r} is neither a folder nor a file; give DICOM folders or files, @LIST, "
        "orthanc:StudyInstanceUID or orthanc:all"
    )


def parse_sources(specs: Iterable[str]) -> list[Source]:
    """:func:`parse_source` for each spec; at least one is required."""
    sources = [parse_source(spec) for spec in specs]
    if not sources:
        raise SourceError("give at least one source: a folder, files, @LIST or orthanc:...")
    return sources


def iter_items(sources: Iterable[Source], orthanc: OrthancAccess | None) -> Iterator[Item]:
    """Every item of every source, lazily.

    A key listed twice (a file named in two sources) comes out twice; the
    manifest, keyed by it, makes it one instance. No set of keys is kept
    here, so memory does not grow with the size of the archive.
    """
    for source in sources:
        yield from source.items(orthanc)
