"""The fallback chain: cache → FHIR server → OpenEMR, with write-back.

For one DICOM Patient ID, :meth:`PatientChain.resolve`:

1. answers from the cache when the entry is younger than ``NEURONOVA_PATIENT_CACHE_TTL``
   and is known to the FHIR server;
2. asks the FHIR server by identifier; found → cached, returned;
3. asks OpenEMR by ``pubpid``; found → converted to a FHIR Patient (validated),
   created on the FHIR server with ``If-None-Exist`` (so concurrent requests, here or in
   another API worker, make one resource), cached, returned. While FHIR is unavailable the
   patient is still returned and cached, marked as not yet on the FHIR server, and written
   there on a later request;
4. otherwise raises :class:`PatientNotFound` naming the sources asked and those that were
   unavailable (then the miss is not a proven miss).

A stale cache entry is refreshed from FHIR; while neither FHIR nor OpenEMR can answer it
is returned as it is, with its age and the sources that failed. Requests for one patient
in one process wait for each other, so a burst asks each source once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import httpx

from .cache import CacheEntry, PatientCache
from .convert import BadRecord, openemr_to_fhir
from .errors import PatientNotFound, SourceUnavailable
from .fhir_client import FhirClient
from .identifiers import check_patient_id, patient_id_of
from .openemr import OpenEmrClient


@dataclass
class Resolution:
    """A patient and where it came from.

    Attributes
    ----------
    patient
        The FHIR R4 Patient.
    source
        ``cache``, ``fhir`` or ``openemr``: where this answer was read.
    age
        Seconds since the answer was fetched from FHIR or OpenEMR (0 when just now).
    stale
        True when it is older than the cache TTL (a refresh was tried and failed).
    asked
        The sources asked, in order.
    unavailable
        ``{source: why}`` for each source that could not answer.
    on_fhir
        Whether the FHIR server holds the patient (False after an OpenEMR hit while FHIR
        was unavailable).
    """

    patient: dict[str, Any]
    source: str
    age: float
    stale: bool
    asked: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    on_fhir: bool = True


class PatientChain:
    """Resolves patients through the cache, a FHIR server and OpenEMR.

    Parameters
    ----------
    cache
        The database cache.
    fhir
        The FHIR server's client, or ``None`` to skip that step.
    openemr
        OpenEMR's client, or ``None`` (no OpenEMR configured).
    id_system
        The FHIR identifier system of DICOM Patient IDs.
    ttl
        Seconds a cache entry is fresh.
    """

    def __init__(self, cache: PatientCache, fhir: FhirClient | None,
                 openemr: OpenEmrClient | None, id_system: str, ttl: float) -> None:
        self.cache, self.fhir, self.openemr = cache, fhir, openemr
        self.id_system, self.ttl = id_system, ttl
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def close(self) -> None:
        for client in (self.fhir, self.openemr):
            if client is not None:
                client.close()

    def _lock(self, patient_id: str) -> threading.Lock:
        with self._locks_guard:
            if len(self._locks) > 10_000:  # forget idle locks now and then
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            return self._locks.setdefault(patient_id, threading.Lock())

    def _fresh(self, entry: CacheEntry | None) -> bool:
        return (entry is not None and entry.age() < self.ttl
                and (entry.fhir_id is not None or self.fhir is None))

    def resolve(self, patient_id: str, fhir_auth: httpx.Auth | None = None) -> Resolution:
        """The patient with this DICOM Patient ID (see the module docstring for the order).

        Parameters
        ----------
        patient_id
            DICOM Patient ID (= OpenEMR pubpid = the FHIR identifier's value).
        fhir_auth
            Authentication for this request's FHIR calls (default: the client's own).

        Raises
        ------
        ValueError
            ``patient_id`` is not a DICOM Patient ID.
        PatientNotFound
            No source has it (``unavailable`` says which could not be asked).
        """
        patient_id = check_patient_id(patient_id)
        entry = self.cache.get(patient_id)
        if self._fresh(entry):
            assert entry is not None
            return Resolution(entry.resource, "cache", entry.age(), False, ["cache"])
        with self._lock(patient_id):
            entry = self.cache.get(patient_id)  # filled while this request waited?
            if self._fresh(entry):
                assert entry is not None
                return Resolution(entry.resource, "cache", entry.age(), False, ["cache"])
            return self._fetch(patient_id, entry, fhir_auth)

    def _fetch(self, patient_id: str, entry: CacheEntry | None,
               fhir_auth: httpx.Auth | None) -> Resolution:
        asked, unavailable = ["cache"], {}
        fhir_ok = self.fhir is not None
        if self.fhir is not None:
            asked.append("fhir")
            try:
                found = self.fhir.find_by_identifier("Patient", self.id_system, patient_id,
                                                     fhir_auth)
            except SourceUnavailable as exc:
                unavailable["fhir"], fhir_ok = f"{exc.kind}: {exc.detail}", False
            else:
                if found is not None:
                    self.cache.put(patient_id, found, "fhir")
                    return Resolution(found, "fhir", 0.0, False, asked, unavailable)
                if entry is not None and entry.fhir_id is None:
                    # Cached from OpenEMR while FHIR was down: write it back now.
                    try:
                        created = self.fhir.create_if_none(
                            _without_server_fields(entry.resource), self.id_system,
                            patient_id, fhir_auth)
                    except SourceUnavailable as exc:
                        unavailable["fhir"] = f"{exc.kind}: {exc.detail}"
                        return Resolution(entry.resource, "cache", entry.age(),
                                          entry.age() >= self.ttl, asked, unavailable, False)
                    self.cache.put(patient_id, created, entry.source)
                    return Resolution(created, "cache", entry.age(), False, asked, unavailable)
        if self.openemr is not None:
            asked.append("openemr")
            try:
                record = self.openemr.find_patient(patient_id)
                patient = openemr_to_fhir(record, self.id_system) if record else None
            except SourceUnavailable as exc:
                unavailable["openemr"] = f"{exc.kind}: {exc.detail}"
            except BadRecord as exc:
                unavailable["openemr"] = f"garbage: {exc}"
            else:
                if patient is not None:
                    on_fhir = False
                    if self.fhir is not None and fhir_ok:
                        try:
                            patient = self.fhir.create_if_none(patient, self.id_system,
                                                               patient_id, fhir_auth)
                            on_fhir = True
                        except SourceUnavailable as exc:
                            unavailable["fhir"] = f"{exc.kind}: {exc.detail}"
                    self.cache.put(patient_id, patient, "openemr")
                    return Resolution(patient, "openemr", 0.0, False, asked, unavailable,
                                      on_fhir)
        if entry is not None and unavailable:
            # Stale, but the sources that could refresh it cannot answer: say so.
            return Resolution(entry.resource, "cache", entry.age(), True, asked, unavailable,
                              entry.fhir_id is not None)
        raise PatientNotFound(patient_id, asked, unavailable)

    def search(self, text: str, limit: int = 20, fhir_auth: httpx.Auth | None = None
               ) -> tuple[list[dict[str, Any]], list[str], dict[str, str]]:
        """Patients whose name starts with ``text``: the FHIR server's, then OpenEMR's
        (converted, not written back), then the cache's; one per Patient ID.

        Returns ``(patients, asked, unavailable)``.
        """
        found: dict[str, dict[str, Any]] = {}
        asked, unavailable = [], {}

        def add(resource: dict[str, Any]) -> None:
            pid = patient_id_of(resource, self.id_system)
            if pid and pid not in found and len(found) < limit:
                found[pid] = resource

        if self.fhir is not None:
            asked.append("fhir")
            try:
                for resource in self.fhir.search("Patient", {"name": text, "_count": str(limit)},
                                                 fhir_auth):
                    add(resource)
            except SourceUnavailable as exc:
                unavailable["fhir"] = f"{exc.kind}: {exc.detail}"
        if self.openemr is not None and len(found) < limit:
            asked.append("openemr")
            try:
                for record in self.openemr.search_patients({"lname": text}):
                    try:
                        add(openemr_to_fhir(record, self.id_system))
                    except BadRecord:
                        continue  # a chart without External ID cannot be joined to images
            except SourceUnavailable as exc:
                unavailable["openemr"] = f"{exc.kind}: {exc.detail}"
        asked.append("cache")
        for entry in self.cache.search_family(text, limit):
            add(entry.resource)
        return list(found.values()), asked, unavailable


def _without_server_fields(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in ("id", "meta")}


def build_chain(settings: Any, sessions: Any,
                fhir_base: str | None = None) -> PatientChain:
    """The chain ``settings`` describe; ``fhir_base`` overrides the FHIR URL (the API passes
    its own facade's loopback address when ``NEURONOVA_FHIR_URL`` is unset)."""
    from .fhir_client import BearerAuth

    base = settings.fhir_url or fhir_base
    auth = BearerAuth(settings.fhir_token) if settings.fhir_url and settings.fhir_token else None
    fhir = FhirClient(base, settings.fhir_timeout, auth) if base else None
    return PatientChain(PatientCache(sessions), fhir, OpenEmrClient.from_settings(settings),
                        settings.patient_id_system, settings.patient_cache_ttl)


__all__ = ["PatientChain", "Resolution", "build_chain"]
