"""One SOP Instance UID, one object in the archive; a series or study UID under one owner.

Orthanc 1.10 names a resource by hashing its UID together with its parents'
(patient ID, study, series), so it stores a second instance with a stored SOP
Instance UID beside the first when it arrives under another patient or
study; WADO-RS then answers 404 for both and the original is lost to every
client (``shared/FINDINGS.md``). Before storing, the ingest core
(:mod:`neuronova_lib.ingest.store`) therefore asks :func:`sop_clash` and
:func:`parent_clash`:

* the SOP Instance UID is stored already: the same instance (same bytes, or
  the same attributes and decoded pixels, :func:`~.conflict.same_instance`) is
  a harmless duplicate; anything else is ``sop_instance_conflict``, whatever
  its patient, study or series;
* the Series Instance UID is stored under another patient or study:
  ``series_instance_conflict``;
* the Study Instance UID is stored under another patient:
  ``study_instance_conflict``.

Each lookup is ``POST /tools/lookup``, an exact match in Orthanc's index
(``DicomIdentifiers``, indexed on the value; tests/test_uid_uniqueness_e2e.py
checks the query plan), so the cost does not grow with the archive. The
common case — another instance of a series already stored — is two lookups:
the SOP UID (absent) and the series UID, whose Orthanc ID, hashed from our
patient, study and series, says at once that it is ours.

**Two uploads of one UID at once.** The check and the store must be one step,
or two senders that both found a UID free would both store it. They are made
one with :class:`UidLocks`: an exclusive ``flock`` on a lock file picked by
the UID's hash (a fixed set of stripes, so the folder does not grow with the
archive), held from the check until Orthanc has answered. Every way in on this
host takes it — the API's STOW-RS threads, the upload jobs' and ``neuronova
transcode``'s Dask worker processes, the DICOM listener — so it is safe
across threads and processes. A file lock rather than a unique claim row in
the platform database because it needs nothing but the data dir (Dask
workers hold no database credentials), leaves no rows to fall out of step
with Orthanc when instances are deleted there, and costs two system calls.
Its limit: writers on *other* hosts (Dask workers of a remote cluster) share
it only through a file system with working ``flock`` (NFSv4, CephFS, Lustre);
a deployment that stores from several hosts without one needs a database
claim instead. The SOP UID's lock is always taken; a series or study UID's
lock only when this instance would create that series or study (the first
instance of a series), so the instances of one series are stored in
parallel.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuronova_lib.filelock import exclusive_file_lock
from neuronova_lib.reasons import Reason

from .conflict import same_instance

#: Lock stripes per kind; two UIDs on one stripe only wait for each other briefly.
STRIPES = 1024


@dataclass(frozen=True)
class Identity:
    """Who an instance says it is: its UIDs and Patient ID (from the gate's verdict)."""

    sop_instance_uid: str
    series_uid: str
    study_uid: str
    patient_id: str


@dataclass(frozen=True)
class Clash:
    """What the archive already holds under one of the instance's UIDs.

    ``reason`` is ``None`` for a duplicate (the same instance, stored as
    ``orthanc_ids[0]``), else a conflict code; ``message`` says what to do.
    """

    reason: Reason | None
    message: str
    orthanc_ids: tuple[str, ...]
    held: bytes | None = None

    @property
    def duplicate(self) -> bool:
        return self.reason is None


def orthanc_id(*parts: str) -> str:
    """Orthanc's identifier of a resource: SHA-1 of its and its parents' IDs joined by ``|``.

    ``orthanc_id(patient)``, ``orthanc_id(patient, study)``, ``orthanc_id(patient, study,
    series)``, ``orthanc_id(patient, study, series, sop)`` (Orthanc's
    ``DicomInstanceHasher``). Used only as a shortcut: a resource whose ID is
    not the expected one is looked at in full before anything is refused.
    """
    digest = hashlib.sha1("|".join(p.strip() for p in parts).encode()).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


# ---------------------------------------------------------------- locks


class UidLocks:
    """Striped, cross-process exclusive locks on UIDs (see the module docstring).

    Parameters
    ----------
    folder : Path
        Where the lock files live (``Settings.uid_lock_dir``); every process
        that stores into the same Orthanc must use the same folder.
    """

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)

    def _path(self, kind: str, uid: str) -> Path:
        stripe = int.from_bytes(hashlib.sha256(uid.encode()).digest()[:4], "big") % STRIPES
        return self.folder / kind / f"{stripe:04d}.lock"

    @contextmanager
    def hold(self, kind: str, uids: Sequence[str]) -> Iterator[None]:
        """Hold the locks of ``uids`` (of one ``kind``) for the block.

        Stripes are taken once each and in sorted order, so two holders never
        wait for each other in a cycle. Callers take ``"sop"`` first and
        ``"parent"`` (series and study) inside it, never the other way round.
        """
        paths = sorted({self._path(kind, uid) for uid in uids})
        with ExitStack() as stack:
            for path in paths:
                if not path.parent.is_dir():
                    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                stack.enter_context(exclusive_file_lock(path))
            yield


