"""What runs on a Dask worker: read, transcode (verified), store, re-read; replace in place.

A task is a batch of :class:`~neuronova_lib.bulk.sources.Item`. The worker
reads each instance itself (a file, or Orthanc's copy), so no image bytes go
through the client or the scheduler, and returns one small result per
instance (:class:`~neuronova_lib.bulk.results.InstanceResult` as a dict).
A failure of one instance is reported and the batch goes on; the task
itself only fails if its worker does, and then the client submits the batch
again — which is safe, because every step below is idempotent.

Each task registers the HTJ2K codec with pydicom in its worker process
(:func:`neuronova_lib.htj2k.register`, an explicit call; it is cheap once done).

**Files** (``kind == "file"``): read → the ingest gate
(:class:`neuronova_lib.ingest.Gate`: the bytes are checked in a sandboxed,
resource-limited process before any parser here sees them) → transcode →
the ingest core's store step (:class:`neuronova_lib.ingest.store.IngestCore`,
the one STOW-RS uses: UID checks under a lock, ``POST /instances``, the same
retries while Orthanc is down) → re-read ``/instances/{id}/file`` → ``done``
only if the stored bytes are the bytes sent. A file the gate refuses is ``failed`` with
the gate's reason (``nesting_too_deep``, ``pixel_length_mismatch``, …) and
kept in the quarantine (``WorkerConfig.quarantine_dir``; route and sender
from the config), its sha256 in the result. The exception is ``not_dicom``
(no ``DICM`` prefix) from a folder: a README beside a series is ``skipped``
and left where it is; from an upload (``route == "upload"``) it is
refused and quarantined too, so that what was sent stays on record.

Each Dask worker process starts one gate with one checker (parallelism comes
from the Dask workers), built from the limits carried in
:class:`WorkerConfig`, so workers need none of the caller's settings. The
checker is a program of its own (``python -m neuronova_lib.ingest.checker``,
see :mod:`neuronova_lib.ingest.sandbox`), started with :mod:`subprocess`, so
it runs in any Dask worker as it comes: daemonic (Dask's default, and what
``dask worker``, dask-gateway, dask-kubernetes and dask-jobqueue start) or
not. It stays warm across files and tasks, is started again after a crash or a
timeout, and ends with its worker process.

A SOP Instance UID is unique in the archive (:mod:`neuronova_lib.ingest.uniqueness`).
When Orthanc already holds the UID, :func:`neuronova_lib.ingest.same_instance`
decides: the same instance (equal attributes and decoded pixels, in any
transfer syntax, e.g. an HTJ2K copy stored earlier) is ``done`` and the stored
file kept; a different one — under any patient, study or series — is
``failed`` (``sop_instance_conflict``), the file sent is quarantined and the
stored one is left untouched. A series or study UID stored under another
owner is ``series_instance_conflict`` / ``study_instance_conflict``.

**Orthanc instances** (``kind == "orthanc"``), replaced in place. They do not
go through the gate: they are already stored (Orthanc accepted them, however
they got there), and the bytes stored in their place are derived from the
parsed dataset by the verified transcoder. With
``OverwriteInstances`` off, Orthanc 1.10 cannot hold two files with one SOP
Instance UID, so "store the new one, then remove the original" cannot be done
in that order. The order used instead, and where the original is at each step:

1. fetch the original from Orthanc; transcode and verify it; decode the new
   bytes once more and compare every pixel with the original's
   (Orthanc: original);
2. write the original to ``<backup_dir>/<instance id>.dcm`` (fsync, read back
   and compared) — nothing is deleted unless this worked;
3. ``DELETE /instances/{id}`` (original: backup file and memory);
4. ``POST`` the HTJ2K file, re-read it, require byte equality;
5. on success remove the backup; on any failure in 3-4 delete what was
   stored, ``POST`` the original back and re-read it; the backup is removed
   only when the original is back byte for byte, otherwise it stays and the
   report names it.

If the worker dies between 3 and 5, the backup file is the original: the
retry (or the next run) finds it, compares it with what Orthanc now holds,
and finishes or restores. The backup folder must therefore be one that
every worker can write and the retry can read — on one machine the data
dir, on a cluster a shared file system.

What is not kept across the replacement: Orthanc's own metadata of the
instance (reception date, remote AET, attachments other than the DICOM file).
The DICOM content and UIDs, and so Orthanc's identifiers, are unchanged.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import requests
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from neuronova_lib import htj2k
from neuronova_lib.htj2k import HTJ2K_LOSSLESS, HTJ2K_SYNTAXES
from neuronova_lib.config import default
from neuronova_lib.ingest import Gate, GateConfig, Quarantine, Verdict
from neuronova_lib.ingest.store import IngestCore
from neuronova_lib.ingest.uniqueness import UidLocks, lock_folder
from neuronova_lib.reasons import SKIP_REASONS, Reason
from neuronova_lib.transcode import TranscodeError, transcode_to_htj2k

from .orthanc_source import OrthancAccess
from .results import InstanceResult, State
from .sources import Item

logger = logging.getLogger(__name__)

#: Routes a file can come by (recorded with each quarantined file).
ROUTES = ("upload", "transcode", "demo")

_local = threading.local()


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs to do a batch; sent with every task.

    Attributes
    ----------
    orthanc_url : str
        Orthanc's REST root as the *workers* reach it.
    username, password : str
        The platform's Orthanc service account. The password is left out of
        ``repr`` so that it appears in no log or dashboard.
    backup_dir : str
        Where originals of Orthanc instances wait while they are replaced
        (see the module docstring); every worker must reach the same folder.
    syntax : str
        Target transfer syntax (HTJ2K lossless by default).
    timeout : float
        Seconds for each Orthanc request.
    gate : GateConfig
        The ingest gate's limits and budgets (``NEURONOVA_INGEST_*``; one
        checker per worker process).
    orthanc_wait : float
        How long the store step keeps trying while Orthanc is down
        (``NEURONOVA_INGEST_ORTHANC_WAIT``).
    uid_lock_dir : str or None
        The UID locks shared with every other writer to this Orthanc
        (``Settings.uid_lock_dir``; see :mod:`neuronova_lib.ingest.uniqueness`);
        ``None``: ``<backup_dir>/.uid-locks``.
    quarantine_dir : str or None
        Where refused files are kept (every worker must reach it, like
        ``backup_dir``); ``None``: refused files are reported, not kept.
    quarantine_retention_days : float
        Recorded with the quarantine (its purge uses it).
    route : str
        How the files came: ``upload``, ``transcode`` or ``demo``.
    sender : str or None
        Who sent them (the admin for uploads, the OS user for the CLI).
    """

    orthanc_url: str
    username: str
    password: str = field(repr=False)
    backup_dir: str
    syntax: str = HTJ2K_LOSSLESS
    timeout: float = 120.0
    gate: GateConfig = field(default_factory=lambda: GateConfig(workers=1))
    orthanc_wait: float = default("ingest_orthanc_wait")
    uid_lock_dir: str | None = None
    quarantine_dir: str | None = None
    quarantine_retention_days: float = default("quarantine_retention_days")
    route: str = "transcode"
    sender: str | None = None

    def __post_init__(self) -> None:
        if self.route not in ROUTES:
            raise ValueError(f"route must be one of {ROUTES}, not {self.route!r}")

    @classmethod
    def for_settings(cls, settings: Any, *, orthanc_url: str, username: str, password: str,
                     backup_dir: str, route: str = "transcode", sender: str | None = None,
                     **kwargs: Any) -> "WorkerConfig":
        """A config with the gate, the UID locks and the quarantine of ``settings``."""
        return cls(
            orthanc_url=orthanc_url, username=username, password=password,
            backup_dir=backup_dir, gate=GateConfig.from_settings(settings, workers=1),
            orthanc_wait=float(settings.ingest_orthanc_wait),
            uid_lock_dir=str(settings.uid_lock_dir),
            quarantine_dir=str(settings.quarantine_dir),
            quarantine_retention_days=float(settings.quarantine_retention_days),
            route=route, sender=sender, **kwargs,
        )


