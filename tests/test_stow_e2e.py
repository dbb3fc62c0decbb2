"""STOW-RS through nginx, the guard's auth_request and the API's ingest gate, into a real Orthanc.

Every FINDINGS bad-input class is refused with its reason (a FailedSOPSequence
entry and a Warning header), quarantined and never stored; good instances in the
same request are stored; Orthanc is alive afterwards.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import pydicom
import pytest
import requests
from bad_inputs import bad_inputs, dicom_bytes, good_mr, mr

from neuronova_lib.ingest import Quarantine
from neuronova_lib.ingest.stow import (
    CANNOT_UNDERSTAND,
    DOES_NOT_MATCH_SOP_CLASS,
    DUPLICATE_SOP_INSTANCE,
    OUT_OF_RESOURCES,
)
from neuronova_lib.wado import multipart_body

STOW = "/api/pacs/dicom-web/studies"

pytestmark = pytest.mark.e2e  # the session platform: Orthanc, nginx, guard, API
FAILED, REFERENCED, RETRIEVE_URL = "00081198", "00081199", "00081190"


def stow(platform: Any, files: list[bytes], *, role: str = "admin", path: str = STOW,
         token: str | None = None) -> requests.Response:
    body, content_type = multipart_body([(data, None) for data in files], "application/dicom")
    token = token if token is not None else platform.login(role)
    headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(f"{platform.url}{path}", data=body, headers=headers, timeout=300)


def uid_of(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def last_change(platform: Any) -> int:
    return int(platform.store.get_json("/changes?last")["Last"])


def new_instances_since(platform: Any, mark: int) -> list[str]:
    changes = platform.store.get_json(f"/changes?since={mark}&limit=1000")["Changes"]
    return [c["ID"] for c in changes if c["ChangeType"] == "NewInstance"]


def failed_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    return list(body.get(FAILED, {}).get("Value", []))


def referenced_uids(body: dict[str, Any]) -> list[str]:
    return [item["00081155"]["Value"][0] for item in body.get(REFERENCED, {}).get("Value", [])]


def warnings_of(response: requests.Response) -> list[str]:
    return list(response.raw.headers.getlist("Warning"))


def audit_row(platform: Any, response: requests.Response, service: str,
              timeout: float = 5.0) -> dict[str, Any]:
    return platform.wait_for_audit(response.headers["X-Request-ID"], timeout, service)


def test_each_bad_input_class_refused_good_ones_beside_them_stored(platform: Any) -> None:
    cases = bad_inputs()
    good = [good_mr(0), good_mr(1)]
    files = [data for data, _ in cases.values()] + good
    stored_a = platform.store.instance_file(platform.store.find_instance(platform.study_a.instance))
    mark = last_change(platform)

    response = stow(platform, files)

    assert response.status_code == 202, response.text
    assert response.headers["Content-Type"].startswith("application/dicom+json")
    body = response.json()
    assert sorted(referenced_uids(body)) == sorted(uid_of(g) for g in good)
    failures = failed_items(body)
    assert len(failures) == len(cases)
    codes = {item["00081197"]["Value"][0] for item in failures}
    assert codes <= {CANNOT_UNDERSTAND, DOES_NOT_MATCH_SOP_CLASS, OUT_OF_RESOURCES}
    # The gate's own reason for each, in a Warning header.
    text = " ".join(warnings_of(response))
    for name, (_, reason) in cases.items():
        assert f": {reason}: " in text, (name, reason, text)
    # Only the good instances reached Orthanc; the stored MR_small (same UIDs as the bad
    # files) is untouched; every bad file is in quarantine with who sent it and how.
    assert len(new_instances_since(platform, mark)) == len(good)
    for data in good:
        iid = platform.store.find_instance(uid_of(data))
        assert iid is not None and platform.store.instance_file(iid) == data
    assert platform.store.instance_file(
        platform.store.find_instance(platform.study_a.instance)) == stored_a
    quarantine = Quarantine(platform.settings)
    for name, (data, reason) in cases.items():
        entry = quarantine.get(hashlib.sha256(data).hexdigest())
        assert entry is not None, name
        assert {"reason": reason, "sender": "admin", "route": "stow"}.items() <= \
            entry.submissions[-1].items()
    assert platform.store.get_json("/system")["Version"]
    assert audit_row(platform, response, "proxy")["reason"] == "stow_authorized"
    row = audit_row(platform, response, "api")
    assert (row["decision"], row["status"], row["reason"]) == ("allow", 202, "stow")
    assert f"stored 2 of {len(files)}" in row["detail"] and "nesting_too_deep" in row["detail"]


def test_all_good_is_200_with_retrieve_urls_that_work(platform: Any) -> None:
    files = [good_mr(i) for i in range(3)]
    response = stow(platform, files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert FAILED not in body
    urls = [item[RETRIEVE_URL]["Value"][0] for item in body[REFERENCED]["Value"]]
    assert len(urls) == 3 and all(u.startswith(f"{platform.url}/api/pacs/dicom-web/studies/")
                                  for u in urls)
    token = platform.login("clinician")
    fetched = requests.get(urls[0] + "/metadata", headers={"Authorization": f"Bearer {token}"},
                           timeout=30)
    assert fetched.status_code == 200


def test_all_refused_is_409(platform: Any) -> None:
    data, reason = bad_inputs()["nested_48"]
    response = stow(platform, [data])
    assert response.status_code == 409
    (item,) = failed_items(response.json())
    assert item["00081197"]["Value"] == [CANNOT_UNDERSTAND]
    assert f": {reason}: " in warnings_of(response)[0]
    assert audit_row(platform, response, "api")["decision"] == "deny"


def test_same_uid_other_content_is_a_conflict_and_the_stored_copy_stays(platform: Any) -> None:
    original = good_mr(7)
    assert stow(platform, [original]).status_code == 200
    again = stow(platform, [original])  # the same instance again: harmless
    assert again.status_code == 200
    ds = pydicom.dcmread(io.BytesIO(original))
    ds.PatientName = "Someone^Else"
    changed = dicom_bytes(ds)

    response = stow(platform, [changed])

    assert response.status_code == 409
    (item,) = failed_items(response.json())
    assert item["00081197"]["Value"] == [DUPLICATE_SOP_INSTANCE]
    assert item["00081155"]["Value"] == [uid_of(original)]
    assert "sop_instance_conflict" in warnings_of(response)[0]
    iid = platform.store.find_instance(uid_of(original))
    assert platform.store.instance_file(iid) == original
    entry = Quarantine(platform.settings).get(hashlib.sha256(changed).hexdigest())
    assert entry is not None and entry.reason == "sop_instance_conflict"


def test_stow_into_a_study_refuses_instances_of_another(platform: Any) -> None:
    data = good_mr(3)
    other = pydicom.uid.generate_uid()
    response = stow(platform, [data], path=f"{STOW}/{other}")
    assert response.status_code == 409
    (item,) = failed_items(response.json())
    assert item["00081197"]["Value"] == [DOES_NOT_MATCH_SOP_CLASS]
    assert platform.store.find_instance(uid_of(data)) is None
    study = pydicom.dcmread(io.BytesIO(data)).StudyInstanceUID
    assert stow(platform, [data], path=f"{STOW}/{study}").status_code == 200


@pytest.mark.parametrize(("role", "token_kind", "status", "reason"), [
    ("clinician", "bearer", 403, "role"),
    ("scientist", "bearer", 403, "role"),
    ("admin", "none", 401, "no_token"),
    ("admin", "garbage", 401, None),
])
def test_who_may_not_store_is_refused_before_the_body_is_read(
    platform: Any, role: str, token_kind: str, status: int, reason: str | None
) -> None:
    token = {"bearer": None, "none": "", "garbage": "not.a.jwt"}[token_kind]
    data = good_mr(11)
    response = stow(platform, [data], role=role, token=token)
    assert response.status_code == status
    row = audit_row(platform, response, "proxy")
    assert row["decision"] == "deny"
    with pytest.raises(AssertionError):  # the API never saw the request
        audit_row(platform, response, "api", timeout=0.5)
    if reason:
        assert row["reason"] == reason
    assert platform.store.find_instance(uid_of(data)) is None


def test_signed_url_may_not_store(platform: Any) -> None:
    token = platform.tokens.mint("admin", "admin", "signed", 60,
                                 studies=[platform.study_a.study])[0]
    body, content_type = multipart_body([(good_mr(12), None)], "application/dicom")
    response = requests.post(f"{platform.url}{STOW}/{platform.study_a.study}?token={token}",
                             data=body, headers={"Content-Type": content_type}, timeout=60)
    assert response.status_code == 403
    assert audit_row(platform, response, "proxy")["reason"] == "signed_url_stow"


def test_wrong_media_type_and_stray_bodies(platform: Any) -> None:
    token = platform.login("admin")
    response = requests.post(f"{platform.url}{STOW}", data=good_mr(13),
                             headers={"Authorization": f"Bearer {token}",
                                      "Content-Type": "application/dicom"}, timeout=60)
    assert response.status_code == 415
    assert audit_row(platform, response, "api")["reason"] == "media_type"
    # A body on anything but POST is refused before it is read.
    response = requests.get(f"{platform.url}{STOW}", data=b"x" * 1000,
                            headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert response.status_code == 413


def test_stow_of_a_file_built_from_mr_small_keeps_working_after_refusals(platform: Any) -> None:
    """The gate's workers survive refusals: a good file after bad ones is still stored."""
    bad = [data for data, _ in bad_inputs().values()]
    assert stow(platform, bad).status_code == 409
    ds = mr()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    assert stow(platform, [dicom_bytes(ds)]).status_code == 200
