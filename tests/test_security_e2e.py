"""Attacks on the secure imaging path, against the real nginx, guard, API and Orthanc.

Every refusal is checked three ways: the status the client gets, the audit
record that says why (joined by nginx's request id), and nginx's access log
showing that no request went upstream to Orthanc.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from neuronova_lib.security.keyring import KeyRing

pytestmark = pytest.mark.e2e


# -- helpers -------------------------------------------------------------------------------
class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body

    @property
    def request_id(self) -> str:
        return self.headers["x-request-id"]

    def json(self) -> Any:
        return json.loads(self.body)


def send(platform: Any, method: str, target: str,
         headers: dict[str, str] | list[tuple[str, str]] | None = None,
         body: bytes | None = None, port: int | None = None) -> Answer:
    """One request with the target exactly as given (no client-side normalisation).

    ``headers`` as a list of pairs may repeat a name; ``port`` reaches a service's own
    port instead of nginx's.
    """
    parts = urlsplit(platform.url)
    conn = http.client.HTTPConnection(parts.hostname, port or parts.port, timeout=30)
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in pairs:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return Answer(response.status, dict(response.getheaders()), response.read())
    finally:
        conn.close()


def send_raw(platform: Any, data: bytes) -> bytes:
    parts = urlsplit(platform.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def orthanc_was_reached(platform: Any, answer: Answer) -> bool:
    entry = platform.nginx_log_entry(answer.request_id)
    return f":{platform.settings.orthanc_port}" in entry["upstream"]


def assert_refused(platform: Any, answer: Answer, status: int, reason: str | None = None) -> dict:
    assert answer.status == status, (answer.status, answer.body[:300])
    record = platform.wait_for_audit(answer.request_id)
    assert record["decision"] == "deny"
    assert record["status"] == status
    if reason is not None:
        assert record["reason"] == reason, record
    assert not orthanc_was_reached(platform, answer)
    return record


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_for(platform: Any, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": platform.settings.jwt_issuer, "aud": platform.settings.jwt_audience,
              "sub": "mallory", "role": "clinician", "typ": "access", "iat": now,
              "nbf": now, "exp": now + 300, "jti": "t-" + str(now)}
    claims.update(overrides)
    return claims


def ring(platform: Any) -> KeyRing:
    return platform.tokens.keyring


# -- the allowed paths, so the refusals below mean something --------------------------------
def test_clinician_reads_through_nginx_and_guard(platform: Any) -> None:
    token = platform.login("clinician")
    answer = send(platform, "GET", "/api/pacs/dicom-web/studies", bearer(token))
    assert answer.status == 200
    uids = {s["0020000D"]["Value"][0] for s in answer.json()}
    assert {platform.study_a.study, platform.study_b.study} <= uids
    frame = send(platform, "GET", platform.study_a.frame_path(),
                 {**bearer(token), "Accept": 'multipart/related; type="application/octet-stream"'})
    assert frame.status == 200
    assert frame.headers["content-type"].startswith("multipart/related")
    assert len(frame.body) > 64 * 64 * 2  # MR_small: one 64x64 16-bit frame
    assert orthanc_was_reached(platform, frame)
    record = platform.wait_for_audit(frame.request_id)
    assert (record["decision"], record["username"], record["role"]) == ("allow", "clinician", "clinician")
    assert record["study"] == platform.study_a.study
    assert "authorization" not in {k.lower() for k in frame.headers}


def test_signed_url_serves_the_study_without_a_header(platform: Any) -> None:
    token = platform.login("clinician")
    signed = requests.post(f"{platform.url}/api/pacs/sign", headers=bearer(token),
                           json={"study_uid": platform.study_a.study, "ttl_seconds": 60}, timeout=10)
    assert signed.status_code == 200, signed.text
    body = signed.json()
    assert body["expires_in"] == 60
    assert body["url"].startswith(f"{platform.url}/api/pacs/dicom-web/studies/{platform.study_a.study}?token=")
    frame = send(platform, "GET", f"{platform.study_a.frame_path()}?{body['query']}",
                 {"Accept": 'multipart/related; type="application/octet-stream"'})
    assert frame.status == 200
    metadata = send(platform, "GET", f"/api/pacs/dicom-web/studies/{platform.study_a.study}/metadata?{body['query']}")
    assert metadata.status == 200 and metadata.json()[0]["0020000D"]["Value"] == [platform.study_a.study]
    # The token never reaches a log file.
    assert "token=" not in (platform.settings.log_dir / "nginx-access.log").read_text()


def test_signed_url_ttl_is_capped_by_configuration(platform: Any) -> None:
    token = platform.login("clinician")
    signed = requests.post(f"{platform.url}/api/pacs/sign", headers=bearer(token),
                           json={"study_uid": platform.study_a.study, "ttl_seconds": 10**6}, timeout=10)
    assert signed.status_code == 200
    assert signed.json()["expires_in"] == platform.settings.signed_url_ttl_max
    claims = jwt.decode(signed.json()["token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] <= platform.settings.signed_url_ttl_max


# -- tokens ----------------------------------------------------------------------------------
def test_no_token(platform: Any) -> None:
    answer = send(platform, "GET", "/api/pacs/dicom-web/studies")
    assert_refused(platform, answer, 401, "no_token")
    assert answer.headers["www-authenticate"].startswith("Bearer")


def test_expired_token(platform: Any) -> None:
    token = platform.access_token(ttl=-60)
    assert_refused(platform, send(platform, "GET", "/api/pacs/dicom-web/studies", bearer(token)),
                   401, "expired")


def test_not_yet_valid_token(platform: Any) -> None:
    token, _ = platform.tokens.mint("clinician", "clinician", "access", 600,
                                    not_before=time.time() + 300)
    assert_refused(platform, send(platform, "GET", "/api/pacs/dicom-web/studies", bearer(token)),
                   401, "not_yet_valid")


def test_wrong_audience(platform: Any) -> None:
    key = ring(platform).signing_key()
    token = jwt.encode(claims_for(platform, aud="someone-else"), key.private, algorithm="EdDSA",
                       headers={"kid": key.kid})
    assert_refused(platform, send(platform, "GET", "/api/pacs/dicom-web/studies", bearer(token)),
                   401, "bad_audience")


def test_refresh_token_is_not_an_access_token(platform: Any) -> None:
    token, _ = platform.tokens.mint("clinician", "clinician", "refresh", 300)
    assert_refused(platform, send(platform, "GET", "/api/pacs/dicom-web/studies", bearer(token)),
                   401, "bad_audience")


def test_signed_token_as_a_bearer_reads_its_study_and_nothing_else(platform: Any) -> None:
    """OHIF sends its link's study-scoped token as a bearer header: the guard gives it exactly
    the signed URL's scope (DICOMweb reads of that study), and the API no access at all."""
    token, _ = platform.tokens.mint("clinician", "clinician", "signed", 300,
                                    studies=[platform.study_a.study])
    listed = send(platform, "GET", "/api/pacs/dicom-web/studies", bearer(token))
    assert listed.status == 200, listed.body[:300]
    assert {s["0020000D"]["Value"][0] for s in listed.json()} == {platform.study_a.study}
    assert_refused(platform, send(platform, "GET", platform.study_b.frame_path(), bearer(token)),
                   403, "scope")
    assert send(platform, "GET", "/api/audit", bearer(token)).status == 401