# ---------------------------------------------------------------- the gate, one per process

class GateUnavailable(RuntimeError):
    """This process cannot run the ingest gate (its checker program does not start)."""


_gate_lock = threading.Lock()
_gate: tuple[GateConfig, Gate] | None = None


def gate_for(config: WorkerConfig) -> Gate:
    """This process's gate for ``config``'s limits, created on first use (its checker
    starts with the first file)."""
    global _gate
    key = config.gate
    with _gate_lock:
        if _gate is not None and _gate[0] == key:
            return _gate[1]
        if _gate is not None:  # other limits: a new gate, the old one stopped
            _gate[1].close()
        gate = Gate.from_config(key)  # one checker (for_settings): Dask workers give parallelism
        _gate = (key, gate)
        return gate


def close_gate() -> None:
    """Stop this process's gate and its checker (at exit; tests)."""
    global _gate
    with _gate_lock:
        if _gate is not None:
            _gate[1].close()
            _gate = None


atexit.register(close_gate)


def _check(config: WorkerConfig, data: bytes) -> Verdict:
    try:
        return gate_for(config).check(data)
    except (RuntimeError, OSError) as exc:  # the checker program did not start
        raise GateUnavailable(f"the ingest gate's checker did not start ({exc}); see the "
                              "worker's log") from exc


