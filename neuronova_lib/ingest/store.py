"""Checked instances into Orthanc: gate, store, conflicts, Orthanc restarts.

:class:`Ingestor` is what STOW-RS (and anything else that holds the bytes of
one instance) calls::

    with Gate(settings) as gate:
        ingestor = Ingestor(settings, gate)
        outcome = ingestor.ingest(data, sender="admin", route="stow")

For each file:

1. the gate checks it in a sandboxed worker; a refusal is quarantined;
2. a STOW-RS to ``/studies/{uid}`` refuses instances of another study;
3. ``POST /instances``. Orthanc keeps the first copy of a SOP Instance UID, so
   an ``AlreadyStored`` answer is checked: the same instance (same bytes, or
   the same attributes and pixels in another transfer syntax) is a harmless
   duplicate; anything else is a conflict, refused and quarantined, and the
   stored copy is left as it is;
4. when Orthanc cannot be reached (it died and the supervisor is restarting
   it) the store is retried until ``NEURONOVA_INGEST_ORTHANC_WAIT`` runs out;
   after a failed attempt the stored file is read back and compared, so an
   instance is reported stored only when Orthanc holds it whole. If Orthanc
   does not come back the instance is reported ``orthanc_unavailable``: not
   stored, and the sender still has it (it is not a refusal, so it is not
   quarantined).

Safe to call from many threads at once: each thread has its own Orthanc session.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import requests

from neuronova_lib.orthanc_store import OrthancRefused, OrthancStore

from .conflict import same_instance
from .quarantine import Quarantine
from .sandbox import Gate, Verdict


@dataclass
class Outcome:
    """What became of one instance."""

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

    @classmethod
    def of(cls, verdict: Verdict, stored: bool, reason: str | None, message: str,
           **extra: Any) -> "Outcome":
        """An outcome for the file the gate judged in ``verdict`` (its digest and UIDs)."""
        return cls(stored, reason, message, verdict.sha256, verdict.size, verdict.sop_class_uid,
                   verdict.sop_instance_uid, verdict.study_uid, verdict.series_uid, **extra)


class Ingestor:
    """Gate, quarantine and Orthanc for one data dir.

    Parameters
    ----------
    settings : Settings
        Orthanc's address and service account, the wait for Orthanc, the quarantine.
    gate : Gate
        The caller's gate (its workers are shared by every ingest of the process).
    store_factory : callable, optional
        Builds one Orthanc client per thread (default
        :meth:`OrthancStore.from_settings`).
    """

    def __init__(self, settings: Any, gate: Gate, *, store_factory: Any = None) -> None:
        self.gate = gate
        self.quarantine = Quarantine(settings)
        self.wait = float(settings.ingest_orthanc_wait)
        self._factory = store_factory or (lambda: OrthancStore.from_settings(settings))
        self._local = threading.local()

    def _store(self) -> OrthancStore:
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = self._factory()
        return store

    def ingest(self, data: bytes, *, sender: str | None, route: str,
               study: str | None = None) -> Outcome:
        """Check ``data`` and store it; never raises for what the bytes or Orthanc do."""
        verdict = self.gate.check(data)
        if not verdict.accepted:
            return self._refuse(data, verdict, verdict.reason or "unknown", verdict.message,
                                sender, route)
        if study is not None and verdict.study_uid != study:
            return self._refuse(
                data, verdict, "study_mismatch",
                f"the instance belongs to study {verdict.study_uid}, not to {study} named in "
                "the URL; send it to /studies or to its own study", sender, route)
        return self._put(data, verdict, sender, route)

    # ------------------------------------------------------------------ steps
    def _refuse(self, data: bytes, verdict: Verdict, reason: str, message: str,
                sender: str | None, route: str, **extra: Any) -> Outcome:
        self.quarantine.put(data, reason, message, sender=sender, route=route)
        return Outcome.of(verdict, False, reason, message, quarantined=True, **extra)

    def _put(self, data: bytes, verdict: Verdict, sender: str | None, route: str) -> Outcome:
        deadline = time.monotonic() + self.wait
        attempts, pause = 0, 0.2
        last_error = ""
        while True:
            attempts += 1
            try:
                answer = self._store().store(data)
                break
            except OrthancRefused as exc:
                status = exc.status_code
                if status < 500:
                    return self._refuse(
                        data, verdict, "orthanc_refused",
                        f"Orthanc refused the file (HTTP {status}) although the gate accepted "
                        "it; it is kept in quarantine for a look", sender, route,
                        attempts=attempts)
                last_error = f"HTTP {status}"
            except requests.RequestException as exc:  # down, restarting, reset mid-request
                last_error = type(exc).__name__
            if time.monotonic() + pause > deadline:
                return Outcome.of(
                    verdict, False, "orthanc_unavailable",
                    f"Orthanc did not answer for {self.wait:g} s ({last_error}); the instance "
                    "was not stored: send it again", attempts=attempts)
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
        orthanc_id = str(answer.get("ID"))
        already = answer.get("Status") == "AlreadyStored"
        if already or attempts > 1:
            # A duplicate, or a retry after Orthanc died mid-request: read back what Orthanc holds.
            try:
                held = self._store().instance_file(orthanc_id)
            except requests.RequestException as exc:
                return Outcome.of(
                    verdict, False, "orthanc_unavailable",
                    f"Orthanc stored the instance but could not show it back ({exc}); send it "
                    "again to have it checked", orthanc_id=orthanc_id, attempts=attempts)
            if held is None or not same_instance(held, data):
                return self._refuse(
                    data, verdict, "sop_instance_conflict",
                    f"Orthanc already holds a different file as SOP Instance UID "
                    f"{verdict.sop_instance_uid}; the stored one is kept. Give the new one its "
                    "own UID, or delete the stored instance first", sender, route,
                    orthanc_id=orthanc_id, attempts=attempts)
        return Outcome.of(verdict, True, None,
                          "already stored (same instance)" if already else "stored",
                          orthanc_id=orthanc_id, duplicate=already, attempts=attempts)
