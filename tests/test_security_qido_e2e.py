"""A study-scoped token on QIDO-RS, against the real nginx, guard and Orthanc.

Orthanc 1.10 drops a query key it cannot parse (a keyword in the wrong case, a
key with a space) and keeps the last of repeated keys; before the guard read
keys exactly, ``?studyinstanceuid=A`` with a token for study A listed every
study. Each case here runs at the studies, series and instances levels, with a
bearer token scoped to study A and with a signed URL for A, and checks the
answer's content: no UID of study B anywhere in the body.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from test_security_e2e import Answer, assert_refused, bearer, orthanc_was_reached, send

pytestmark = pytest.mark.e2e

LEVELS = ("studies", "series", "instances")


@pytest.fixture(scope="module", params=["bearer", "signed"])
def scoped(request: pytest.FixtureRequest, platform: Any) -> tuple[dict[str, str], str]:
    """(headers, query suffix) for study A: a scoped bearer token, or a signed URL from the API."""
    a = platform.study_a.study
    if request.param == "bearer":
        return bearer(platform.access_token("clinician", studies=[a])), ""
    signed = requests.post(f"{platform.url}/api/pacs/sign",
                           headers=bearer(platform.access_token("clinician")),
                           json={"study_uid": a, "ttl_seconds": 600}, timeout=10)
    assert signed.status_code == 200, signed.text
    return {}, "&" + signed.json()["query"]


def search(platform: Any, path: str, query: str, scoped: tuple[dict[str, str], str]) -> Answer:
    headers, suffix = scoped
    target = f"/api/pacs/dicom-web/{path}?{query}{suffix}".replace("?&", "?")
    return send(platform, "GET", target, {**headers, "Accept": "application/dicom+json"})


def assert_only_study_a(platform: Any, answer: Answer, level: str) -> None:
    """200, at least one match, every match in study A, and not one UID of study B in the body."""
    a, b = platform.study_a, platform.study_b
    assert answer.status == 200, (answer.status, answer.body[:300])
    items = answer.json()
    assert items, f"{level}: study A's own {level} are missing"
    assert {item["0020000D"]["Value"][0] for item in items} == {a.study}
    for uid in (b.study, b.series, b.instance):
        assert uid.encode() not in answer.body, f"{level}: study B's {uid} leaked"


def assert_refused_cleanly(platform: Any, answer: Answer, status: int, reason: str) -> None:
    b = platform.study_b
    assert_refused(platform, answer, status, reason)
    for uid in (b.series, b.instance):
        assert uid.encode() not in answer.body


# The spellings that listed every study before: Orthanc drops them, so the guard refuses them.
DROPPED_BY_ORTHANC = [
    "studyinstanceuid", "STUDYINSTANCEUID", "studyInstanceUID", "StudyInstanceUid",
    "StudyInstanceUID%20", "%20StudyInstanceUID", "StudyInstanceUID+", "Study+InstanceUID",
    "Study%2549nstanceUID", "(0020,000D)", "x0020000D", "20000D",
]
# The spellings Orthanc reads as the study filter: the guard reads them the same way.
STUDY_FILTER = ["StudyInstanceUID", "0020000D", "0020000d", "Study%49nstanceUID",
                "%30%30%32%30%30%30%30%44"]


@pytest.mark.parametrize("level", LEVELS)
def test_misspelt_study_filters_are_refused_before_orthanc(platform: Any, scoped: Any,
                                                           level: str) -> None:
    a = platform.study_a.study
    for key in DROPPED_BY_ORTHANC:
        answer = search(platform, level, f"{key}={a}&includefield=all", scoped)
        assert_refused_cleanly(platform, answer, 400, "unknown_query_key")
    for key in ("RequestAttributesSequence.ScheduledProcedureStepID", "00400275.00400009"):
        answer = search(platform, level, f"{key}=x", scoped)
        assert_refused_cleanly(platform, answer, 400, "unsupported_query_key")
    for key in ("Limit", "LIMIT", "Offset", "IncludeField", "fuzzyMatching"):
        answer = search(platform, level, f"{key}=1", scoped)
        assert_refused_cleanly(platform, answer, 400, "unknown_query_key")


@pytest.mark.parametrize("level", LEVELS)
def test_every_spelling_of_the_study_filter_stays_in_scope(platform: Any, scoped: Any,
                                                           level: str) -> None:
    a, b = platform.study_a.study, platform.study_b.study
    for key in STUDY_FILTER:
        assert_only_study_a(platform, search(platform, level, f"{key}={a}&includefield=all",
                                             scoped), level)
        for value in (b, f"{a},{b}", f"{b}%2C{a}"):
            answer = search(platform, level, f"{key}={value}&includefield=all", scoped)
            assert_refused_cleanly(platform, answer, 403, "scope")


@pytest.mark.parametrize("level", LEVELS)
def test_repeated_study_filters_are_refused(platform: Any, scoped: Any, level: str) -> None:
    """Orthanc keeps the last of repeated keys: A then B would have searched B."""
    a, b = platform.study_a.study, platform.study_b.study
    for query in (f"StudyInstanceUID={a}&StudyInstanceUID={b}", f"StudyInstanceUID={a}&0020000D={b}",
                  f"0020000D={a}&0020000d={b}", f"StudyInstanceUID={a}&StudyInstanceUID={a}",
                  f"PatientName=*&00100010={platform.study_b.study}"):
        assert_refused_cleanly(platform, search(platform, level, query, scoped), 400,
                               "ambiguous_query")


@pytest.mark.parametrize("level", LEVELS)
def test_queries_without_a_study_filter_are_bounded_by_the_scope(platform: Any, scoped: Any,
                                                                 level: str) -> None:
    b = platform.study_b
    for query in ("", "includefield=all", "StudyInstanceUID=", "PatientName=*&limit=1000",
                  "fuzzymatching=true&includefield=all", "offset=0&limit=100"):
        assert_only_study_a(platform, search(platform, level, query, scoped), level)
    # Filters that name only study B's series or instance find nothing, not B.
    for query in (f"SeriesInstanceUID={b.series}", f"0020000E={b.series}",
                  f"SOPInstanceUID={b.instance}", "Modality=CT"):
        answer = search(platform, level, f"{query}&includefield=all", scoped)
        assert answer.status == 200 and answer.json() == [], (level, query, answer.body[:200])


def test_filters_under_a_study_path(platform: Any, scoped: Any) -> None:
    a, b = platform.study_a, platform.study_b
    for path in (f"studies/{a.study}/series", f"studies/{a.study}/instances",
                 f"studies/{a.study}/series/{a.series}/instances"):
        assert_only_study_a(platform, search(platform, path, f"StudyInstanceUID={a.study}", scoped), path)
        assert_only_study_a(platform, search(platform, path, "includefield=all", scoped), path)
        for key in STUDY_FILTER:
            assert_refused_cleanly(platform, search(platform, path, f"{key}={b.study}", scoped),
                                   403, "scope")
        for key in DROPPED_BY_ORTHANC[:4]:
            assert_refused_cleanly(platform, search(platform, path, f"{key}={b.study}", scoped),
                                   400, "unknown_query_key")


def test_the_audit_row_of_a_search_holds_its_query(platform: Any, scoped: Any) -> None:
    a, b = platform.study_a.study, platform.study_b.study
    answer = search(platform, "series", "PatientName=*&includefield=all", scoped)
    assert answer.status == 200
    record = platform.wait_for_audit(answer.request_id)
    assert record["decision"] == "allow" and record["study"] == a
    assert record["detail"] == f"query: 00100010=*&includefield=all&0020000D={a}"
    assert "token" not in record["detail"] and "eyJ" not in record["detail"]
    denied = search(platform, "studies", f"StudyInstanceUID={b}", scoped)
    record = platform.wait_for_audit(denied.request_id)
    assert record["reason"] == "scope" and f"0020000D={b}" in record["detail"]
    assert "eyJ" not in record["detail"]


# -- an unscoped token: Orthanc reads each allowed key as the guard does -----------------------
FILTERS = {"PatientID": "00100020", "StudyInstanceUID": "0020000D", "StudyDate": "00080020",
           "SeriesInstanceUID": "0020000E", "SOPInstanceUID": "00080018"}
UID_FILTERS = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"}


@pytest.mark.parametrize("level", LEVELS)
def test_keyword_and_tag_filter_alike_in_orthanc(platform: Any, level: str) -> None:
    """Each filter is honoured, never dropped: keyword and tag find the same, and never B.

    Orthanc matches an attribute of a lower level (a series UID in a study search)
    with nothing; an attribute of the level or above finds study A.
    """
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"), stop_before_pixels=True)
    admin = {**bearer(platform.access_token("admin")), "Accept": "application/dicom+json"}
    everything = send(platform, "GET", f"/api/pacs/dicom-web/{level}", admin)
    assert {i["0020000D"]["Value"][0] for i in everything.json()} >= {
        platform.study_a.study, platform.study_b.study}
    filters = {keyword: (tag, str(ds.data_element(keyword).value))
               for keyword, tag in FILTERS.items()}
    # Modality is a series attribute; a study is found by ModalitiesInStudy.
    filters["ModalitiesInStudy" if level == "studies" else "Modality"] = (
        "00080061" if level == "studies" else "00080060", "MR")
    lower = {"studies": {"SeriesInstanceUID", "SOPInstanceUID"}, "series": {"SOPInstanceUID"},
             "instances": set()}[level]
    for keyword, (tag, value) in filters.items():
        found = []
        for key in (keyword, tag, tag.lower()):
            answer = send(platform, "GET", f"/api/pacs/dicom-web/{level}?{key}={value}", admin)
            assert answer.status == 200, (key, answer.body[:200])
            assert orthanc_was_reached(platform, answer)
            found.append({i["0020000D"]["Value"][0] for i in answer.json()})
        # Keyword, tag and lower-case tag: one filter, one answer.
        assert found[0] == found[1] == found[2], (keyword, found)
        if keyword in lower:
            assert found[0] == set(), (keyword, found)
        elif keyword in UID_FILTERS:
            assert found[0] == {platform.study_a.study}, (keyword, found)
        else:
            # The session's platform gathers other tests' studies (some made from the same
            # MR_small file): this filter finds study A and never study B (CT_small).
            assert platform.study_a.study in found[0], (keyword, found)
            assert platform.study_b.study not in found[0], (keyword, found)