def _quarantine_of(config: WorkerConfig) -> Quarantine | None:
    if not config.quarantine_dir:
        return None
    return Quarantine(root=Path(config.quarantine_dir),
                      retention=timedelta(days=config.quarantine_retention_days))


def _quarantine(config: WorkerConfig, data: bytes, reason: str, message: str) -> str | None:
    """Keep refused bytes; their sha256, or ``None`` when no quarantine is configured."""
    store = _quarantine_of(config)
    if store is None:
        return None
    return store.put(data, reason, message, sender=config.sender, route=config.route).sha256


def _core(config: WorkerConfig, orthanc: OrthancAccess) -> IngestCore:
    """The ingest core STOW-RS uses, with this worker's Orthanc session."""
    return IngestCore(store_factory=lambda: orthanc,
                      locks=UidLocks(lock_folder(config.uid_lock_dir, config.backup_dir)),
                      wait=config.orthanc_wait, quarantine=_quarantine_of(config))


class _Stop(Exception):
    """Ends one instance early with its result."""

    def __init__(self, result: InstanceResult) -> None:
        super().__init__(result.message)
        self.result = result


def process_batch(items: Sequence[Item], config: WorkerConfig) -> list[dict[str, Any]]:
    """Transcode and store a batch of instances; the Dask task.

    Parameters
    ----------
    items : sequence of Item
        The batch, files and Orthanc instances alike.
    config : WorkerConfig

    Returns
    -------
    list of dict
        One :meth:`InstanceResult.as_dict` per item, in order. An instance
        that fails is a ``failed`` result, never an exception: only a dead
        worker fails the task.
    """
    htj2k.register()  # pydicom decodes HTJ2K (re-reads, same-instance checks) with it
    orthanc = _orthanc(config)
    return [process_item(item, config, orthanc).as_dict() for item in items]


def process_item(item: Item, config: WorkerConfig, orthanc: OrthancAccess) -> InstanceResult:
    """One instance, start to end (see the module docstring for the steps)."""
    started = time.perf_counter()
    try:
        if item.kind == "file":
            result = _file_instance(item, config, orthanc)
        elif item.kind == "orthanc":
            result = _orthanc_instance(item, config, orthanc)
        else:
            raise ValueError(f"unknown item kind {item.kind!r}")
    except _Stop as stop:
        result = stop.result
    except Exception as exc:  # one instance must not sink its batch; the report names it
        logger.exception("unexpected error on %s", item.key)
        result = InstanceResult(
            item.key, State.FAILED, Reason.ERROR, f"{type(exc).__name__}: {exc}"
        )
    result.seconds = time.perf_counter() - started
    result.worker = f"{socket.gethostname()}:{os.getpid()}"
    return result


