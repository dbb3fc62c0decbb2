"""The guard's rules without HTTP: URI shapes, tokens, roles, scope (fast unit tests)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from neuronova_lib.security.keyring import KeyRing
from neuronova_lib.security.tokens import TokenService
from services.proxy.guard import Guard
from services.proxy.paths import Refusal, parse

S = "1.2.826.0.1.3680043.8.498.1"
SE = "1.2.826.0.1.3680043.8.498.2"
I = "1.2.826.0.1.3680043.8.498.3"
OTHER = "1.2.826.0.1.3680043.8.498.99"
P = "/api/pacs/dicom-web"


@pytest.fixture()
def tokens(tmp_path: Path) -> TokenService:
    return TokenService(KeyRing(tmp_path / "keys.json"), "neuronova", "neuronova")


@pytest.fixture()
def guard(tokens: TokenService) -> Guard:
    return Guard(tokens)


def bearer(tokens: TokenService, role: str = "clinician", **kw: object) -> str:
    return "Bearer " + tokens.mint("u", role, "access", 60, **kw)[0]  # type: ignore[arg-type]


@pytest.mark.parametrize(("path", "kind"), [
    (f"{P}/studies", "qido"),
    (f"{P}/series", "qido"),
    (f"{P}/instances", "qido"),
    (f"{P}/studies/{S}", "wado"),
    (f"{P}/studies/{S}/metadata", "metadata"),
    (f"{P}/studies/{S}/series", "qido"),
    (f"{P}/studies/{S}/instances", "qido"),
    (f"{P}/studies/{S}/series/{SE}", "wado"),
    (f"{P}/studies/{S}/series/{SE}/metadata", "metadata"),
    (f"{P}/studies/{S}/series/{SE}/rendered", "series_rendered"),
    (f"{P}/studies/{S}/series/{SE}/instances", "qido"),
    (f"{P}/studies/{S}/series/{SE}/instances/{I}", "wado"),
    (f"{P}/studies/{S}/series/{SE}/instances/{I}/metadata", "metadata"),
    (f"{P}/studies/{S}/series/{SE}/instances/{I}/rendered", "rendered"),
    (f"{P}/studies/{S}/series/{SE}/instances/{I}/thumbnail", "rendered"),
    (f"{P}/studies/{S}/series/{SE}/instances/{I}/frames/1", "frames"),
    (f"{P}/studies/{S}/series/{SE}/instances/{I}/frames/1,2,3", "frames"),
    (f"{P}/studies/{S}/series/{SE}/instances/{I}/frames/2/rendered", "rendered"),
    (f"{P}/studies/{S}/series/{SE}/instances/{I}/bulk/7fe00010", "bulk"),
])
def test_every_dicomweb_shape_is_recognised(path: str, kind: str) -> None:
    target = parse(path, "")
    assert target.kind == kind
    assert target.internal_uri("/internal-orthanc/") == "/internal-orthanc/dicom-web" + path[len(P):]


@pytest.mark.parametrize(("path", "reason"), [
    (f"{P}/studies/{S}/../{OTHER}", "traversal"),
    (f"{P}/studies/%2e%2e/x", "traversal"),
    (f"{P}/studies/%252e%252e/x", "traversal"),
    (f"{P}/studies/{S}%2Fseries", "encoded_path"),
    (f"{P}/studies/{S}/series/{SE}%0d%0aX-A:%201", "header_injection"),
    (f"{P}/studies//{S}", "traversal"),
    (f"{P}/studies/./{S}", "traversal"),
    (f"{P}/studies/1.2.abc", "bad_uid"),
    (f"{P}/studies/{'1.' * 40}1", "bad_uid"),
    (f"{P}/studies/{S}/series/{SE}/instances/{I}/frames/0", "bad_frames"),
    (f"{P}/studies/{S}/series/{SE}/instances/{I}/frames/1;2", "bad_frames"),
    (f"{P}/studies/{S}/series/{SE}/instances/{I}/file", "unknown_route"),
    (f"{P}/patients", "unknown_route"),
    (f"{P}/studies/{S}/series/{SE}/instances/{I}/bulk/../../x", "traversal"),
    ("/api/pacs/other", "unknown_route"),
])
def test_bad_paths_are_refused_with_a_reason(path: str, reason: str) -> None:
    with pytest.raises(Refusal) as caught:
        parse(path, "")
    assert caught.value.reason == reason


def test_pixel_requests_go_to_the_wado_plugin_when_enabled() -> None:
    frames = parse(f"{P}/studies/{S}/series/{SE}/instances/{I}/frames/1", "")
    assert frames.internal_uri("/internal-orthanc/", wado_plugin=True).startswith(
        "/internal-orthanc/neuronova/dicom-web/studies/")
    metadata = parse(f"{P}/studies/{S}/metadata", "")
    assert metadata.internal_uri("/internal-orthanc/", wado_plugin=True) == (
        f"/internal-orthanc/dicom-web/studies/{S}/metadata")


def test_query_is_rebuilt_encoded_and_token_removed() -> None:
    target = parse(f"{P}/studies", "PatientName=Doe%5EJohn*&limit=10&token=abc&includefield=00081030")
    assert target.token == "abc"
    uri = target.internal_uri("/internal-orthanc/")
    assert uri == "/internal-orthanc/dicom-web/studies?PatientName=Doe^John*&limit=10&includefield=00081030"
    assert "token" not in uri


def test_query_values_cannot_break_out_of_the_query() -> None:
    target = parse(f"{P}/studies", "PatientName=a%26limit%3D1%23x%20y%22")
    assert target.internal_uri("/internal-orthanc/").endswith("?PatientName=a%26limit%3D1%23x%20y%22")


@pytest.mark.parametrize("query", ["PatientName=a%0d%0ab", "PatientName=%2500", "x%0a=1",
                                   "PatientName=a%25250a"])
def test_control_characters_in_the_query(query: str) -> None:
    with pytest.raises(Refusal) as caught:
        parse(f"{P}/studies", query)
    assert caught.value.reason == "header_injection"


def test_allowed_decision_redirects_inside(guard: Guard, tokens: TokenService) -> None:
    decision = guard.decide("GET", f"{P}/studies/{S}/metadata", "", bearer(tokens))
    assert decision.allow and decision.redirect == f"/internal-orthanc/dicom-web/studies/{S}/metadata"
    assert decision.study == S and decision.claims and decision.claims.sub == "u"


@pytest.mark.parametrize(("method", "role", "status", "reason"), [
    ("HEAD", "clinician", 200, "allowed"),
    ("POST", "clinician", 403, "role"),
    ("POST", "scientist", 403, "role"),
    ("POST", "admin", 405, "stow_not_here"),
    ("DELETE", "admin", 405, "method"),
    ("PUT", "clinician", 405, "method"),
])
def test_methods_by_role(guard: Guard, tokens: TokenService, method: str, role: str,
                         status: int, reason: str) -> None:
    decision = guard.decide(method, f"{P}/studies/{S}", "", bearer(tokens, role))
    assert (decision.status, decision.reason) == (status, reason)


def test_scoped_token_on_its_own_and_other_studies(guard: Guard, tokens: TokenService) -> None:
    signed = tokens.mint("u", "clinician", "signed", 60, studies=[S])[0]
    assert guard.decide("GET", f"{P}/studies/{S}/series", f"token={signed}", None).allow
    denied = guard.decide("GET", f"{P}/studies/{OTHER}/series", f"token={signed}", None)
    assert (denied.status, denied.reason) == (403, "scope")
    qido = guard.decide("GET", f"{P}/studies", f"token={signed}", None)
    assert qido.allow and qido.redirect == f"/internal-orthanc/dicom-web/studies?StudyInstanceUID={S}"
    for query in (f"StudyInstanceUID={OTHER}", f"0020000D={S},{OTHER}"):
        assert guard.decide("GET", f"{P}/series", f"{query}&token={signed}", None).reason == "scope"


def test_unscoped_qido_is_not_restricted(guard: Guard, tokens: TokenService) -> None:
    decision = guard.decide("GET", f"{P}/studies", "", bearer(tokens))
    assert decision.redirect == "/internal-orthanc/dicom-web/studies"


def test_cache_still_sees_revocation_and_expiry(guard: Guard, tokens: TokenService) -> None:
    header = bearer(tokens)
    assert guard.decide("GET", f"{P}/studies", "", header).allow
    tokens.keyring.revoke(tokens.keyring.signing_key().kid)
    tokens.keyring.refresh(force=True)
    assert guard.decide("GET", f"{P}/studies", "", header).reason == "revoked_kid"
    short = "Bearer " + tokens.mint("u", "clinician", "access", 1)[0]
    assert guard.decide("GET", f"{P}/studies", "", short).allow
    time.sleep(7.1)  # past exp plus the 5 s leeway
    assert guard.decide("GET", f"{P}/studies", "", short).reason == "expired"


@pytest.mark.parametrize("header", ["Basic dXNlcjpwdw==", "Bearer", "Bearer    ", "token abc"])
def test_other_authorization_schemes(guard: Guard, header: str) -> None:
    assert guard.decide("GET", f"{P}/studies", "", header).status == 401
