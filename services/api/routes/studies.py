"""Uploading studies (admins): DICOM files or zips of them, transcoded to HTJ2K in the background.

``POST /api/studies`` saves the files under ``$NEURONOVA_HOME/uploads/<job id>/``
(copied in chunks, never whole in memory), expands zips there, adds a job and
answers ``202 Accepted`` at once; the job runner (:mod:`services.api.jobs`)
hands the folder to the bulk transcoder, which passes each file through the
ingest gate, then transcodes, verifies and stores it in Orthanc; files the
gate refuses (or whose SOP Instance UID Orthanc holds as a different
instance) are failures of the job, kept in the quarantine (route ``upload``,
the admin as sender). ``GET /api/jobs/{id}`` says how it went.

Zips are expanded with care: a member with an absolute path, a ``..`` part, a
symbolic link or encryption refuses the whole upload (400); more files or more
bytes (expanded) than ``NEURONOVA_UPLOAD_MAX_FILES`` / ``NEURONOVA_UPLOAD_MAX_BYTES``
refuses it too (413), checked against the zip's directory before anything is
written and again while writing. A zip inside a zip is stored as a file, not
expanded (the gate refuses it as ``not_dicom`` and it is quarantined).
"""

from __future__ import annotations

import re
import uuid
import zipfile
from pathlib import Path, PurePosixPath
from typing import Annotated, BinaryIO

from fastapi import APIRouter, File, HTTPException, Request, Response, UploadFile, status
from pydantic import BaseModel

from neuronova_lib.config import Settings
from neuronova_lib.db.models import Job

from ..auditing import write_audit
from ..deps import AdminUser, SessionDep, SettingsDep
from ..jobs import QUEUED, JobRunner, discard_upload, job_dir, work_dir

router = APIRouter(prefix="/studies", tags=["studies"])

CHUNK = 1024 * 1024
_ZIP_MAGIC = b"PK\x03\x04"
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_S_IFMT, _S_IFLNK = 0o170000, 0o120000


class UploadAccepted(BaseModel):
    job_id: str
    state: str
    status_url: str
    files: int
    bytes: int