# ---------------------------------------------------------------- files


def _file_instance(item: Item, config: WorkerConfig, orthanc: OrthancAccess) -> InstanceResult:
    path = Path(item.locator)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return InstanceResult(
            item.key, State.FAILED, Reason.READ_FAILED,
            f"cannot read {path}: {exc.strerror or exc}; workers read files themselves, so on "
            "a remote cluster the path must exist on every worker (a shared file system)",
        )
    try:
        verdict = _check(config, data)
    except GateUnavailable as exc:
        return InstanceResult(item.key, State.FAILED, Reason.GATE_UNAVAILABLE, str(exc),
                              bytes_in=len(data))
    if not verdict.accepted:
        reason = verdict.reason or "refused"
        if reason == Reason.NOT_DICOM and config.route != "upload":
            return InstanceResult(
                item.key, State.SKIPPED, Reason.NOT_DICOM,
                "not a DICOM Part 10 file (no 'DICM' prefix after the 128-byte preamble); "
                "left alone", bytes_in=len(data),
            )
        return _refused(item.key, config, data, reason, verdict.message,
                        sop_instance_uid=verdict.sop_instance_uid)
    ds = _parse(item.key, data)
    new = _transcode(item.key, ds, data, config.syntax)
    base: dict[str, Any] = {"key": item.key, "bytes_in": len(data), "sop_instance_uid": _sop(ds)}
    # The store step is the ingest core's (UID checks under a lock, Orthanc-down policy,
    # quarantine), the same as STOW-RS; a refused file is quarantined as it was sent.
    outcome = _core(config, orthanc).put(new, verdict, sender=config.sender, route=config.route,
                                         original=data, verify=True)
    if outcome.stored:
        held = outcome.held if outcome.held is not None else new
        message = None
        if outcome.duplicate:
            advice = "" if _is_htj2k_of(held, ds) else (
                "; convert it in place with `neuronova transcode "
                f"orthanc:{ds.get('StudyInstanceUID', '<StudyInstanceUID>')}`")
            message = (f"Orthanc already held this instance (same attributes and pixels, "
                       f"{_syntax_of(held)}); kept it{advice}")
        return InstanceResult(state=State.DONE, bytes_out=len(held), sha256=_sha(held),
                              orthanc_id=outcome.orthanc_id, message=message, **base)
    message = outcome.message
    if outcome.quarantined:
        message = f"{message}; quarantined as {outcome.sha256}"
    elif outcome.reason in (Reason.ORTHANC_UNAVAILABLE, Reason.REREAD_MISMATCH):
        message = f"{message}; a re-run retries it"
    return InstanceResult(state=State.FAILED, reason=str(outcome.reason), message=message,
                          orthanc_id=outcome.orthanc_id,
                          quarantine_sha256=outcome.sha256 if outcome.quarantined else None,
                          **base)


def _refused(key: str, config: WorkerConfig, data: bytes, reason: str, message: str,
             **extra: Any) -> InstanceResult:
    """A refused file: ``failed``, kept in the quarantine (its sha256 in the result)."""
    try:
        sha = _quarantine(config, data, str(reason), message)
    except OSError as exc:
        logger.exception("cannot quarantine %s", key)
        sha = None
        message = f"{message} (NOT quarantined: {exc})"
    else:
        if sha is not None:
            message = f"{message}; quarantined as {sha}"
    return InstanceResult(key, State.FAILED, str(reason), message, bytes_in=len(data),
                          quarantine_sha256=sha, **extra)


# ---------------------------------------------------------------- Orthanc, in place


