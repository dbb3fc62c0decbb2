"""The guard's rules without HTTP: URI shapes, tokens, roles, scope (fast unit tests)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from neuronova_lib.security.keyring import KeyRing
from neuronova_lib.security.tokens import TokenError, TokenService
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


def test_a_frame_may_be_asked_for_levels_down_and_nothing_else() -> None:
    path = f"{P}/studies/{S}/series/{SE}/instances/{I}/frames/1,2"
    reduced = parse(path, "reduce=2&token=abc")
    assert reduced.query == [("reduce", "2")] and reduced.token == "abc"
    assert reduced.internal_uri("/internal-orthanc/", wado_plugin=True).endswith(
        "/frames/1,2?reduce=2")
    # Orthanc's own DICOMweb plugin answers whole frames: it is not asked.
    assert reduced.internal_uri("/internal-orthanc/").endswith("/frames/1,2")
    for query in ("reduce=0", "reduce=6", "reduce=x", "reduce=2&reduce=2", "reduce=1&x=1",
                  "x=1", "reduce=%32%0a"):
        with pytest.raises(Refusal) as caught:
            parse(path, query)
        assert caught.value.reason in ("bad_reduce", "header_injection"), query
    with pytest.raises(Refusal, match="takes no query"):
        parse(f"{P}/studies/{S}/series/{SE}/metadata", "reduce=2")


def test_query_is_rebuilt_encoded_and_token_removed() -> None:
    target = parse(f"{P}/studies", "PatientName=Doe%5EJohn*&limit=10&token=abc&includefield=00081030")
    assert target.token == "abc"
    uri = target.internal_uri("/internal-orthanc/")
    assert uri == "/internal-orthanc/dicom-web/studies?00100010=Doe^John*&limit=10&includefield=00081030"
    assert "token" not in uri


def test_query_values_cannot_break_out_of_the_query() -> None:
    target = parse(f"{P}/studies", "PatientName=a%26limit%3D1%23x%20y%22")
    assert target.internal_uri("/internal-orthanc/").endswith("?00100010=a%26limit%3D1%23x%20y%22")


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
    assert qido.allow and qido.redirect == f"/internal-orthanc/dicom-web/studies?0020000D={S}"
    for query in (f"StudyInstanceUID={OTHER}", f"0020000D={S},{OTHER}"):
        assert guard.decide("GET", f"{P}/series", f"{query}&token={signed}", None).reason == "scope"


def _carry(token: str, how: str) -> tuple[str, str | None]:
    """The query and Authorization header of a request carrying ``token`` ``how``."""
    return (f"token={token}", None) if how == "url" else ("", f"Bearer {token}")


@pytest.mark.parametrize("how", ["url", "bearer"])
def test_a_signed_token_has_one_scope_in_the_url_or_as_bearer(guard: Guard, tokens: TokenService,
                                                                 how: str) -> None:
    """OHIF turns ?token= into a bearer header: the same token gets the same decisions."""
    signed = tokens.mint("u", "clinician", "signed", 60, studies=[S])[0]
    query, header = _carry(signed, how)
    both = (query + "&" if query else "")
    own = guard.decide("GET", f"{P}/studies/{S}/series/{SE}/instances/{I}/frames/1", query, header)
    assert own.allow and own.claims is not None and own.claims.typ == "signed"
    assert own.claims.studies == (S,) and own.claims.sub == "u"
    for path in (f"{P}/studies/{OTHER}", f"{P}/studies/{OTHER}/metadata",
                 f"{P}/studies/{OTHER}/series/{SE}/instances/{I}/frames/1"):
        denied = guard.decide("GET", path, query, header)
        assert (denied.status, denied.reason) == (403, "scope"), path
    qido = guard.decide("GET", f"{P}/studies", both + f"StudyInstanceUID={S}", header)
    assert qido.allow and qido.redirect == f"/internal-orthanc/dicom-web/studies?0020000D={S}"
    unfiltered = guard.decide("GET", f"{P}/series", query, header)
    assert unfiltered.redirect == f"/internal-orthanc/dicom-web/series?0020000D={S}"
    other = guard.decide("GET", f"{P}/studies", both + f"StudyInstanceUID={OTHER}", header)
    assert other.reason == "scope"
    # A signed token never writes, in either place.
    stow = guard.decide_stow(f"{P}/studies/{S}", query, header)
    assert not stow.allow and stow.reason == "signed_url_stow"


def test_a_signed_bearer_is_checked_as_a_signed_token(guard: Guard, tokens: TokenService,
                                                      tmp_path: Path) -> None:
    expired = tokens.mint("u", "clinician", "signed", -10, studies=[S])[0]
    assert guard.decide("GET", f"{P}/studies/{S}", "", f"Bearer {expired}").reason == "expired"
    # Another platform's keys, and a token that claims typ=signed with an access audience.
    stranger = TokenService(KeyRing(tmp_path / "other.json"), "neuronova", "neuronova")
    forged = stranger.mint("u", "clinician", "signed", 60, studies=[S])[0]
    assert guard.decide("GET", f"{P}/studies/{S}", "", f"Bearer {forged}").status == 401
    import jwt

    key = tokens.keyring.signing_key()
    mixed = jwt.encode({"iss": "neuronova", "aud": "neuronova", "sub": "u", "role": "clinician",
                        "typ": "signed", "iat": time.time(), "nbf": int(time.time()),
                        "exp": int(time.time()) + 60, "jti": "x"},
                       key.private, algorithm="EdDSA", headers={"kid": key.kid})
    assert guard.decide("GET", f"{P}/studies/{S}", "", f"Bearer {mixed}").reason == "bad_audience"
    # Sent both ways at once is refused, as for any two tokens.
    signed = tokens.mint("u", "clinician", "signed", 60, studies=[S])[0]
    both = guard.decide("GET", f"{P}/studies/{S}", f"token={signed}", f"Bearer {signed}")
    assert both.reason == "two_tokens"


def test_unscoped_qido_is_not_restricted(guard: Guard, tokens: TokenService) -> None:
    decision = guard.decide("GET", f"{P}/studies", "", bearer(tokens))
    assert decision.redirect == "/internal-orthanc/dicom-web/studies"


def test_cache_still_sees_revocation_and_expiry(guard: Guard, tokens: TokenService) -> None:
    header = bearer(tokens)
    assert guard.decide("GET", f"{P}/studies", "", header).allow
    tokens.keyring.revoke(tokens.keyring.signing_key().kid)
    tokens.keyring.refresh(force=True)
    assert guard.decide("GET", f"{P}/studies", "", header).reason == "revoked_kid"
    token = tokens.mint("u", "clinician", "access", 2)[0]
    exp = tokens.verify(token, "access").exp
    short = "Bearer " + token
    assert guard.decide("GET", f"{P}/studies", "", short).allow  # now cached
    while time.time() < exp:
        time.sleep(0.02)
    # Refused from its expiry on, cached or not: no leeway on exp.
    assert guard.decide("GET", f"{P}/studies", "", short).reason == "expired"
    with pytest.raises(TokenError, match="expired"):
        tokens.verify(token, "access")


@pytest.mark.parametrize("header", ["Basic dXNlcjpwdw==", "Bearer", "Bearer    ", "token abc"])
def test_other_authorization_schemes(guard: Guard, header: str) -> None:
    assert guard.decide("GET", f"{P}/studies", "", header).status == 401


# -- QIDO query keys: read one way, PS3.18's, and sent to Orthanc as tags ---------------------
QIDO_PATHS = [f"{P}/studies", f"{P}/series", f"{P}/instances"]
SCOPED_PATHS = [f"{P}/studies/{S}/series", f"{P}/studies/{S}/instances",
                f"{P}/studies/{S}/series/{SE}/instances"]


@pytest.mark.parametrize(("key", "reason"), [
    ("studyinstanceuid", "unknown_query_key"),
    ("STUDYINSTANCEUID", "unknown_query_key"),
    ("studyInstanceUID", "unknown_query_key"),
    ("StudyInstanceUid", "unknown_query_key"),
    ("StudyInstanceUID%20", "unknown_query_key"),
    ("%20StudyInstanceUID", "unknown_query_key"),
    ("StudyInstanceUID+", "unknown_query_key"),
    ("Study+InstanceUID", "unknown_query_key"),
    ("Study%2549nstanceUID", "unknown_query_key"),  # encoded twice: decoded once, unknown
    ("0020,000D", "unknown_query_key"),
    ("(0020,000D)", "unknown_query_key"),
    ("x0020000D", "unknown_query_key"),
    ("0020000D0", "unknown_query_key"),
    ("20000D", "unknown_query_key"),
    ("Limit", "unknown_query_key"),
    ("IncludeField", "unknown_query_key"),
    ("fuzzyMatching", "unknown_query_key"),
    ("RequestAttributesSequence.ScheduledProcedureStepID", "unsupported_query_key"),
    ("00400275.00400009", "unsupported_query_key"),
    ("a b", "unknown_query_key"),
])
@pytest.mark.parametrize("path", QIDO_PATHS + SCOPED_PATHS)
def test_qido_keys_not_spelled_as_ps318_are_refused(guard: Guard, tokens: TokenService,
                                                    path: str, key: str, reason: str) -> None:
    for token in (tokens.mint("u", "clinician", "signed", 60, studies=[S])[0],
                  tokens.mint("u", "admin", "signed", 60)[0]):
        decision = guard.decide("GET", path, f"{key}={S}&token={token}", None)
        assert (decision.status, decision.reason) == (400, reason), (path, key)
        assert decision.redirect is None


def test_refusal_names_the_key_and_the_fix(guard: Guard, tokens: TokenService) -> None:
    decision = guard.decide("GET", f"{P}/studies", f"studyinstanceuid={S}", bearer(tokens))
    assert "'studyinstanceuid'" in decision.detail and "'StudyInstanceUID'" in decision.detail
    assert "'0020000D'" in decision.detail
    limit = guard.decide("GET", f"{P}/studies", "Limit=1", bearer(tokens))
    assert "'limit'" in limit.detail
    spaced = guard.decide("GET", f"{P}/studies", "PatientName%20=x", bearer(tokens))
    assert "spaces" in spaced.detail


@pytest.mark.parametrize("key", ["StudyInstanceUID", "0020000D", "0020000d", "Study%49nstanceUID",
                                 "%30%30%32%30%30%30%30%44"])
@pytest.mark.parametrize("path", QIDO_PATHS)
def test_every_spelling_of_the_study_filter_is_one_filter(guard: Guard, tokens: TokenService,
                                                          key: str, path: str) -> None:
    signed = tokens.mint("u", "clinician", "signed", 60, studies=[S, SE])[0]
    allowed = guard.decide("GET", path, f"{key}={S}&token={signed}", None)
    assert allowed.allow and allowed.redirect == f"/internal-orthanc/dicom-web{path[len(P):]}?0020000D={S}"
    assert allowed.study == S
    denied = guard.decide("GET", path, f"{key}={OTHER}&token={signed}", None)
    assert (denied.status, denied.reason) == (403, "scope")
    assert OTHER in denied.detail  # the audit row shows what was asked


@pytest.mark.parametrize("query", [
    f"StudyInstanceUID={S}&StudyInstanceUID={S}",
    f"StudyInstanceUID={S}&0020000D={OTHER}",
    f"0020000d={S}&StudyInstanceUID={S}",
    "PatientName=a&00100010=b",
    "PatientName=a&PatientName=b",
    "limit=1&limit=2",
])
def test_repeated_attributes_are_refused(guard: Guard, tokens: TokenService, query: str) -> None:
    for path in QIDO_PATHS:
        decision = guard.decide("GET", path, query, bearer(tokens, studies=[S, OTHER]))
        assert (decision.status, decision.reason) == (400, "ambiguous_query"), query


@pytest.mark.parametrize("path", QIDO_PATHS)
def test_scope_replaces_the_study_filter_whatever_the_query(guard: Guard, tokens: TokenService,
                                                            path: str) -> None:
    scoped = bearer(tokens, studies=[S, SE])
    inner = f"/internal-orthanc/dicom-web{path[len(P):]}"
    cases = {
        "": f"{inner}?0020000D={S},{SE}",
        "StudyInstanceUID=": f"{inner}?0020000D={S},{SE}",
        f"StudyInstanceUID={SE}": f"{inner}?0020000D={SE}",
        f"StudyInstanceUID={SE}%2C{S}": f"{inner}?0020000D={SE},{S}",
        "PatientName=D*&limit=5": f"{inner}?00100010=D*&limit=5&0020000D={S},{SE}",
        f"SeriesInstanceUID={OTHER}": f"{inner}?0020000E={OTHER}&0020000D={S},{SE}",
    }
    for query, redirect in cases.items():
        decision = guard.decide("GET", path, query, scoped)
        assert decision.allow and decision.redirect == redirect, query
        assert decision.detail == "query: " + redirect.split("?", 1)[1]
    for query in (f"StudyInstanceUID={OTHER}", f"StudyInstanceUID={S},{OTHER}",
                  f"0020000D={OTHER}%2C{S}"):
        decision = guard.decide("GET", path, query, scoped)
        assert (decision.status, decision.reason) == (403, "scope"), query


def test_study_filter_under_a_study_path(guard: Guard, tokens: TokenService) -> None:
    scoped = bearer(tokens, studies=[S, SE])
    for path in SCOPED_PATHS:
        same = guard.decide("GET", path, f"StudyInstanceUID={S}", scoped)
        assert same.allow and "?" not in (same.redirect or "")  # the path says it already
        outside = guard.decide("GET", path, f"0020000D={OTHER}", scoped)
        assert (outside.status, outside.reason) == (403, "scope")
        other = guard.decide("GET", path, f"0020000D={SE}", scoped)  # in scope, not this path
        assert (other.status, other.reason) == (400, "study_filter_conflict")
        unscoped = guard.decide("GET", path, f"0020000D={OTHER}", bearer(tokens))
        assert (unscoped.status, unscoped.reason) == (400, "study_filter_conflict")


def test_a_token_scoped_to_no_study_sees_nothing(guard: Guard, tokens: TokenService) -> None:
    empty = bearer(tokens, studies=[])
    for path in QIDO_PATHS + [f"{P}/studies/{S}/metadata"]:
        decision = guard.decide("GET", path, "", empty)
        assert (decision.status, decision.reason) == (403, "scope"), path


def test_keywords_and_parameters_are_sent_as_orthanc_reads_them(guard: Guard, tokens: TokenService) -> None:
    query = ("PatientName=Doe*&00080060=MR"
             + "&includefield=StudyDescription&includefield=00081030,NumberOfStudyRelatedSeries"
             + "&limit=10&offset=20&fuzzymatching=true&StudyDate=20200101-20201231")
    decision = guard.decide("GET", f"{P}/studies", query, bearer(tokens))
    assert decision.redirect == (
        "/internal-orthanc/dicom-web/studies?00100010=Doe*&00080060=MR&limit=10&offset=20"
        "&fuzzymatching=true&00080020=20200101-20201231&includefield=00081030,00201206")
    everything = guard.decide("GET", f"{P}/studies", "includefield=all&includefield=PatientName",
                              bearer(tokens))
    assert everything.redirect == "/internal-orthanc/dicom-web/studies?includefield=all"


@pytest.mark.parametrize(("query", "reason"), [
    ("limit=-1", "bad_query_value"),
    ("limit=ten", "bad_query_value"),
    ("offset=1.5", "bad_query_value"),
    ("fuzzymatching=yes", "bad_query_value"),
    ("includefield=patientname", "bad_query_value"),
    ("includefield=PatientName%20", "bad_query_value"),
    ("StudyInstanceUID=1.2.*", "bad_uid"),
    ("StudyInstanceUID=*", "bad_uid"),
])
def test_bad_qido_values(guard: Guard, tokens: TokenService, query: str, reason: str) -> None:
    decision = guard.decide("GET", f"{P}/studies", query, bearer(tokens))
    assert (decision.status, decision.reason) == (400, reason)


@pytest.mark.parametrize(("path", "query", "allowed"), [
    (f"{P}/studies/{S}/series/{SE}/instances/{I}/rendered", "window=40,400&viewport=64,64&quality=80", True),
    (f"{P}/studies/{S}/series/{SE}/instances/{I}/rendered", "Window=40,400", False),
    (f"{P}/studies/{S}/series/{SE}/instances/{I}/rendered", "quality=1&quality=2", False),
    (f"{P}/studies/{S}/series/{SE}/instances/{I}/frames/1", "StudyInstanceUID=1.2.3", False),
    (f"{P}/studies/{S}/metadata", "includefield=all", False),
    (f"{P}/studies/{S}", "_=12345", False),
])
def test_other_resources_take_only_their_own_parameters(guard: Guard, tokens: TokenService,
                                                        path: str, query: str, allowed: bool) -> None:
    decision = guard.decide("GET", path, query, bearer(tokens))
    assert decision.allow is allowed, decision
    if not allowed:
        assert decision.status == 400


def test_no_query_path_stays_free_of_query_work(guard: Guard, tokens: TokenService) -> None:
    frames = guard.decide("GET", f"{P}/studies/{S}/series/{SE}/instances/{I}/frames/1", "", bearer(tokens))
    assert frames.allow and frames.detail == "" and "?" not in (frames.redirect or "")