def test_wrong_key_with_a_real_kid(platform: Any) -> None:
    stranger = Ed25519PrivateKey.generate()
    token = jwt.encode(claims_for(platform), stranger, algorithm="EdDSA",
                       headers={"kid": ring(platform).signing_key().kid})
    assert_refused(platform, send(platform, "GET", "/api/pacs/dicom-web/studies", bearer(token)),
                   401, "bad_signature")


def test_unknown_kid(platform: Any) -> None:
    token = jwt.encode(claims_for(platform), Ed25519PrivateKey.generate(), algorithm="EdDSA",
                       headers={"kid": "not-a-key"})
    assert_refused(platform, send(platform, "GET", "/api/pacs/dicom-web/studies", bearer(token)),
                   401, "unknown_kid")


def test_alg_none(platform: Any) -> None:
    header = {"alg": "none", "typ": "JWT", "kid": ring(platform).signing_key().kid}
    token = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims_for(platform, role='admin')).encode())}."
    assert_refused(platform, send(platform, "GET", "/api/pacs/dicom-web/studies", bearer(token)),
                   401, "bad_alg")


def test_algorithm_confusion_hs256_with_the_public_key(platform: Any) -> None:
    key = ring(platform).signing_key()
    public_pem = key.public.public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    payload = b64(json.dumps(claims_for(platform, role="admin")).encode())
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{b64(signature)}"
    assert_refused(platform, send(platform, "GET", "/api/pacs/dicom-web/studies", bearer(token)),
                   401, "bad_alg")