def _orthanc_instance(item: Item, config: WorkerConfig, orthanc: OrthancAccess) -> InstanceResult:
    iid = item.locator
    backup = Path(config.backup_dir) / f"{iid}.dcm"
    try:
        current = orthanc.instance_file(iid)
    except requests.RequestException as exc:
        return InstanceResult(item.key, State.FAILED, Reason.READ_FAILED,
                              f"cannot fetch instance {iid} from Orthanc: {exc}", orthanc_id=iid)
    held = backup.read_bytes() if backup.exists() else None
    if held is None and current is None:
        return InstanceResult(
            item.key, State.FAILED, Reason.ORTHANC_INSTANCE_MISSING,
            f"instance {iid} is no longer in Orthanc (deleted since it was listed) and no "
            f"backup of it exists in {config.backup_dir}; nothing to do", orthanc_id=iid,
        )
    if held is not None and current is not None and current != held:
        # An earlier attempt died after deleting the original: what Orthanc holds now
        # must be the HTJ2K copy of the backup, or someone else changed the instance.
        if _is_htj2k_of(current, _parse(item.key, held)):
            backup.unlink()
            return InstanceResult(
                item.key, State.DONE, bytes_in=len(held), bytes_out=len(current),
                sha256=_sha(current), orthanc_id=iid,
                message="finished an interrupted replacement (HTJ2K copy was stored)",
            )
        return InstanceResult(
            item.key, State.FAILED, Reason.BACKUP_CONFLICT,
            f"Orthanc holds a different file for {iid} than the backup {backup} left by an "
            "interrupted run; compare the two, keep the right one, then delete the backup",
            bytes_in=len(held), orthanc_id=iid, backup=str(backup),
        )
    original = held if held is not None else current
    assert original is not None
    try:
        ds = _parse(item.key, original)
        new = _transcode(item.key, ds, original, config.syntax)
        _require_same_pixels(item.key, new, ds, len(original))
    except _Stop as stop:
        stop.result.orthanc_id = iid
        if current is None:  # only the backup holds the original: put it back first
            stop.result.backup = _restore(orthanc, iid, original, backup)
        raise
    base: dict[str, Any] = {"key": item.key, "bytes_in": len(original),
                            "sop_instance_uid": _sop(ds), "orthanc_id": iid}
    if held is None:
        try:
            _write_backup(item.key, backup, original)
        except _Stop as stop:
            stop.result.orthanc_id, stop.result.bytes_in = iid, len(original)
            raise
    if current is not None:
        try:
            orthanc.delete_instance(iid)
        except requests.RequestException as exc:
            kept = _restore(orthanc, iid, original, backup)
            return InstanceResult(
                state=State.FAILED, reason=Reason.STORE_FAILED, backup=kept,
                message=f"Orthanc refused to delete the original: {exc}; nothing replaced",
                **base,
            )
    # From here until the end the original exists only in `backup` (and in memory).
    try:
        answer = orthanc.store(new)
        stored = orthanc.instance_file(str(answer["ID"]))
        if str(answer["ID"]) != iid or stored != new:
            raise _Mismatch(f"re-read of {answer['ID']} differs from the file sent")
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, the original goes back
        kept = _restore(orthanc, iid, original, backup)
        where = (f"the original is kept in {kept}: restore it with POST /instances"
                 if kept else "the original was stored again, unchanged")
        reason = (Reason.REREAD_MISMATCH if isinstance(exc, _Mismatch)
                  else Reason.STORE_FAILED)
        return InstanceResult(
            state=State.FAILED, reason=reason, backup=kept,
            message=f"storing the HTJ2K copy failed ({exc}); {where}", **base,
        )
    backup.unlink(missing_ok=True)
    return InstanceResult(state=State.DONE, bytes_out=len(new), sha256=_sha(new), **base)


class _Mismatch(Exception):
    pass


