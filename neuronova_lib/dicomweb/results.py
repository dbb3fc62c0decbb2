"""What searches and signing return: small frozen records built from DICOM JSON.

Kept apart from the transport (:mod:`.client`) so that code that only reads
results (dashboards, tests) needs neither requests nor dicomweb-client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..volume import dicom_json_value, dicom_json_values

if TYPE_CHECKING:
    from .client import Client


@dataclass(frozen=True)
class StudySummary:
    """One QIDO-RS study match."""

    study_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    description: str
    accession_number: str
    modalities: tuple[str, ...]
    series_count: int | None
    instance_count: int | None

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> StudySummary:
        def count(keyword: str) -> int | None:
            value = dicom_json_value(item, keyword)
            return int(value) if value not in (None, "") else None

        return cls(
            study_uid=str(dicom_json_value(item, "StudyInstanceUID", "")),
            patient_id=str(dicom_json_value(item, "PatientID", "")),
            patient_name=str(dicom_json_value(item, "PatientName", "")),
            study_date=str(dicom_json_value(item, "StudyDate", "")),
            description=str(dicom_json_value(item, "StudyDescription", "")),
            accession_number=str(dicom_json_value(item, "AccessionNumber", "")),
            modalities=tuple(str(m) for m in dicom_json_values(item, "ModalitiesInStudy")),
            series_count=count("NumberOfStudyRelatedSeries"),
            instance_count=count("NumberOfStudyRelatedInstances"),
        )


@dataclass(frozen=True)
class SeriesSummary:
    """One QIDO-RS series match."""

    study_uid: str
    series_uid: str
    modality: str
    description: str
    number: int | None
    instance_count: int | None

    @classmethod
    def from_json(cls, item: Mapping[str, Any], study_uid: str) -> SeriesSummary:
        number = dicom_json_value(item, "SeriesNumber")
        count = dicom_json_value(item, "NumberOfSeriesRelatedInstances")
        return cls(
            study_uid=str(dicom_json_value(item, "StudyInstanceUID", study_uid)),
            series_uid=str(dicom_json_value(item, "SeriesInstanceUID", "")),
            modality=str(dicom_json_value(item, "Modality", "")),
            description=str(dicom_json_value(item, "SeriesDescription", "")),
            number=int(number) if number not in (None, "") else None,
            instance_count=int(count) if count not in (None, "") else None,
        )


@dataclass(frozen=True)
class SignedStudy:
    """A signed URL minted by :meth:`Client.sign`.

    Attributes
    ----------
    url : str
        The study's DICOMweb URL with ``?token=…`` (for a viewer or a colleague).
    token : str
        The study-scoped token itself.
    query : str
        ``token=…``, to append to any DICOMweb URL of the study.
    studies : tuple of str
        The studies it covers.
    expires_at : float
        Epoch seconds.
    base_url : str
        The platform the client that minted it talks to.
    """

    url: str
    token: str
    query: str
    studies: tuple[str, ...]
    expires_at: float
    base_url: str

    def __repr__(self) -> str:  # the token is a credential: keep it out of notebook output
        return f"SignedStudy(studies={self.studies}, expires_at={self.expires_at:.0f})"

    def connect(self, **kwargs: Any) -> Client:
        """A client that uses only this signed URL (see :func:`connect_signed`)."""
        from .session import signed_client

        return signed_client(self.base_url, self.token, **kwargs)