def test_tampered_payload(platform: Any) -> None:
    token, _ = platform.tokens.mint("clinician", "clinician", "signed", 300,
                                    studies=[platform.study_a.study])
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["studies"] = [platform.study_b.study]
    forged = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    answer = send(platform, "GET", f"/api/pacs/dicom-web/studies/{platform.study_b.study}/metadata?token={forged}")
    assert_refused(platform, answer, 401, "bad_signature")


def test_rotation_keeps_old_tokens_and_revocation_refuses_them(platform: Any) -> None:
    keys = ring(platform)
    old_token = platform.access_token()
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    new_kid = keys.rotate()
    assert new_kid != old_kid
    time.sleep(1.0)  # the guard looks at the key file twice a second
    still = send(platform, "GET", "/api/pacs/dicom-web/studies", bearer(old_token))
    assert still.status == 200, "a rotation must not log everyone out"
    deadline = time.monotonic() + 10
    new_token = platform.access_token()
    while jwt.get_unverified_header(new_token)["kid"] != new_kid:
        assert time.monotonic() < deadline, "the API did not sign with the rotated key"
        time.sleep(0.1)
        new_token = platform.access_token()
    keys.revoke(old_kid)
    deadline = time.monotonic() + 10  # the guard looks at the key file twice a second
    while send(platform, "GET", "/api/pacs/dicom-web/studies", bearer(old_token)).status != 401:
        assert time.monotonic() < deadline, "the guard still accepts a revoked key"
        time.sleep(0.1)
    assert_refused(platform, send(platform, "GET", "/api/pacs/dicom-web/studies", bearer(old_token)),
                   401, "revoked_kid")
    assert send(platform, "GET", "/api/pacs/dicom-web/studies", bearer(new_token)).status == 200


# -- study scope -----------------------------------------------------------------------------
def _signed_for_a(platform: Any) -> str:
    token, _ = platform.tokens.mint("clinician", "clinician", "signed", 300,
                                    studies=[platform.study_a.study])
    return token


def test_token_for_study_a_on_study_b_paths(platform: Any) -> None:
    token = _signed_for_a(platform)
    a, b = platform.study_a, platform.study_b
    paths = [
        f"/studies/{b.study}",
        f"/studies/{b.study}/metadata",
        f"/studies/{b.study}/series",
        f"/studies/{b.study}/series/{b.series}",
        f"/studies/{b.study}/series/{b.series}/metadata",
        f"/studies/{b.study}/series/{b.series}/instances",
        f"/studies/{b.study}/series/{b.series}/instances/{b.instance}",
        f"/studies/{b.study}/series/{b.series}/instances/{b.instance}/frames/1",
        f"/studies/{b.study}/series/{b.series}/instances/{b.instance}/metadata",
    ]
    for path in paths:
        answer = send(platform, "GET", f"/api/pacs/dicom-web{path}?token={token}")
        record = assert_refused(platform, answer, 403, "scope")
        assert record["study"] == b.study
    # Study A's own resources are allowed with the same token.
    ok = send(platform, "GET", f"/api/pacs/dicom-web/studies/{a.study}/series?token={token}")
    assert ok.status == 200


