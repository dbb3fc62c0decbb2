"""Browser sign-in against the real API app (TestClient, SQLite in a temporary data dir).

The stack tests (nginx, MLflow) are in test_signin_e2e.py; a real browser in
test_signin_browser_e2e.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api_settings import service_settings
from neuronova_lib.config import Settings
from neuronova_lib.db.browser_sessions import (
    COOKIE_NAME,
    ActiveSession,
    check_session,
    session_hash,
    start_session,
)
from neuronova_lib.db.engine import session_factory
from neuronova_lib.db.models import AuditRecord, BrowserSession, User
from neuronova_lib.db.revocation import Refused, revoke_user
from neuronova_lib.db.users import ensure_demo_users, get_user
from neuronova_lib.security.same_origin import cross_site_refusal, safe_next
from services.api.app import create_app

PASSWORD = "demo-password-for-tests"
BASE = "http://127.0.0.1:8080"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    with service_settings(tmp_path / "home", monkeypatch, PASSWORD, PORT="8080") as current:
        ensure_demo_users(current)
        yield current


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url=BASE) as test_client:
        yield test_client


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def sign_in(client: TestClient, username: str = "owner", password: str = PASSWORD,
            next_path: str = "/mlflow/", **headers: str):  # type: ignore[no-untyped-def]
    form = client.get("/login", params={"next": next_path})
    assert form.status_code == 200
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf": _csrf(form.text), "next": next_path},
                       headers={"Origin": BASE, **headers}, follow_redirects=False)


# -- pure rules -------------------------------------------------------------------------


@pytest.mark.parametrize("target, expected", [
    ("/mlflow/", "/mlflow/"),
    ("/mlflow/#/experiments/1?x=1&y=2", "/mlflow/#/experiments/1?x=1&y=2"),
    ("//evil.example/", "/"),
    ("https://evil.example/", "/"),
    ("http:/evil.example", "/"),
    ("/\\evil.example", "/"),
    ("\\\\evil.example", "/"),
    ("/ok\r\nSet-Cookie: x=1", "/"),
    ("/\tx", "/"),
    ("javascript:alert(1)", "/"),
    ("mlflow/", "/"),
    ("", "/"),
    (None, "/"),
])
def test_next_is_a_same_origin_path_only(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


@pytest.mark.parametrize("method, headers, refused", [
    ("GET", {"sec-fetch-site": "cross-site"}, False),
    ("POST", {"sec-fetch-site": "same-origin"}, False),
    ("POST", {"sec-fetch-site": "same-site"}, True),
    ("POST", {"sec-fetch-site": "cross-site", "origin": BASE}, True),
    ("DELETE", {"sec-fetch-site": "none"}, True),
    ("POST", {"origin": BASE}, False),
    ("POST", {"origin": BASE + "/"}, False),
    ("POST", {"origin": "http://127.0.0.1:8081"}, True),
    ("PATCH", {"origin": "null"}, True),
    ("POST", {}, True),
])
def test_cross_site_rule(method: str, headers: dict[str, str], refused: bool) -> None:
    assert (cross_site_refusal(method, headers, BASE) is not None) == refused


# -- sessions -------------------------------------------------------------------------


def test_session_timeouts_and_account_changes(settings: Settings) -> None:
    sessions = session_factory(settings.sqlalchemy_url)
    t0 = datetime.now(UTC)
    with sessions() as db:
        owner = get_user(db, "owner")
        assert owner is not None
        sid, row = start_session(db, owner, settings, now=t0)
        db.commit()
        # Only the hash is stored.
        assert row.id_hash == session_hash(sid) and sid not in row.id_hash
        assert db.scalar(select(BrowserSession).where(BrowserSession.id_hash == sid)) is None
        # Used within the idle window: fine, and last_seen is written at most per interval.
        soon = t0 + timedelta(seconds=settings.session_touch_interval / 2)
        assert isinstance(check_session(db, sid, settings, now=soon), ActiveSession)
        db.commit()
        assert db.get(BrowserSession, row.id_hash).last_seen.replace(tzinfo=UTC) == t0
        later = t0 + timedelta(seconds=settings.session_touch_interval + 1)
        assert isinstance(check_session(db, sid, settings, now=later), ActiveSession)
        db.commit()
        db.expire_all()
        assert db.get(BrowserSession, row.id_hash).last_seen.replace(tzinfo=UTC) == later
        # Idle too long: refused and removed.
        idle = later + timedelta(seconds=settings.session_idle_ttl + 1)
        refused = check_session(db, sid, settings, now=idle)
        assert isinstance(refused, Refused) and refused.reason == "session_idle"
        db.commit()
        gone = check_session(db, sid, settings)
        assert isinstance(gone, Refused) and gone.reason == "session_unknown"

        # However active, the absolute lifetime ends it.
        sid, row = start_session(db, owner, settings, now=t0)
        db.commit()
        step = timedelta(seconds=settings.session_idle_ttl - 1)
        moment = t0
        while moment + step < t0 + timedelta(seconds=settings.session_ttl):
            moment += step
            assert isinstance(check_session(db, sid, settings, now=moment), ActiveSession)
        refused = check_session(db, sid, settings,
                                now=t0 + timedelta(seconds=settings.session_ttl))
        assert isinstance(refused, Refused) and refused.reason == "session_expired"

        # Role changed, account disabled, every token revoked: the next check refuses.
        for change, reason in (("role", "role_changed"), ("disable", "user_disabled"),
                               ("revoke", "revoked_user")):
            user = db.scalar(select(User).where(User.username == "scientist"))
            assert user is not None
            user.role, user.is_active = "scientist", True
            db.commit()
            sid, _ = start_session(db, user, settings)
            db.commit()
            if change == "role":
                user.role = "model_owner"
            elif change == "disable":
                user.is_active = False
            else:
                revoke_user(db, "scientist")
            db.commit()
            refused = check_session(db, sid, settings)
            assert isinstance(refused, Refused) and refused.reason == reason, refused


# -- the routes ---------------------------------------------------------------------


def test_sign_in_sets_a_strict_cookie_and_check_names_the_user(client: TestClient,
                                                               settings: Settings) -> None:
    page = client.get("/login")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "form-action 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "script" not in csp
    assert page.headers["cache-control"] == "no-store"
    assert 'autocomplete="current-password"' in page.text and '<label for="password">' in page.text
    assert "http" not in page.text.split("<body>")[1], "no external asset or link"

    done = sign_in(client)
    assert done.status_code == 303 and done.headers["location"] == "/mlflow/"
    cookie = done.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    for attribute in ("HttpOnly", "Path=/", "SameSite=strict"):
        assert attribute in cookie
    assert "Secure" not in cookie  # http here; https public URLs get it (next test)

    check = client.get("/api/auth/check", params={"roles": "scientist,model_owner,admin"})
    assert check.status_code == 204
    assert check.headers["x-neuronova-user"] == "owner"
    assert check.headers["x-neuronova-role"] == "model_owner"
    refused = client.get("/api/auth/check", params={"roles": "clinician"},
                         headers={"X-Original-URI": "/somewhere"})
    assert refused.status_code == 403 and "x-neuronova-user" not in refused.headers

    with session_factory(settings.sqlalchemy_url)() as db:
        rows = db.scalars(select(AuditRecord).order_by(AuditRecord.id)).all()
    assert [(r.reason, r.decision) for r in rows][-2:] == [("login", "allow"), ("role", "deny")]
    assert rows[-1].path == "/somewhere" and rows[-1].username == "owner"


def test_secure_cookie_behind_https(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    settings: Settings) -> None:
    secure = settings.model_copy(update={"public_url": "https://pacs.example.org/nn"})
    with TestClient(create_app(secure), base_url="https://pacs.example.org") as https:
        form = https.get("/login")
        assert "Secure" in form.headers["set-cookie"]
        assert 'action="/nn/login"' in form.text
        # The form's cookie is for /nn/login, where the browser posts; the outer proxy
        # strips the prefix, so here it is sent by hand.
        assert "Path=/nn/login" in form.headers["set-cookie"]
        token = _csrf(form.text)
        done = https.post("/login", data={"username": "owner", "password": PASSWORD,
                                          "csrf": token, "next": "/mlflow/"},
                          headers={"Origin": "https://pacs.example.org",
                                   "Cookie": f"neuronova_login_csrf={token}"},
                          follow_redirects=False)
        assert done.status_code == 303 and done.headers["location"] == "/nn/mlflow/"
        assert "Secure" in done.headers["set-cookie"]


def test_bad_password_is_the_token_routes_answer_and_throttled(client: TestClient) -> None:
    wrong = sign_in(client, password="not-the-password")
    assert wrong.status_code == 401
    assert "incorrect username or password" in wrong.text and 'role="alert"' in wrong.text
    assert COOKIE_NAME not in wrong.headers.get("set-cookie", "")
    for _ in range(3):
        sign_in(client, password="not-the-password")
    throttled = sign_in(client)  # even the right password waits now
    assert throttled.status_code == 429 and "try again in" in throttled.text


def test_unsafe_next_and_cross_site_sign_in_are_refused(client: TestClient) -> None:
    evil = sign_in(client, next_path="//evil.example/x")
    assert evil.status_code == 303 and evil.headers["location"] == "/"
    client.cookies.clear()
    cross = sign_in(client, **{"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403 and COOKIE_NAME not in cross.headers.get("set-cookie", "")
    # A form without the cookie's token (posted from a page that is not ours).
    no_token = client.post("/login", data={"username": "owner", "password": PASSWORD,
                                           "csrf": "guess"}, headers={"Origin": BASE})
    assert no_token.status_code == 403


def test_sign_out_needs_the_session_token_and_ends_it(client: TestClient,
                                                      settings: Settings) -> None:
    assert sign_in(client).status_code == 303
    sid = client.cookies[COOKIE_NAME]
    page = client.get("/login")
    assert "Signed in" in page.text and "owner" in page.text
    forged = client.post("/logout", data={"csrf": "not-it"}, headers={"Origin": BASE})
    assert forged.status_code == 403
    assert client.get("/api/auth/check").status_code == 204
    out = client.post("/logout", data={"csrf": _csrf(page.text)}, headers={"Origin": BASE},
                      follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login?signed_out=1"
    with session_factory(settings.sqlalchemy_url)() as db:
        assert db.get(BrowserSession, session_hash(sid)) is None
    client.cookies.set(COOKIE_NAME, sid)  # the old cookie, replayed
    assert client.get("/api/auth/check").status_code == 401


def test_check_with_bearer_tokens_and_csrf_for_cookie_writes(client: TestClient,
                                                             settings: Settings) -> None:
    token = client.post("/api/auth/token", data={"username": "clinician",
                                                 "password": PASSWORD}).json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    ok = client.get("/api/auth/check", params={"roles": "clinician"}, headers=bearer)
    assert ok.status_code == 204 and ok.headers["x-neuronova-user"] == "clinician"
    no = client.get("/api/auth/check", params={"roles": "scientist"}, headers=bearer)
    assert no.status_code == 403
    # A program's POST with a bearer token needs no Origin (no cookie, no CSRF).
    post = client.get("/api/auth/check", params={"roles": "clinician"},
                      headers={**bearer, "X-Original-Method": "POST"})
    assert post.status_code == 204
    bad = client.get("/api/auth/check", headers={"Authorization": "Bearer x.y.z"})
    assert bad.status_code == 401
    # Browsers asking for a page learn where to sign in; programs do not.
    page = client.get("/api/auth/check", headers={"Accept": "text/html",
                                                  "X-Original-URI": "/mlflow/?a=1&b=2"})
    assert page.status_code == 401
    assert page.headers["x-neuronova-login"] == "/login?next=/mlflow/%3Fa%3D1%26b%3D2"
    program = client.get("/api/auth/check", headers={"Accept": "application/json"})
    assert program.status_code == 401 and "x-neuronova-login" not in program.headers

    assert sign_in(client, "scientist").status_code == 303
    roles = {"roles": "scientist"}
    for method, headers, expected in (
        ("POST", {"Sec-Fetch-Site": "same-origin"}, 204),
        ("POST", {"Origin": BASE}, 204),
        ("POST", {"Sec-Fetch-Site": "cross-site"}, 403),
        ("DELETE", {"Origin": "http://evil.example"}, 403),
        ("POST", {}, 403),
        ("GET", {"Sec-Fetch-Site": "cross-site"}, 204),
    ):
        answer = client.get("/api/auth/check", params=roles,
                            headers={"X-Original-Method": method, **headers})
        assert answer.status_code == expected, (method, headers, answer.headers)


# -- nginx ---------------------------------------------------------------------------


def _locations(text: str) -> dict[str, list[str]]:
    """Each ``location`` block's own directive lines (nested ``if`` blocks included)."""
    blocks: dict[str, list[str]] = {"server": []}
    stack: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.endswith("{"):
            head = line[:-1].strip()
            stack.append(head if head.startswith(("location", "server")) else stack[-1]
                         if stack else head)
            if head.startswith("location"):
                blocks[head] = []
            continue
        if line == "}":
            stack.pop()
            continue
        if stack and stack[-1] in blocks:
            blocks[stack[-1]].append(line)
        elif stack and stack[-1].startswith("server"):
            blocks["server"].append(line)
    return blocks


