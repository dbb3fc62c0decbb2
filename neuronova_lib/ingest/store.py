"""The ingest core: checked instances into Orthanc, one policy for every way in.

STOW-RS, the upload route and ``neuronova transcode`` (the bulk worker's
store step), the demo loader and the DICOM listener all store through
:class:`IngestCore`; :class:`Ingestor` puts the gate in front of it for
callers that hold the bytes of one untrusted instance::

    with Gate(settings) as gate:
        ingestor = Ingestor(settings, gate)
        outcome = ingestor.ingest(data, sender="admin", route="stow")

For each file:

1. the gate checks it in a sandboxed worker; a refusal is quarantined;
2. a STOW-RS to ``/studies/{uid}`` refuses instances of another study;
3. under the SOP Instance UID's lock (:class:`~.uniqueness.UidLocks`), the
   archive is asked what it holds under the instance's UIDs
   (:mod:`.uniqueness`): the same instance again is a harmless duplicate
   (not stored twice); a different object under the SOP Instance UID, or the
   series or study UID under another owner, is a conflict — refused and
   quarantined, whatever the patient, study or series — and the stored
   copy is left as it is;
4. ``POST /instances``; should Orthanc still answer ``AlreadyStored`` (a writer
   that took no lock), what it holds is compared as in 3;
5. when Orthanc cannot be reached (it died and the supervisor is restarting
   it) the attempt — check and store — is repeated until
   ``NEURONOVA_INGEST_ORTHANC_WAIT`` runs out; a repeated attempt finds what an
   attempt that died half-way stored, and compares it, so an instance is
   reported stored only when Orthanc holds it whole. If Orthanc does not come
   back the instance is reported ``orthanc_unavailable``: not stored, and the
   sender still has it (it is not a refusal, so it is not quarantined).

Safe to call from many threads and processes at once: each thread has its own
Orthanc session, and the UID locks are file locks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from neuronova_lib.orthanc_store import OrthancRefused, OrthancStore
from neuronova_lib.reasons import Reason

from .conflict import same_instance
from .quarantine import Quarantine
from .sandbox import Gate, Verdict
from .uniqueness import Clash, Identity, UidLocks, parent_clash, sop_clash


@dataclass
class Outcome:
    """What became of one instance.

    ``held`` is the file Orthanc holds for it when that was read (a duplicate,
    a verified store), for callers that report on it (the bulk run).
    """

    stored: bool
    reason: str | None
    message: str
    sha256: str
    size: int
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    orthanc_id: str | None = None
    duplicate: bool = False
    quarantined: bool = False
    attempts: int = 0
    held: bytes | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, verdict: Verdict, stored: bool, reason: str | None, message: str,
           **extra: Any) -> "Outcome":
        """An outcome for the file the gate judged in ``verdict`` (its digest and UIDs)."""
        return cls(stored, reason, message, verdict.sha256, verdict.size, verdict.sop_class_uid,
                   verdict.sop_instance_uid, verdict.study_uid, verdict.series_uid, **extra)


class _Refused(Exception):
    """Ends an attempt with a refusal (quarantined)."""

    def __init__(self, reason: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.reason, self.message, self.extra = reason, message, extra


class IngestCore:
    """Store accepted instances in Orthanc: UID checks under a lock, retries, quarantine.

    Parameters
    ----------
    store_factory : callable
        Builds one Orthanc client (:class:`OrthancStore`) per thread.
    locks : UidLocks
        The UID locks every writer to this Orthanc shares.
    wait : float
        Seconds to keep trying while Orthanc cannot be reached
        (``NEURONOVA_INGEST_ORTHANC_WAIT``).
    quarantine : Quarantine or None
        Where refused files are kept; ``None``: refusals are only reported.
    """

    def __init__(self, *, store_factory: Callable[[], OrthancStore], locks: UidLocks,
                 wait: float, quarantine: Quarantine | None) -> None:
        self._factory = store_factory
        self.locks = locks
        self.wait = float(wait)
        self.quarantine = quarantine
        self._local = threading.local()

    @classmethod
    def from_settings(cls, settings: Any, *, store_factory: Any = None) -> "IngestCore":
        """The core for a data dir: its Orthanc, UID locks, wait and quarantine."""
        return cls(store_factory=store_factory or (lambda: OrthancStore.from_settings(settings)),
                   locks=UidLocks(settings.uid_lock_dir), wait=float(settings.ingest_orthanc_wait),
                   quarantine=Quarantine(settings))

    def _store(self) -> OrthancStore:
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = self._factory()
        return store

    # ------------------------------------------------------------------ public
    def refuse(self, data: bytes, verdict: Verdict, reason: str, message: str, *,
               sender: str | None, route: str, **extra: Any) -> Outcome:
        """Quarantine ``data`` as refused for ``reason``; the outcome says where it is."""
        quarantined = False
        if self.quarantine is not None:
            try:
                self.quarantine.put(data, reason, message, sender=sender, route=route)
                quarantined = True
            except OSError as exc:
                message = f"{message} (NOT quarantined: {exc})"
        return Outcome.of(verdict, False, reason, message, quarantined=quarantined, **extra)

    def put(self, data: bytes, verdict: Verdict, *, sender: str | None, route: str,
            original: bytes | None = None, verify: bool = False) -> Outcome:
        """Store ``data``, an instance the gate accepted in ``verdict``; never raises for
        what Orthanc does.

        Parameters
        ----------
        data : bytes
            The file to store (for a bulk run, the HTJ2K copy of what was sent).
        verdict : Verdict
            The gate's verdict on what was sent (its UIDs, Patient ID and digest).
        sender, route : str
            Recorded with a quarantined file.
        original : bytes, optional
            What was sent, when ``data`` is derived from it: a refused file is
            quarantined as sent. Default: ``data``.
        verify : bool
            Read the stored file back and require it byte for byte (always done
            after a failed attempt).

        Raises
        ------
        ValueError
            ``verdict`` is not the gate's acceptance (no UIDs or Patient ID to check).
        OSError
            The UID lock folder cannot be written (a set-up error, not the file's).
        """
        if not verdict.accepted or not verdict.patient_id:
            raise ValueError("IngestCore.put needs the gate's verdict of an accepted file "
                             "(with its UIDs and Patient ID); check the bytes with Gate first")
        sent = original if original is not None else data
        identity = Identity(str(verdict.sop_instance_uid), str(verdict.series_uid),
                            str(verdict.study_uid), str(verdict.patient_id or ""))
        deadline = time.monotonic() + self.wait
        attempts, pause, last_error = 0, 0.2, ""
        while True:
            attempts += 1
            try:
                return self._attempt(data, verdict, identity, attempts, verify)
            except _Refused as refused:
                return self.refuse(sent, verdict, refused.reason, refused.message,
                                   sender=sender, route=route, attempts=attempts,
                                   **refused.extra)
            except OrthancRefused as exc:
                if exc.status_code < 500:
                    return self.refuse(
                        sent, verdict, Reason.ORTHANC_REFUSED,
                        f"Orthanc refused the file (HTTP {exc.status_code}) although the gate "
                        "accepted it; it is kept in quarantine for a look", sender=sender,
                        route=route, attempts=attempts)
                last_error = f"HTTP {exc.status_code}"
            except requests.RequestException as exc:  # down, restarting, reset mid-request
                last_error = f"{type(exc).__name__}"
            if time.monotonic() + pause > deadline:
                return Outcome.of(
                    verdict, False, Reason.ORTHANC_UNAVAILABLE,
                    f"Orthanc did not answer for {self.wait:g} s ({last_error}); the instance "
                    "was not stored: send it again", attempts=attempts)
            time.sleep(pause)
            pause = min(pause * 2, 2.0)

    # ------------------------------------------------------------------ steps
    def _attempt(self, data: bytes, verdict: Verdict, identity: Identity, attempts: int,
                 verify: bool) -> Outcome:
        store = self._store()
        with self.locks.hold("sop", [identity.sop_instance_uid]):
            clash = sop_clash(store, identity, data)
            if clash is None:
                parents = parent_clash(store, identity)
                if isinstance(parents, list) and parents:
                    # A new series or study: hold its UIDs too, and look again under them.
                    with self.locks.hold("parent", parents):
                        parents = parent_clash(store, identity)
                        if isinstance(parents, Clash):
                            raise _conflict(parents)
                        return self._store_new(store, data, verdict, identity, attempts, verify)
                if isinstance(parents, Clash):
                    raise _conflict(parents)
                return self._store_new(store, data, verdict, identity, attempts, verify)
        if clash.duplicate:
            # A repeated attempt finds what the failed one stored: that is "stored", not a duplicate.
            first = attempts == 1
            return Outcome.of(verdict, True, None,
                              "already stored (same instance)" if first else "stored",
                              orthanc_id=clash.orthanc_ids[0], duplicate=first,
                              attempts=attempts, held=clash.held)
        raise _conflict(clash)

    def _store_new(self, store: OrthancStore, data: bytes, verdict: Verdict,
                   identity: Identity, attempts: int, verify: bool) -> Outcome:
        answer = store.store(data)
        orthanc_id = str(answer.get("ID"))
        already = answer.get("Status") == "AlreadyStored"
        if not (already or verify or attempts > 1):
            return Outcome.of(verdict, True, None, "stored", orthanc_id=orthanc_id,
                              attempts=attempts)
        held = store.instance_file(orthanc_id)
        if already:  # stored by a writer that took no lock, since the check
            if held is None or not same_instance(held, data):
                raise _Refused(Reason.SOP_INSTANCE_CONFLICT,
                               f"Orthanc already holds a different file as SOP Instance UID "
                               f"{identity.sop_instance_uid} (Orthanc instance {orthanc_id}); "
                               "the stored one is kept. Give the new one its own UID, or "
                               "delete the stored instance first", orthanc_id=orthanc_id)
            return Outcome.of(verdict, True, None, "already stored (same instance)",
                              orthanc_id=orthanc_id, duplicate=True, attempts=attempts, held=held)
        if held != data:
            return Outcome.of(verdict, False, Reason.REREAD_MISMATCH,
                              f"Orthanc answered {answer.get('Status')} for {orthanc_id} but "
                              "does not hold the file sent; send it again",
                              orthanc_id=orthanc_id, attempts=attempts)
        return Outcome.of(verdict, True, None, "stored", orthanc_id=orthanc_id,
                          attempts=attempts, held=held)


def _conflict(clash: Clash) -> _Refused:
    assert clash.reason is not None
    return _Refused(clash.reason, clash.message, orthanc_id=clash.orthanc_ids[0])


class Ingestor:
    """Gate, quarantine and Orthanc for one data dir.

    Parameters
    ----------
    settings : Settings
        Orthanc's address and service account, the wait for Orthanc, the
        quarantine, the UID locks.
    gate : Gate
        The caller's gate (its workers are shared by every ingest of the process).
    store_factory : callable, optional
        Builds one Orthanc client per thread (default
        :meth:`OrthancStore.from_settings`).
    """

    def __init__(self, settings: Any, gate: Gate, *, store_factory: Any = None) -> None:
        self.gate = gate
        self.core = IngestCore.from_settings(settings, store_factory=store_factory)
        self.quarantine = self.core.quarantine

    def ingest(self, data: bytes, *, sender: str | None, route: str,
               study: str | None = None) -> Outcome:
        """Check ``data`` and store it; never raises for what the bytes or Orthanc do."""
        verdict = self.gate.check(data)
        if not verdict.accepted:
            return self.core.refuse(data, verdict, verdict.reason or "unknown", verdict.message,
                                    sender=sender, route=route)
        if study is not None and verdict.study_uid != study:
            return self.core.refuse(
                data, verdict, Reason.STUDY_MISMATCH,
                f"the instance belongs to study {verdict.study_uid}, not to {study} named in "
                "the URL; send it to /studies or to its own study", sender=sender, route=route)
        outcome = self.core.put(data, verdict, sender=sender, route=route)
        outcome.held = None  # a STOW-RS request keeps every outcome: not the stored files
        return outcome
