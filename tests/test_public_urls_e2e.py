"""Every URL Orthanc writes into a DICOMweb answer is the platform's public one.

Orthanc's DICOMweb plugin writes absolute URLs into QIDO answers (RetrieveURL,
0008,1190) and metadata (BulkDataURI). Built from its own address they would
read ``http://127.0.0.1:ORTHANC_PORT/dicom-web/…``: no client can follow them,
and they show the platform's insides. nginx tells it the public root instead
(``Forwarded``, see ``neuronova_lib.stack.render.orthanc_forwarded``). Here,
against the real stack: no answer carries anything but
``{NEURONOVA_PUBLIC_URL}/api/pacs/dicom-web/…``, each such URL can be followed
through nginx and the guard with the token that fetched it (a signed URL's
client appends its ``token=`` itself, as dicomweb-client does with session
parameters), a client's own forwarding headers change nothing, and with
``NEURONOVA_PUBLIC_URL`` set, Orthanc's URLs and STOW-RS's agree.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient
from pydicom.data import get_testdata_file

from neuronova_lib.security.tokens import token_service
from neuronova_lib.stack.local import local_platform
from neuronova_lib.wado import multipart_body, split_multipart

pytestmark = pytest.mark.e2e

PREFIX = "/api/pacs/dicom-web"
JSON = {"Accept": "application/dicom+json"}
_URL = re.compile(rb"https?://[^\"'\s\\<>]+")
#: What to ask for when following a URL Orthanc wrote: bulk data, or a whole resource.
_BULK_ACCEPT = 'multipart/related; type="application/octet-stream"'
_DICOM_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def _urls(body: bytes) -> list[str]:
    return sorted({url.decode() for url in _URL.findall(body)})


def leaks(settings: Any, answer: requests.Response) -> list[str]:
    """What in an answer (headers, body, multipart part headers) is not the public root."""
    head = "\n".join(f"{k}: {v}" for k, v in answer.headers.items()).encode()
    text = head + b"\n" + answer.content
    public = settings.public_dicomweb_url + "/"
    found = [f"URL {url}" for url in _urls(text) if not url.startswith(public)]
    for needle in (f":{settings.orthanc_port}", "internal-orthanc", "/neuronova/dicom-web"):
        if needle.encode() in text:
            found.append(needle)
    for match in re.finditer(rb"/dicom-web/", text):
        if text[max(0, match.start() - 9):match.start()] != b"/api/pacs":
            found.append(text[max(0, match.start() - 40):match.end() + 20].decode("latin-1"))
    return found


def _resource_paths(ref: Any) -> dict[str, str]:
    """QIDO at every level and metadata at every level, for one stored instance."""
    st, se, sop = ref.study, ref.series, ref.instance
    return {
        "studies": "studies",
        "studies-filtered": f"studies?StudyInstanceUID={st}&includefield=all",
        "series": "series",
        "study-series": f"studies/{st}/series",
        "instances": "instances",
        "study-instances": f"studies/{st}/instances",
        "series-instances": f"studies/{st}/series/{se}/instances",
        "study-metadata": f"studies/{st}/metadata",
        "series-metadata": f"studies/{st}/series/{se}/metadata",
        "instance-metadata": f"studies/{st}/series/{se}/instances/{sop}/metadata",
    }


def _get(url: str, headers: dict[str, str], token_query: str = "") -> requests.Response:
    if token_query:
        url += ("&" if "?" in url else "?") + token_query
    return requests.get(url, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def bearer(platform: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {platform.access_token('clinician', ttl=900)}"}


@pytest.mark.parametrize("name", ["studies", "studies-filtered", "series", "study-series",
                                  "instances", "study-instances", "series-instances",
                                  "study-metadata", "series-metadata", "instance-metadata"])
def test_qido_and_metadata_carry_only_public_urls(platform: Any, bearer: dict[str, str],
                                                  name: str) -> None:
    path = _resource_paths(platform.study_a)[name]
    answer = requests.get(f"{platform.url}{PREFIX}/{path}", headers={**bearer, **JSON},
                          timeout=30)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json(), f"{name}: empty answer"
    assert _urls(answer.content), f"{name}: Orthanc wrote no URL; nothing was checked"
    assert leaks(platform.settings, answer) == []


def test_every_url_written_follows_through_nginx_with_the_same_token(
        platform: Any, bearer: dict[str, str]) -> None:
    """RetrieveURLs at every level and every BulkDataURI: 200, nothing internal either."""
    ref = platform.study_a
    written: set[str] = set()
    for path in _resource_paths(ref).values():
        answer = requests.get(f"{platform.url}{PREFIX}/{path}", headers={**bearer, **JSON},
                              timeout=30)
        written.update(url for url in _urls(answer.content) if ref.study in url)
    public = platform.settings.public_dicomweb_url
    expected = {f"{public}/studies/{ref.study}",
                f"{public}/studies/{ref.study}/series/{ref.series}",
                f"{public}/studies/{ref.study}/series/{ref.series}/instances/{ref.instance}",
                f"{public}/studies/{ref.study}/series/{ref.series}/instances/{ref.instance}"
                "/bulk/7fe00010"}
    assert expected <= written
    pixels = pydicom.dcmread(get_testdata_file("MR_small.dcm")).PixelData
    for url in sorted(written):
        bulk = "/bulk/" in url
        answer = _get(url, {**bearer, "Accept": _BULK_ACCEPT if bulk else _DICOM_ACCEPT})
        assert answer.status_code == 200, (url, answer.status_code, answer.text[:200])
        assert leaks(platform.settings, answer) == [], url
        parts = split_multipart(answer.content)
        assert parts, url
        if url.endswith("/bulk/7fe00010"):
            assert [body for _, body in parts] == [pixels]


def test_frames_and_instances_carry_no_internal_url(platform: Any, bearer: dict[str, str]) -> None:
    """Answers the URL header does not shape (served by the WADO plugin, or by Orthanc's
    DICOMweb plugin): not one internal address in their headers or part headers."""
    ref = platform.study_a
    instance = f"{PREFIX}/studies/{ref.study}/series/{ref.series}/instances/{ref.instance}"
    for path, accept in ((ref.frame_path(1), "multipart/related; type=\"application/octet-stream\"; "
                                             "transfer-syntax=*"),
                         (instance, _DICOM_ACCEPT),
                         (f"{PREFIX}/studies/{ref.study}", _DICOM_ACCEPT),
                         (f"{instance}/rendered", "image/jpeg")):
        answer = requests.get(f"{platform.url}{path}", headers={**bearer, "Accept": accept},
                              timeout=30)
        assert answer.status_code == 200, (path, answer.text[:200])
        assert leaks(platform.settings, answer) == [], path


def test_a_client_cannot_choose_the_urls(platform: Any, bearer: dict[str, str]) -> None:
    """Forwarding headers sent by a client are replaced, not passed on to Orthanc."""
    ref = platform.study_a
    spoof = {"Forwarded": "host=evil.example/x;proto=https", "X-Forwarded-Host": "evil.example",
             "X-Forwarded-Proto": "https", "X-Forwarded-Prefix": "/x", "Host": "evil.example"}
    for path in (f"studies?StudyInstanceUID={ref.study}",
                 f"studies/{ref.study}/series/{ref.series}/metadata"):
        answer = requests.get(f"{platform.url}{PREFIX}/{path}",
                              headers={**bearer, **JSON, **spoof}, timeout=30)
        assert answer.status_code == 200, answer.text[:300]
        assert b"evil" not in answer.content
        assert _urls(answer.content) and leaks(platform.settings, answer) == []


def test_dicomweb_client_follows_bulk_data_uris_with_a_signed_url(platform: Any,
                                                                  bearer: dict[str, str]) -> None:
    """A signed URL's token is a query parameter no answer carries: dicomweb-client appends
    it to every request itself (session parameters), BulkDataURIs and RetrieveURLs too."""
    ref = platform.study_a
    signed = requests.post(f"{platform.url}/api/pacs/sign", headers=bearer,
                           json={"study_uid": ref.study, "ttl_seconds": 600}, timeout=10)
    assert signed.status_code == 200, signed.text
    token = signed.json()["token"]
    session = requests.Session()
    session.params = {"token": token}
    client = DICOMwebClient(platform.settings.public_dicomweb_url, session=session)
    [series] = client.search_for_series(ref.study)
    retrieve_url = series["00081190"]["Value"][0]
    assert retrieve_url == f"{platform.settings.public_dicomweb_url}/studies/{ref.study}/series/{ref.series}"
    metadata = client.retrieve_instance_metadata(ref.study, ref.series, ref.instance)
    assert token not in json.dumps(metadata)
    [data] = client.retrieve_bulkdata(metadata["7FE00010"]["BulkDataURI"])
    assert data == pydicom.dcmread(get_testdata_file("MR_small.dcm")).PixelData
    # The RetrieveURL, followed as a stock client would: with the token it appends.
    followed = _get(retrieve_url + "/metadata", JSON, signed.json()["query"])
    assert followed.status_code == 200 and leaks(platform.settings, followed) == []
    # Without it, the URL alone opens nothing.
    assert _get(retrieve_url + "/metadata", JSON).status_code == 401


def test_with_a_public_url_orthanc_and_stow_agree(tmp_path: Path) -> None:
    """NEURONOVA_PUBLIC_URL behind TLS and a path prefix: Orthanc's QIDO RetrieveURLs and
    BulkDataURIs start with it and equal what STOW-RS answered for the same instance."""
    from bad_inputs import good_mr

    public = "https://pacs.example.org/neuronova"
    with local_platform(tmp_path / "home", public_url=public + "/",
                        mlflow_enabled=False) as local:
        settings = local.settings
        assert settings.public_dicomweb_url == f"{public}{PREFIX}"
        admin, _ = token_service(settings).mint("admin", "admin", "access", 300)
        auth = {"Authorization": f"Bearer {admin}"}
        body, content_type = multipart_body([(good_mr(3), None)], "application/dicom")
        stored = requests.post(f"{local.url}{PREFIX}/studies", data=body, timeout=120,
                               headers={**auth, **JSON, "Content-Type": content_type})
        assert stored.status_code == 200, stored.text
        stow_study = stored.json()["00081190"]["Value"][0]
        stow_instance = stored.json()["00081199"]["Value"][0]["00081190"]["Value"][0]
        study = stow_study.rsplit("/", 1)[1]

        def qido(path: str) -> requests.Response:
            answer = requests.get(f"{local.url}{PREFIX}/{path}", headers={**auth, **JSON},
                                  timeout=30)
            assert answer.status_code == 200, answer.text[:300]
            assert leaks(settings, answer) == []
            return answer

        [found] = qido(f"studies?StudyInstanceUID={study}").json()
        assert found["00081190"]["Value"] == [stow_study]
        [instance] = qido(f"studies/{study}/instances").json()
        assert instance["00081190"]["Value"] == [stow_instance]
        [metadata] = qido(stow_instance.removeprefix(settings.public_dicomweb_url + "/")
                          + "/metadata").json()
        bulk = metadata["7FE00010"]["BulkDataURI"]
        assert bulk == f"{stow_instance}/bulk/7fe00010"
        # Each is the public address of the resource: the local twin answers it.
        for url, accept in ((stow_study, _DICOM_ACCEPT), (bulk, _BULK_ACCEPT)):
            twin = url.replace(public, local.url)
            assert _get(twin, {**auth, "Accept": accept}).status_code == 200, url
