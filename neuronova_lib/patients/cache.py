"""The chain's local cache: FHIR Patients in the platform database, each with its age."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..db.models import CachedPatient


@dataclass(frozen=True)
class CacheEntry:
    patient_id: str
    resource: dict[str, Any]
    source: str
    fhir_id: str | None
    fetched_at: datetime

    def age(self, now: datetime | None = None) -> float:
        """Seconds since the entry was fetched from its source."""
        now = now or datetime.now(timezone.utc)
        fetched = self.fetched_at
        if fetched.tzinfo is None:  # SQLite gives back naive datetimes (stored as UTC)
            fetched = fetched.replace(tzinfo=timezone.utc)
        return max(0.0, (now - fetched).total_seconds())


def _entry(row: CachedPatient) -> CacheEntry:
    return CacheEntry(row.patient_id, json.loads(row.resource), row.source, row.fhir_id,
                      row.fetched_at)


class PatientCache:
    """Reads and writes ``patient_cache`` with its own short sessions."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def get(self, patient_id: str) -> CacheEntry | None:
        with self.sessions() as session:
            row = session.get(CachedPatient, patient_id)
            return _entry(row) if row else None

    def put(self, patient_id: str, resource: dict[str, Any], source: str) -> CacheEntry:
        """Store (or replace) the entry, fetched now."""
        family = next((n.get("family") for n in resource.get("name", []) if n.get("family")),
                      None)
        values = dict(resource=json.dumps(resource, separators=(",", ":")),
                      fhir_id=resource.get("id"), source=source,
                      fetched_at=datetime.now(timezone.utc),
                      family=family.lower()[:128] if family else None)
        for _ in range(2):
            with self.sessions() as session:
                row = session.get(CachedPatient, patient_id)
                if row is None:
                    row = CachedPatient(patient_id=patient_id, **values)
                    session.add(row)
                else:
                    for key, value in values.items():
                        setattr(row, key, value)
                try:
                    session.commit()
                    return _entry(row)
                except IntegrityError:  # another worker inserted it first: update that row
                    session.rollback()
        raise RuntimeError(f"could not cache patient {patient_id!r}")

    def search_family(self, prefix: str, limit: int) -> list[CacheEntry]:
        """Entries whose family name starts with ``prefix`` (case-insensitive)."""
        with self.sessions() as session:
            rows = session.scalars(
                select(CachedPatient)
                .where(CachedPatient.family.startswith(prefix.lower(), autoescape=True))
                .order_by(CachedPatient.family, CachedPatient.patient_id).limit(limit))
            return [_entry(r) for r in rows]