def test_token_for_study_a_in_qido_query_parameters(platform: Any) -> None:
    token = _signed_for_a(platform)
    a, b = platform.study_a.study, platform.study_b.study
    for query in [f"StudyInstanceUID={b}", f"0020000D={b}", f"0020000d={b}",
                  f"StudyInstanceUID={a},{b}", f"StudyInstanceUID={a}%2C{b}"]:
        for resource in ("studies", "series", "instances"):
            answer = send(platform, "GET", f"/api/pacs/dicom-web/{resource}?{query}&token={token}")
            assert_refused(platform, answer, 403, "scope")
    twice = send(platform, "GET", f"/api/pacs/dicom-web/studies?StudyInstanceUID={a}&StudyInstanceUID={b}&token={token}")
    assert_refused(platform, twice, 400, "ambiguous_query")
    mixed = send(platform, "GET", f"/api/pacs/dicom-web/studies/{a}/series?0020000D={b}&token={token}")
    assert_refused(platform, mixed, 403, "scope")


def test_scoped_qido_without_a_filter_sees_only_its_study(platform: Any) -> None:
    token = _signed_for_a(platform)
    for resource in ("studies", "series", "instances"):
        answer = send(platform, "GET", f"/api/pacs/dicom-web/{resource}?token={token}")
        assert answer.status == 200
        studies = {item["0020000D"]["Value"][0] for item in answer.json()}
        assert studies == {platform.study_a.study}, resource


def test_scoped_bearer_token_obeys_its_studies_claim(platform: Any) -> None:
    token = platform.access_token(studies=[platform.study_a.study])
    b = platform.study_b
    assert_refused(platform, send(platform, "GET", b.frame_path(), bearer(token)), 403, "scope")
    assert send(platform, "GET", f"/api/pacs/dicom-web/studies/{platform.study_a.study}/metadata",
                bearer(token)).status == 200


def test_series_of_another_study_under_an_allowed_study_returns_nothing(platform: Any) -> None:
    """The path names study A (allowed) but B's series: Orthanc enforces the hierarchy."""
    token = _signed_for_a(platform)
    a, b = platform.study_a, platform.study_b
    for path in [f"/studies/{a.study}/series/{b.series}/metadata",
                 f"/studies/{a.study}/series/{b.series}/instances/{b.instance}/frames/1",
                 f"/studies/{a.study}/series/{a.series}/instances/{b.instance}/metadata"]:
        answer = send(platform, "GET", f"/api/pacs/dicom-web{path}?token={token}")
        assert answer.status == 404, path
        assert b'"00080018"' not in answer.body  # no DICOM JSON of B's instances
        assert not answer.headers.get("content-type", "").startswith("multipart/")