# ---------------------------------------------------------------- the check


def sop_clash(store: Any, identity: Identity, data: bytes) -> Clash | None:
    """What the archive holds under the instance's SOP Instance UID; ``None``: nothing.

    ``store`` is an :class:`~neuronova_lib.orthanc_store.OrthancStore`; what it
    raises when Orthanc cannot be reached goes to the caller (which retries).
    """
    held = store.lookup_all(identity.sop_instance_uid, "Instance")
    return _sop_clash(store, identity, data, held) if held else None


def parent_clash(store: Any, identity: Identity) -> Clash | list[str]:
    """A conflict of the series or study UID with what is stored, or the UIDs to create.

    Returns
    -------
    Clash or list of str
        The conflict; otherwise the series and study UIDs that storing this
        instance would create in Orthanc (empty when its series is stored
        already): the caller locks them and asks again before it stores.
    """
    pid, study, series = identity.patient_id.strip(), identity.study_uid, identity.series_uid
    found = store.lookup_all(series, "Series")
    if found == [orthanc_id(pid, study, series)]:
        return []  # the series is stored under this patient and study: the common case
    for sid in found:
        owner = store.get_json(f"/series/{sid}/study")
        held_study = str(owner.get("MainDicomTags", {}).get("StudyInstanceUID", ""))
        held_patient = str(owner.get("PatientMainDicomTags", {}).get("PatientID", "")).strip()
        if held_study != study or held_patient != pid:
            return Clash(Reason.SERIES_INSTANCE_CONFLICT,
                         f"Series Instance UID {series} is already stored under patient "
                         f"{held_patient!r}, study {held_study} (Orthanc series {sid}), not "
                         f"under patient {pid!r}, study {study}; give the series its own UID "
                         "(or delete the stored series first)", (sid,))
    if found:
        return []  # stored under this patient and study (an ID hashed otherwise)
    for sid in store.lookup_all(study, "Study"):
        if sid == orthanc_id(pid, study):
            return [series]
        owner = store.get_json(f"/studies/{sid}")
        held_patient = str(owner.get("PatientMainDicomTags", {}).get("PatientID", "")).strip()
        if held_patient != pid:
            return Clash(Reason.STUDY_INSTANCE_CONFLICT,
                         f"Study Instance UID {study} is already stored under patient "
                         f"{held_patient!r} (Orthanc study {sid}), not under patient {pid!r}; "
                         "give the study its own UID (or delete the stored study first)", (sid,))
        return [series]
    return [series, study]


def _sop_clash(store: Any, identity: Identity, data: bytes, held: list[str]) -> Clash:
    sop = identity.sop_instance_uid
    if len(held) == 1:
        stored = store.instance_file(held[0])
        if stored is not None and same_instance(stored, data):
            return Clash(None, "already stored (same instance)", (held[0],), stored)
    where = ", ".join(held)
    return Clash(Reason.SOP_INSTANCE_CONFLICT,
                 f"the archive already holds a different object as SOP Instance UID {sop} "
                 f"(Orthanc instance {where}); the stored one is kept and this file is "
                 "quarantined. Give the new object its own UID, or delete the stored "
                 "instance first and send it again", tuple(held))


def lock_folder(path: Path | str | None, fallback: Path | str) -> Path:
    """``path``, or ``<fallback>/.uid-locks`` when none was configured."""
    return Path(path) if path else Path(fallback) / ".uid-locks"


__all__ = ["STRIPES", "Clash", "Identity", "UidLocks", "lock_folder", "orthanc_id",
           "parent_clash", "sop_clash"]
