"""Find UIDs an existing Orthanc holds more than once (``neuronova check uids``).

An archive filled before the platform checked UIDs (or through Orthanc's own
routes) may hold one SOP Instance UID as two instances — under two patients
or studies, when WADO-RS answers 404 for both — or one series or study UID
under two owners. This walks Orthanc's resource lists (expanded, a page at a
time: one pass over the index, never a file) and reports every such UID with
the Orthanc identifiers of each copy and how to repair it: keep one copy,
save and delete the others, then send the saved objects again, each under a
UID of its own, through the platform (which now refuses a UID held twice).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

_PAGE = 1000


def _pages(store: Any, level: str) -> Iterator[dict[str, Any]]:
    since = 0
    while True:
        chunk = store.get_json(f"/{level}?expand&since={since}&limit={_PAGE}")
        yield from chunk
        if len(chunk) < _PAGE:
            return
        since += _PAGE


def duplicate_uids(store: Any) -> dict[str, Any]:
    """Every SOP Instance, Series Instance and Study Instance UID held more than once.

    Parameters
    ----------
    store : OrthancStore
        The archive, with the platform's service account.

    Returns
    -------
    dict
        ``{"instances": [...], "series": [...], "studies": [...], "counts": {...},
        "repair": str}``; each entry names the UID and its copies (Orthanc ID,
        patient, study, series) and says what to do.
    """
    studies: dict[str, dict[str, str]] = {}
    by_study_uid: dict[str, list[str]] = defaultdict(list)
    for item in _pages(store, "studies"):
        uid = str(item.get("MainDicomTags", {}).get("StudyInstanceUID", ""))
        patient = str(item.get("PatientMainDicomTags", {}).get("PatientID", ""))
        studies[item["ID"]] = {"study_uid": uid, "patient_id": patient}
        by_study_uid[uid].append(item["ID"])
    series: dict[str, dict[str, str]] = {}
    by_series_uid: dict[str, list[str]] = defaultdict(list)
    for item in _pages(store, "series"):
        uid = str(item.get("MainDicomTags", {}).get("SeriesInstanceUID", ""))
        owner = studies.get(str(item.get("ParentStudy")), {})
        series[item["ID"]] = {"series_uid": uid, **owner}
        by_series_uid[uid].append(item["ID"])
    by_sop: dict[str, list[dict[str, str]]] = defaultdict(list)
    count = 0
    for item in _pages(store, "instances"):
        count += 1
        uid = str(item.get("MainDicomTags", {}).get("SOPInstanceUID", ""))
        by_sop[uid].append({"orthanc_id": item["ID"],
                            **series.get(str(item.get("ParentSeries")), {})})

    instances = [
        {"sop_instance_uid": uid, "copies": copies,
         "repair": ("keep the copy that belongs; save each other one "
                    "(GET /instances/{id}/file) and delete it from Orthanc "
                    "(DELETE /instances/{id}), then send the saved object again with a new "
                    "SOP Instance UID. Orthanc IDs: " + ", ".join(c["orthanc_id"] for c in copies))}
        for uid, copies in sorted(by_sop.items()) if len(copies) > 1
    ]
    series_out = [
        {"series_instance_uid": uid,
         "copies": [{"orthanc_id": sid, **series[sid]} for sid in ids],
         "repair": ("one series UID under several studies or patients: keep one; save and "
                    "delete the others (DELETE /series/{id}), then send them again with a new "
                    "Series Instance UID. Orthanc IDs: " + ", ".join(ids))}
        for uid, ids in sorted(by_series_uid.items()) if len(ids) > 1
    ]
    studies_out = [
        {"study_instance_uid": uid,
         "copies": [{"orthanc_id": sid, **studies[sid]} for sid in ids],
         "repair": ("one study UID under several patients: keep one; save and delete the "
                    "others (DELETE /studies/{id}), then send them again with a new Study "
                    "Instance UID. Orthanc IDs: " + ", ".join(ids))}
        for uid, ids in sorted(by_study_uid.items()) if len(ids) > 1
    ]
    return {
        "counts": {"instances_checked": count, "series_checked": len(series),
                   "studies_checked": len(studies), "sop_instance_uids_held_twice": len(instances),
                   "series_instance_uids_held_twice": len(series_out),
                   "study_instance_uids_held_twice": len(studies_out)},
        "instances": instances, "series": series_out, "studies": studies_out,
        "repair": ("For each UID held more than once, decide which copy is right (compare "
                   "them: GET /instances/{id}/file on Orthanc with the service account). Save "
                   "the others, delete them from Orthanc, and send them again through the "
                   "platform (STOW-RS, upload or `neuronova transcode`) after giving each its "
                   "own UID; the platform then refuses any UID already held "
                   "(sop_instance_conflict)."),
    }


def readable(report: dict[str, Any]) -> str:
    """The report as lines for a terminal."""
    counts = report["counts"]
    lines = [f"checked {counts['instances_checked']} instances, {counts['series_checked']} "
             f"series, {counts['studies_checked']} studies"]
    for key, label, field in (("instances", "SOP Instance UID", "sop_instance_uid"),
                              ("series", "Series Instance UID", "series_instance_uid"),
                              ("studies", "Study Instance UID", "study_instance_uid")):
        for entry in report[key]:
            lines.append(f"{label} {entry[field]} is held {len(entry['copies'])} times:")
            for copy in entry["copies"]:
                where = ", ".join(f"{k} {v}" for k, v in copy.items() if k != "orthanc_id")
                lines.append(f"  Orthanc {copy['orthanc_id']}  ({where})")
            lines.append(f"  repair: {entry['repair']}")
    total = sum(len(report[k]) for k in ("instances", "series", "studies"))
    if total:
        lines.append(f"{total} UID(s) held more than once. {report['repair']}")
    else:
        lines.append("no UID is held more than once")
    return "\n".join(lines)