# -- the URI itself --------------------------------------------------------------------------
TRAVERSALS = [
    "/api/pacs/dicom-web/studies/../../../internal-orthanc/system",
    "/api/pacs/dicom-web/studies/%2e%2e/%2e%2e/%2e%2e/internal-orthanc/system",
    "/api/pacs/dicom-web/studies/%252e%252e/%252e%252e/internal-orthanc/system",
    "/api/pacs/dicom-web/studies/%25252e%25252e/system",
    "/api/pacs/dicom-web/studies/..%2f..%2f..%2finternal-orthanc%2fsystem",
    "/api/pacs/dicom-web/studies/..%252f..%252fsystem",
    "/api/pacs/dicom-web/studies/%2E%2E%5C%2E%2E%5Csystem",
    "/api/pacs/dicom-web/studies/..\\..\\system",
    "/api/pacs/dicom-web/studies/./1.2.3",
    "/api/pacs/dicom-web/studies//1.2.3",
    "/api/pacs/dicom-web/studies/1.2.3/series/%2F..%2F..%2Fsystem",
    "/api/pacs/dicom-web/studies/1.2.3;/../../system",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_in_every_encoding(platform: Any, target: str) -> None:
    answer = send(platform, "GET", target, bearer(platform.access_token("admin")))
    assert answer.status in (400, 404), (target, answer.status)
    record = platform.wait_for_audit(answer.request_id)
    assert record["decision"] == "deny"
    assert record["reason"] in {"traversal", "encoded_path", "bad_uid", "unknown_route"}
    assert not orthanc_was_reached(platform, answer)


@pytest.mark.parametrize("query", [
    "PatientName=x%0d%0aX-Accel-Redirect:%20/internal-orthanc/system",
    "PatientName=x%0aSet-Cookie:%20a=b",
    "PatientName=x%250d%250aX-Injected:%201",
    "Patient%0d%0aName=x",
    "PatientName=%00",
])
def test_crlf_in_the_query_is_refused(platform: Any, query: str) -> None:
    answer = send(platform, "GET", f"/api/pacs/dicom-web/studies?{query}",
                  bearer(platform.access_token("admin")))
    assert "x-injected" not in answer.headers and "set-cookie" not in answer.headers
    assert_refused(platform, answer, 400, "header_injection")


def test_unknown_query_keys_are_refused(platform: Any) -> None:
    answer = send(platform, "GET", "/api/pacs/dicom-web/studies?a%20b=1",
                  bearer(platform.access_token("admin")))
    assert_refused(platform, answer, 400, "unknown_query_key")


def test_raw_crlf_in_the_request_line_never_reaches_a_service(platform: Any) -> None:
    reply = send_raw(platform, b"GET /api/pacs/dicom-web/studies\r\nX-Accel-Redirect: /internal-orthanc/system HTTP/1.1\r\n"
                               b"Host: localhost\r\nConnection: close\r\n\r\n")
    # nginx reads "GET /path" without a version as HTTP/0.9: the rest is never a header.
    # Either way the guard refuses it for want of a token, and Orthanc is not reached.
    assert reply.startswith(b"HTTP/1.1 400") or b'"reason": "no_token"' in reply, reply[:200]
    assert b"ApiVersion" not in reply


def test_request_smuggling_is_refused(platform: Any) -> None:
    token = platform.access_token("admin")
    smuggled = (b"GET /api/pacs/dicom-web/studies HTTP/1.1\r\nHost: localhost\r\n"
                b"Authorization: Bearer " + token.encode() + b"\r\n"
                b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                b"0\r\n\r\nGET /internal-orthanc/system HTTP/1.1\r\nHost: localhost\r\n\r\n")
    reply = send_raw(platform, smuggled)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert b"ApiVersion" not in reply


def test_client_cannot_send_its_own_redirect_header(platform: Any) -> None:
    answer = send(platform, "GET", "/api/pacs/dicom-web/studies",
                  {"X-Accel-Redirect": "/internal-orthanc/system"})
    assert_refused(platform, answer, 401, "no_token")
    assert b"ApiVersion" not in answer.body


def _two_authorizations(platform: Any) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {platform.access_token('clinician')}"),
            ("Authorization", "Bearer forged")]


def test_two_authorization_headers_are_ambiguous(platform: Any) -> None:
    answer = send(platform, "GET", "/api/pacs/dicom-web/studies", _two_authorizations(platform))
    # nginx refuses a duplicate Authorization itself; the guard would too ("duplicate_header").
    record = assert_refused(platform, answer, 400)
    assert record["reason"] in ("bad_request", "duplicate_header")


def test_two_tokens_are_ambiguous(platform: Any) -> None:
    answer = send(platform, "GET", f"/api/pacs/dicom-web/studies?token={_signed_for_a(platform)}",
                  bearer(platform.access_token()))
    assert_refused(platform, answer, 400, "two_tokens")


# -- methods and roles -----------------------------------------------------------------------
def test_clinician_may_not_store(platform: Any) -> None:
    answer = send(platform, "POST", "/api/pacs/dicom-web/studies",
                  {**bearer(platform.access_token("clinician")),
                   "Content-Type": "multipart/related; type=\"application/dicom\""}, b"x" * 100)
    assert_refused(platform, answer, 403, "role")