class UploadRefused(Exception):
    """The upload cannot be taken; ``status`` and ``detail`` go to the client."""

    def __init__(self, status_code: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status_code, self.reason, self.detail = status_code, reason, detail


class _Budget:
    """Files and bytes left to an upload under the configured limits."""

    def __init__(self, settings: Settings) -> None:
        self.max_files, self.max_bytes = settings.upload_max_files, settings.upload_max_bytes
        self.files = 0
        self.bytes = 0

    def add_file(self, what: str) -> None:
        self.files += 1
        if self.files > self.max_files:
            raise UploadRefused(
                413, "upload_max_files",
                f"too many files: {what} goes over upload_max_files = {self.max_files} "
                "(NEURONOVA_UPLOAD_MAX_FILES); split the upload",
            )

    def check_bytes(self, extra: int, what: str) -> None:
        if self.bytes + extra > self.max_bytes:
            raise UploadRefused(
                413, "upload_max_bytes",
                f"too large: {what} takes the upload over upload_max_bytes = {self.max_bytes} "
                "bytes once zips are expanded (NEURONOVA_UPLOAD_MAX_BYTES); split the upload",
            )


def _safe_name(name: str, fallback: str) -> str:
    """A file name without folders or odd characters (never empty, never hidden)."""
    base = re.split(r"[\\/]", name or "")[-1]
    clean = _UNSAFE_CHARS.sub("_", base).lstrip(".")[:120]
    return clean or fallback


def _copy(source: BinaryIO, target: Path, budget: _Budget, what: str) -> int:
    """Copy ``source`` to ``target`` in chunks, counting bytes against the budget."""
    written = 0
    with open(target, "xb") as out:
        while chunk := source.read(CHUNK):
            budget.check_bytes(len(chunk), what)
            budget.bytes += len(chunk)
            written += len(chunk)
            out.write(chunk)
    return written


def _member_path(info: zipfile.ZipInfo, zip_name: str) -> PurePosixPath:
    """The relative path of a zip member, or :class:`UploadRefused` when it is unsafe."""
    name = info.filename

    def refuse(why: str) -> UploadRefused:
        return UploadRefused(status.HTTP_400_BAD_REQUEST, "unsafe_zip",
                             f"{zip_name}: member {name!r} {why}; nothing was stored")

    if "\x00" in name:
        raise refuse("has a NUL character in its name")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise refuse("has an absolute path")
    parts = [p for p in re.split(r"[\\/]", name) if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise refuse("has a '..' part (path traversal)")
    if (info.external_attr >> 16) & _S_IFMT == _S_IFLNK:
        raise refuse("is a symbolic link")
    if info.flag_bits & 0x1:
        raise refuse("is encrypted")
    if not parts:
        raise refuse("has an empty name")
    return PurePosixPath(*parts)


def _expand_zip(archive: Path, dest: Path, zip_name: str, budget: _Budget) -> None:
    """Check every member of ``archive``, then write the files under ``dest``."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadRefused(status.HTTP_400_BAD_REQUEST, "bad_zip",
                            f"{zip_name} is not a readable zip ({exc})") from None
    with zf:
        members: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
        declared = 0
        for info in zf.infolist():
            path = _member_path(info, zip_name)
            if info.is_dir():
                continue
            budget.add_file(f"{zip_name}: {info.filename!r}")
            declared += info.file_size
            budget.check_bytes(declared, f"{zip_name} (declared {declared} bytes expanded)")
            members.append((info, path))
        root = dest.resolve()
        for info, path in members:
            target = (dest / path).resolve()
            if root not in target.parents:  # belt and braces after the checks above
                raise UploadRefused(status.HTTP_400_BAD_REQUEST, "unsafe_zip",
                                    f"{zip_name}: member {info.filename!r} leaves the upload "
                                    "folder; nothing was stored")
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():  # two members with one name (e.g. 'a/b' and 'a\\b')
                target = target.with_name(f"{uuid.uuid4().hex[:8]}-{target.name}")
            try:
                with zf.open(info) as member:
                    _copy(member, target, budget, f"{zip_name}: {info.filename!r}")
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError,
                    NotImplementedError) as exc:
                raise UploadRefused(status.HTTP_400_BAD_REQUEST, "bad_zip",
                                    f"{zip_name}: member {info.filename!r} cannot be read "
                                    f"({exc})") from None


def _is_zip(upload: UploadFile) -> bool:
    name = (upload.filename or "").lower()
    if name.endswith(".zip") or upload.content_type in ("application/zip",
                                                         "application/x-zip-compressed"):
        return True
    head = upload.file.read(4)
    upload.file.seek(0)
    return head == _ZIP_MAGIC


def save_upload(settings: Settings, job_id: str, files: list[UploadFile]) -> _Budget:
    """Write the files of an upload under its job folder; zips expanded."""
    folder = job_dir(settings, job_id)
    work = work_dir(settings, job_id)
    work.mkdir(parents=True, mode=0o700)
    budget = _Budget(settings)
    for index, upload in enumerate(files, start=1):
        label = upload.filename or f"file {index}"
        name = _safe_name(upload.filename or "", f"upload-{index}")
        if _is_zip(upload):
            archive = work / f"incoming-{index}.zip"
            # The zip itself is held to the byte limit too (its expansion is counted apart).
            raw = _Budget(settings)
            _copy(upload.file, archive, raw, label)
            dest = folder / f"{index:03d}-{Path(name).stem or 'zip'}"
            dest.mkdir()
            _expand_zip(archive, dest, label, budget)
            archive.unlink()
        else:
            budget.add_file(label)
            _copy(upload.file, folder / f"{index:03d}-{name}", budget, label)
    if budget.files == 0:
        raise UploadRefused(status.HTTP_400_BAD_REQUEST, "empty_upload",
                            "the upload holds no files (only empty zips or folders)")
    return budget


@router.post(
    "",
    response_model=UploadAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        400: {"description": "An unsafe or unreadable zip, or no files"},
        403: {"description": "Not an admin"},
        413: {"description": "Over upload_max_files or upload_max_bytes"},
    },
)
def upload_studies(
    request: Request,
    response: Response,
    files: Annotated[list[UploadFile], File(description="DICOM Part 10 files and/or .zip "
                                                        "files of them")],
    db: SessionDep,
    settings: SettingsDep,
    admin: AdminUser,
) -> UploadAccepted:
    """Upload DICOM files or zips of them (admins only); they are transcoded in the background.

    Answers ``202 Accepted`` with the job id and ``Location: /api/jobs/<id>``;
    poll that until ``state`` is ``done`` (counts and failures with reasons)
    or ``failed`` (the run itself failed; ``error`` says why).
    """
    job_id = uuid.uuid4().hex
    try:
        budget = save_upload(settings, job_id, files)
    except UploadRefused as refused:
        discard_upload(settings, job_id)
        write_audit(db, request, decision="deny", status=refused.status_code,
                    reason=refused.reason, username=admin.username, role=admin.role,
                    detail=refused.detail)
        db.commit()
        raise HTTPException(refused.status_code, detail=refused.detail) from None
    except BaseException:
        discard_upload(settings, job_id)
        raise
    finally:
        for upload in files:
            upload.file.close()
    job = Job(id=job_id, kind="upload", state=QUEUED, created_by=admin.username,
              file_count=budget.files, bytes=budget.bytes)
    db.add(job)
    write_audit(db, request, decision="allow", status=202, reason="upload_accepted",
                username=admin.username, role=admin.role,
                detail=f"job {job_id}: {budget.files} files, {budget.bytes} bytes")
    db.commit()
    runner: JobRunner = request.app.state.jobs
    runner.submit(job_id)
    status_url = f"/api/jobs/{job_id}"
    response.headers["Location"] = status_url
    return UploadAccepted(job_id=job_id, state=QUEUED, status_url=status_url,
                          files=budget.files, bytes=budget.bytes)