@pytest.mark.parametrize("mlflow", [True, False])
def test_nginx_never_passes_a_clients_identity_headers(settings: Settings, mlflow: bool) -> None:
    from neuronova_lib.stack.render import render_nginx

    text = render_nginx(settings.model_copy(update={"mlflow_enabled": mlflow})).read_text()
    assert ("location /mlflow/" in text) == mlflow
    blocks = _locations(text)
    server = blocks.pop("server")
    for name in ("X-NeuroNova-User", "X-NeuroNova-Role"):
        assert f'proxy_set_header {name} "";' in server
    checked = 0
    for head, lines in blocks.items():
        if not any(line.startswith("proxy_pass") for line in lines):
            continue
        own = [line for line in lines if line.startswith("proxy_set_header")]
        if own:  # a location with its own proxy_set_header inherits none of the server's
            checked += 1
            for name in ("X-NeuroNova-User", "X-NeuroNova-Role"):
                assert any(line.startswith(f"proxy_set_header {name} ") for line in own), head
            if any("auth_request /_auth/" in line for line in lines):
                assert "proxy_set_header X-NeuroNova-User $nn_user;" in own, head
    assert checked >= 5


def test_mlflow_service_settings(settings: Settings) -> None:
    from neuronova_lib.stack.services import mlflow_service, platform_services

    public = settings.model_copy(update={"public_url": "https://pacs.example.org/nn",
                                         "mlflow_port": 18103})
    service = mlflow_service(public)
    argv = service.argv
    option = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
    assert option["--static-prefix"] == "/mlflow" and option["--host"] == "127.0.0.1"
    assert option["--backend-store-uri"] == f"sqlite:///{settings.home / 'mlflow' / 'mlflow.db'}"
    assert option["--artifacts-destination"] == str(settings.home / "mlflow" / "artifacts")
    assert option["--cors-allowed-origins"] == "https://pacs.example.org"
    hosts = option["--allowed-hosts"].split(",")
    assert {"127.0.0.1:*", "localhost", "pacs.example.org", "pacs.example.org:*"} <= set(hosts)
    assert service.env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert service.env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert service.ports == [("127.0.0.1", 18103, "NEURONOVA_MLFLOW_PORT")]
    assert public.mlflow_url == "http://127.0.0.1:18103/mlflow"

    elsewhere = settings.model_copy(update={
        "mlflow_backend_store_uri": "postgresql://mlflow:pw@db.example.org/mlflow",
        "mlflow_artifacts_destination": "s3://models/neuronova"})
    argv = mlflow_service(elsewhere).argv
    assert argv[argv.index("--backend-store-uri") + 1].startswith("postgresql://")
    assert argv[argv.index("--artifacts-destination") + 1] == "s3://models/neuronova"

    names = [s.name for s in platform_services(settings)]
    assert "mlflow" in names and names.index("mlflow") < names.index("nginx")
    off = settings.model_copy(update={"mlflow_enabled": False})
    assert "mlflow" not in [s.name for s in platform_services(off)]