def test_stow_goes_to_the_ingest_gate_not_to_orthanc(platform: Any) -> None:
    answer = send(platform, "POST", "/api/pacs/dicom-web/studies",
                  {**bearer(platform.access_token("admin")), "Content-Type": "application/dicom"}, b"x")
    assert answer.status == 415
    assert platform.wait_for_audit(answer.request_id, service="proxy")["reason"] == "stow_authorized"
    record = platform.wait_for_audit(answer.request_id, service="api")
    assert (record["decision"], record["reason"]) == ("deny", "media_type")
    assert not orthanc_was_reached(platform, answer)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_refused(platform: Any, method: str) -> None:
    answer = send(platform, method, f"/api/pacs/dicom-web/studies/{platform.study_a.study}",
                  bearer(platform.access_token("admin")))
    assert_refused(platform, answer, 405, "method")
    assert platform.store.find_study(platform.study_a.study) is not None


# -- what must stay unreachable --------------------------------------------------------------
@pytest.mark.parametrize("target", ["/internal-orthanc/system", "/internal-orthanc/dicom-web/studies",
                                    "/internal-orthanc/instances"])
def test_internal_location_is_unreachable(platform: Any, target: str) -> None:
    answer = send(platform, "GET", target, bearer(platform.access_token("admin")))
    assert_refused(platform, answer, 404, "internal_or_unknown")
    assert b"ApiVersion" not in answer.body


def test_orthanc_port_refuses_requests_without_credentials(platform: Any) -> None:
    url = f"http://127.0.0.1:{platform.settings.orthanc_port}"
    assert requests.get(f"{url}/system", timeout=5).status_code == 401
    assert requests.get(f"{url}/dicom-web/studies", timeout=5).status_code == 401
    assert requests.get(f"{url}/system", auth=("neuronova-service", "guess"), timeout=5).status_code == 401


def test_guard_audit_endpoint_for_nginx_is_not_public(platform: Any) -> None:
    answer = send(platform, "GET", "/api/pacs/_refused", {"X-Refused-Status": "200"})
    assert answer.status == 404


# -- sizes -----------------------------------------------------------------------------------
def test_oversized_headers(platform: Any) -> None:
    answer = send(platform, "GET", "/api/pacs/dicom-web/studies",
                  {**bearer(platform.access_token()), "X-Padding": "a" * 20000})
    assert_refused(platform, answer, 400, "bad_request")


def test_oversized_body_on_dicomweb(platform: Any) -> None:
    answer = send(platform, "GET", "/api/pacs/dicom-web/studies",
                  bearer(platform.access_token()), body=b"x" * (200 * 1024))
    assert_refused(platform, answer, 413, "body_too_large")


def test_oversized_uri(platform: Any) -> None:
    answer = send(platform, "GET", "/api/pacs/dicom-web/studies?PatientName=" + "a" * 9000,
                  bearer(platform.access_token()))
    assert answer.status in (400, 414)
    assert_refused(platform, answer, answer.status)


def test_guard_itself_refuses_duplicate_authorization(platform: Any) -> None:
    """Defence in depth: a local process reaching the guard's port directly gets the same answer."""
    answer = send(platform, "GET", "/api/pacs/dicom-web/studies", _two_authorizations(platform),
                  port=platform.settings.proxy_port)
    assert answer.status == 400 and "x-accel-redirect" not in answer.headers
    assert answer.json()["reason"] == "duplicate_header"


def test_api_docs_work_offline(platform: Any) -> None:
    """The docs page loads Swagger UI from the platform, not from a CDN."""
    page = requests.get(f"{platform.url}/api/docs", timeout=10)
    assert page.status_code == 200
    assert "cdn." not in page.text and "/api/docs-static/swagger-ui-bundle.js" in page.text
    script = requests.get(f"{platform.url}/api/docs-static/swagger-ui-bundle.js", timeout=10)
    assert script.status_code == 200 and len(script.content) > 100_000
    assert requests.get(f"{platform.url}/api/openapi.json", timeout=10).json()["paths"]
