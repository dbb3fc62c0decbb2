"""Who and when a synthetic case is: patient, study, dates and UIDs, all derived from the seed.

Nothing here reads the clock or a random source, so the same ``(seed, index)``
always gives the same identity (and so byte-identical DICOM files), on any
machine and with any numpy version: every value comes from a SHA-256 of a
description of what it is for.

UIDs are ``2.25.<n>`` where ``n`` is the integer value of a name-based
(version 5, SHA-1) UUID, as ISO/IEC 9834-8 and DICOM PS3.5 §B.2 define that
root. (pydicom 3.0.2's ``generate_uid(prefix=None, entropy_srcs=...)`` ignores
``entropy_srcs`` and returns a random UUID, so it cannot serve here; with a
``"2.25."`` prefix it would append a 512-bit hash, which is not a UUID.)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass

from pydicom.uid import UID

#: Namespace of every demo UID; changing it changes every UID of every data set.
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:neuronova:demo-data:v1")
_FIRST_STUDY_DAY = dt.date(2021, 1, 4)
_STUDY_DAYS = 4 * 365


def demo_uid(*parts: str | int) -> UID:
    """Deterministic DICOM UID for one thing, named by ``parts``.

    Parameters
    ----------
    *parts : str or int
        What the UID identifies, e.g. ``(seed, index, "series", "t1")``; the
        parts are serialised unambiguously (``("1", "23")`` ≠ ``("12", "3")``).

    Returns
    -------
    pydicom.uid.UID
        A valid UID of at most 44 characters under the ``2.25`` root.
    """
    name = json.dumps([str(p) for p in parts], separators=(",", ":"))
    return UID(f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}")


def _number(*parts: str | int) -> int:
    """A stable 64-bit number derived from ``parts``."""
    name = json.dumps([str(p) for p in parts], separators=(",", ":")).encode()
    return int.from_bytes(hashlib.sha256(name).digest()[:8], "big")


@dataclass(frozen=True)
class CaseIdentity:
    """Patient, study and series identity of one synthetic case.

    Attributes
    ----------
    case_id : str
        Folder name, ``case-001``.
    patient_id, patient_name, patient_birth_date, patient_sex : str
        Patient module values (``DEMO^CASE001``, DICOM DA date, ``F``/``M``).
    patient_age : str
        DICOM AS value at the study date, e.g. ``054Y``.
    study_instance_uid, study_id, accession_number : str
        Study identity.
    study_date, study_time : str
        DICOM DA and TM values.
    frame_of_reference_uid : str
        Shared by the four series: they are co-registered.
    """

    seed: int
    index: int
    case_id: str
    patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    patient_age: str
    study_instance_uid: str
    study_id: str
    accession_number: str
    study_date: str
    study_time: str
    frame_of_reference_uid: str

    def series_instance_uid(self, channel: str) -> str:
        """SeriesInstanceUID of one channel's series."""
        return str(demo_uid(self.seed, self.index, "series", channel))

    def sop_instance_uid(self, channel: str, slice_index: int) -> str:
        """SOPInstanceUID of one slice of one channel."""
        return str(demo_uid(self.seed, self.index, "instance", channel, slice_index))

    def series_time(self, order: int) -> str:
        """Acquisition time (TM) of the ``order``-th series of the exam, 6 minutes apart."""
        start = dt.datetime.strptime(self.study_date + self.study_time, "%Y%m%d%H%M%S")
        return (start + dt.timedelta(minutes=2 + 6 * order)).strftime("%H%M%S")


def case_identity(seed: int, index: int) -> CaseIdentity:
    """Identity of case ``index`` of the data set made with ``seed``.

    Parameters
    ----------
    seed : int
        Seed of the data set.
    index : int
        Case number (1-based by convention).

    Returns
    -------
    CaseIdentity
    """
    study_day = _FIRST_STUDY_DAY + dt.timedelta(days=_number(seed, index, "day") % _STUDY_DAYS)
    minutes = 7 * 60 + 30 + (_number(seed, index, "time") % (10 * 60 * 4)) // 4  # 07:30–17:30
    age_years = 24 + _number(seed, index, "age") % 58
    birth = dt.date(study_day.year - age_years, 1, 1) + dt.timedelta(
        days=_number(seed, index, "birthday") % 365
    )
    if (birth.month, birth.day) > (study_day.month, study_day.day):
        age_years -= 1  # birthday not yet reached in the study year
    return CaseIdentity(
        seed=seed,
        index=index,
        case_id=f"case-{index:03d}",
        patient_id=f"NNDEMO-{seed}-{index:03d}",
        patient_name=f"DEMO^CASE{index:03d}",
        patient_birth_date=birth.strftime("%Y%m%d"),
        patient_sex="FM"[_number(seed, index, "sex") % 2],
        patient_age=f"{age_years:03d}Y",
        study_instance_uid=str(demo_uid(seed, index, "study")),
        study_id=f"{index:04d}",
        accession_number=f"NN{_number(seed, index, 'accession') % 10**10:010d}",
        study_date=study_day.strftime("%Y%m%d"),
        study_time=f"{minutes // 60:02d}{minutes % 60:02d}00",
        frame_of_reference_uid=str(demo_uid(seed, index, "frame-of-reference")),
    )