def _write_backup(key: str, backup: Path, original: bytes) -> None:
    """Write the original durably, read it back, and refuse to go on unless it is identical."""
    try:
        backup.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = backup.with_name(f".{backup.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(original)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, backup)
        dir_fd = os.open(backup.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        if backup.read_bytes() != original:
            raise OSError(f"{backup} does not read back as written")
    except OSError as exc:
        raise _Stop(InstanceResult(
            key, State.FAILED, Reason.BACKUP_FAILED,
            f"cannot keep a backup of the original in {backup.parent} ({exc}); nothing was "
            "deleted. Give the workers a writable backup folder (--backup-dir)",
        )) from exc


def _restore(orthanc: OrthancAccess, iid: str, original: bytes, backup: Path) -> str | None:
    """Put the original back in Orthanc; ``None`` if it is back, else the backup's path."""
    try:
        existing = orthanc.instance_file(iid)
        if existing is not None and existing != original:
            orthanc.delete_instance(iid)
        if existing != original:
            orthanc.store(original)
        if orthanc.instance_file(iid) == original:
            backup.unlink(missing_ok=True)
            return None
    except requests.RequestException:
        logger.exception("restoring instance %s failed; its original is in %s", iid, backup)
    if not backup.exists():  # it must not be lost: the bytes are still in memory
        try:
            _write_backup(iid, backup, original)
        except _Stop:
            logger.critical("instance %s: Orthanc lost its original and no backup could be "
                            "written to %s", iid, backup)
    return str(backup)


# ---------------------------------------------------------------- shared steps


def _parse(key: str, data: bytes) -> Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError as exc:
        raise _Stop(InstanceResult(
            key, State.SKIPPED, Reason.NOT_DICOM,
            "not a DICOM Part 10 file (no 'DICM' prefix after the 128-byte preamble); "
            "left alone", bytes_in=len(data),
        )) from exc
    except Exception as exc:  # pydicom raises many types on damaged headers
        raise _Stop(InstanceResult(
            key, State.FAILED, Reason.READ_FAILED,
            f"pydicom cannot parse it: {type(exc).__name__}: {exc}", bytes_in=len(data),
        )) from exc


def _transcode(key: str, ds: Dataset, data: bytes, syntax: str) -> bytes:
    """The dataset as an HTJ2K Part 10 file, verified by the transcoder."""
    try:
        out = transcode_to_htj2k(ds, syntax=syntax)
    except TranscodeError as exc:
        state = State.SKIPPED if exc.reason.value in SKIP_REASONS else State.FAILED
        raise _Stop(InstanceResult(
            key, state, exc.reason.value, str(exc), bytes_in=len(data),
            sop_instance_uid=_sop(ds),
        )) from exc
    buffer = io.BytesIO()
    out.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _require_same_pixels(key: str, new: bytes, ds: Dataset, bytes_in: int) -> None:
    """Decode the bytes about to replace an original and compare every pixel with it."""
    if not _is_htj2k_of(new, ds):
        raise _Stop(InstanceResult(
            key, State.FAILED, Reason.VERIFICATION_MISMATCH,
            "the serialised HTJ2K file does not decode to the original's pixels; original kept",
            bytes_in=bytes_in, sop_instance_uid=_sop(ds),
        ))


def _is_htj2k_of(data: bytes, source: Dataset) -> bool:
    """Whether ``data`` is an HTJ2K file of the same instance with the same pixels."""
    try:
        other = pydicom.dcmread(io.BytesIO(data))
        if other.file_meta.TransferSyntaxUID not in HTJ2K_SYNTAXES:
            return False
        if other.get("SOPInstanceUID") != source.get("SOPInstanceUID"):
            return False
        return bool(np.array_equal(other.pixel_array, source.pixel_array))
    except Exception:  # noqa: BLE001 - anything unreadable is simply "not the same image"
        return False


def _syntax_of(data: bytes) -> str:
    try:
        uid = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID
        return f"{uid.name} ({uid})"
    except Exception:  # noqa: BLE001 - only used to word a message
        return "an unreadable file"


def _sop(ds: Dataset) -> str | None:
    uid = ds.get("SOPInstanceUID")
    return str(uid) if uid else None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _orthanc(config: WorkerConfig) -> OrthancAccess:
    """One keep-alive session per worker thread (requests sessions are not thread-safe)."""
    cache: dict[tuple[str, str, str], OrthancAccess] = getattr(_local, "sessions", None) or {}
    _local.sessions = cache
    secret = hashlib.sha256(config.password.encode()).hexdigest()
    key = (config.orthanc_url, config.username, secret)
    if key not in cache:
        cache[key] = OrthancAccess(
            config.orthanc_url, config.username, config.password, timeout=config.timeout
        )
    return cache[key]
