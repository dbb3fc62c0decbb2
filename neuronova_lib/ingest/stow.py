"""The STOW-RS answer (PS3.18 §10.5) for a request's outcomes.

* ``200`` when every instance was stored, ``202`` when some were and others
  failed, ``409`` when none was;
* the body is a DICOM JSON dataset with ``ReferencedSOPSequence``
  (0008,1199) for the stored instances (each with its ``RetrieveURL``) and
  ``FailedSOPSequence`` (0008,1198) for the others, each with a
  ``FailureReason`` (0008,1197) from PS3.4 Annex GG's codes;
* the gate's reason code, which says more than the standard's few codes, goes
  in a ``Warning`` header per failed instance (PS3.18 §8.3.4, RFC 7234 §5.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .store import Outcome

#: PS3.4 GG.4 failure reasons.
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
SYNTAX_NOT_SUPPORTED = 0xC122

_FAILURE_REASON: dict[str, int] = {
    "too_large": OUT_OF_RESOURCES,
    "image_too_large": OUT_OF_RESOURCES,
    "checker_out_of_memory": OUT_OF_RESOURCES,
    "orthanc_unavailable": OUT_OF_RESOURCES,
    "sop_class_not_allowed": SOP_CLASS_NOT_SUPPORTED,
    "unsupported_syntax": SYNTAX_NOT_SUPPORTED,
    "sop_instance_conflict": DUPLICATE_SOP_INSTANCE,
    "series_instance_conflict": PROCESSING_FAILURE,
    "study_instance_conflict": PROCESSING_FAILURE,
    "reread_mismatch": PROCESSING_FAILURE,
    "orthanc_refused": PROCESSING_FAILURE,
    "checker_crashed": PROCESSING_FAILURE,
    "study_mismatch": DOES_NOT_MATCH_SOP_CLASS,
    "bad_uid": DOES_NOT_MATCH_SOP_CLASS,
    "no_patient_id": DOES_NOT_MATCH_SOP_CLASS,
    "no_pixel_data": DOES_NOT_MATCH_SOP_CLASS,
    "missing_attribute": DOES_NOT_MATCH_SOP_CLASS,
    "bad_dimensions": DOES_NOT_MATCH_SOP_CLASS,
    "bad_bits": DOES_NOT_MATCH_SOP_CLASS,
    "photometric_mismatch": DOES_NOT_MATCH_SOP_CLASS,
    "pixel_length_mismatch": DOES_NOT_MATCH_SOP_CLASS,
}


def failure_reason(reason: str | None) -> int:
    """The PS3.4 failure code for a gate reason (unparseable structure: ``0xC000``)."""
    return _FAILURE_REASON.get(reason or "", CANNOT_UNDERSTAND)


def _uid(value: str | None) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def retrieve_url(base: str, outcome: Outcome) -> str:
    return (f"{base}/studies/{outcome.study_uid}/series/{outcome.series_uid}"
            f"/instances/{outcome.sop_instance_uid}")


def stow_response(outcomes: Sequence[Outcome], base: str,
                  study: str | None = None) -> tuple[int, dict[str, Any], list[str]]:
    """``(status, DICOM JSON body, Warning header values)`` for a STOW-RS request.

    ``base`` is the public DICOMweb root (``.../api/pacs/dicom-web``); ``study``
    the study named in the URL, if any.
    """
    stored = [o for o in outcomes if o.stored]
    failed = [o for o in outcomes if not o.stored]
    body: dict[str, Any] = {}
    studies = {o.study_uid for o in stored}
    if study or len(studies) == 1:
        body["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{study or studies.pop()}"]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [
            {"00081150": _uid(o.sop_class_uid), "00081155": _uid(o.sop_instance_uid),
             "00081197": {"vr": "US", "Value": [failure_reason(o.reason)]}}
            for o in failed
        ]}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": [
            {"00081150": _uid(o.sop_class_uid), "00081155": _uid(o.sop_instance_uid),
             "00081190": {"vr": "UR", "Value": [retrieve_url(base, o)]}}
            for o in stored
        ]}
    status = 200 if not failed else (202 if stored else 409)
    warnings = [_warning(o) for o in failed]
    return status, body, warnings


def _warning(outcome: Outcome) -> str:
    who = outcome.sop_instance_uid or f"sha256:{outcome.sha256[:16]}"
    text = f"{who}: {outcome.reason}: {outcome.message}"
    # A quoted-string: no quotes, backslashes or control characters; kept short.
    clean = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else " " for c in text)
    return f'299 neuronova "{clean[:300]}"'
