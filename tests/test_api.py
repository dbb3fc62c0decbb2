"""The platform API, its database migrations and its users, against the real thing.

Fast tests drive the real app with FastAPI's ``TestClient`` on a real SQLite
file in a temporary data dir; one test starts the API under uvicorn as a
separate process, as the stack does; the migrations are also run on a
throwaway PostgreSQL cluster when the machine has PostgreSQL and psycopg.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select

from api_settings import service_settings
from neuronova_lib.config import REPO_ROOT, Settings, get_settings
from neuronova_lib.db.engine import get_engine, session_factory
from neuronova_lib.db.migrate import (
    alembic_config,
    current_revision,
    head_revision,
    upgrade_database,
)
from neuronova_lib.db.models import AuditRecord, Base, RefreshToken, User
from neuronova_lib.db.users import (
    DEMO_USERS,
    UserExists,
    authenticate,
    create_user,
    ensure_demo_users,
    demo_password,
    set_password,
)
from neuronova_lib.security.tokens import token_service
from services.api.app import create_app

DEMO_PASSWORD = "demo-password-for-tests"


# -- fixtures ------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings for a fresh data dir, read from the environment like a service does."""
    with service_settings(tmp_path / "home", monkeypatch, DEMO_PASSWORD) as current:
        yield current


@pytest.fixture
def demo(settings: Settings) -> dict[str, str]:
    creds = ensure_demo_users(settings)
    assert creds is not None
    return creds


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI, demo: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def login(client: TestClient | httpx.Client, username: str, password: str = DEMO_PASSWORD
          ) -> httpx.Response:
    return client.post("/api/auth/token", data={"username": username, "password": password})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def audit_rows(settings: Settings, path: str) -> list[AuditRecord]:
    """The audit records of one API path, oldest first."""
    with session_factory(settings.sqlalchemy_url)() as session:
        return list(session.scalars(select(AuditRecord).where(AuditRecord.path == path)
                                    .order_by(AuditRecord.id)))


def token_for(client: TestClient, username: str) -> str:
    response = login(client, username)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


# -- migrations ----------------------------------------------------------------


def assert_schema_matches_models(url: str) -> None:
    with get_engine(url).connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, Base.metadata) == []


def test_upgrade_twice_and_schema_matches_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new-dir' / 'platform.db'}"
    upgrade_database(url)
    upgrade_database(url)  # a second start finds nothing to do
    assert current_revision(url) == head_revision()
    assert_schema_matches_models(url)
    assert stat.S_IMODE((tmp_path / "new-dir").stat().st_mode) == 0o700
    get_engine(url).dispose()


def test_upgrade_adopts_a_database_made_by_create_all(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    Base.metadata.create_all(get_engine(url))
    upgrade_database(url)
    assert current_revision(url) == head_revision()
    assert_schema_matches_models(url)
    get_engine(url).dispose()


def test_upgrade_refuses_a_half_made_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'half.db'}"
    Base.metadata.tables["users"].create(get_engine(url))
    with pytest.raises(RuntimeError, match="only some of the platform tables"):
        upgrade_database(url)
    assert "alembic_version" not in inspect(get_engine(url)).get_table_names()
    get_engine(url).dispose()


def test_migrations_render_for_postgresql() -> None:
    """Offline mode: the SQL PostgreSQL would run, without a server."""
    cfg = alembic_config("postgresql+psycopg://user:p%40ss@db.invalid/neuronova")
    out = io.StringIO()
    cfg.stdout = out
    with contextlib.redirect_stdout(out):
        command.upgrade(cfg, "head", sql=True)
    sql = out.getvalue()
    assert "CREATE TABLE users" in sql and "TIMESTAMP WITH TIME ZONE" in sql
    assert "CREATE UNIQUE INDEX ix_users_username" in sql
    assert "CREATE INDEX ix_audit_decision_time ON audit (decision, time)" in sql


@pytest.fixture()
def postgres_url(postgres_socket: Path) -> Iterator[str]:
    url = f"postgresql+psycopg://postgres@/postgres?host={postgres_socket}"
    yield url
    get_engine(url).dispose()


@pytest.mark.e2e
def test_migrations_on_postgresql(postgres_url: str) -> None:
    upgrade_database(postgres_url)
    upgrade_database(postgres_url)
    assert current_revision(postgres_url) == head_revision()
    assert_schema_matches_models(postgres_url)
    with session_factory(postgres_url)() as session:
        create_user(session, "pg-user", "a-long-password", "scientist")
        session.commit()
        assert authenticate(session, "pg-user", "a-long-password") is not None


# -- users ---------------------------------------------------------------------


def test_demo_users_idempotent_with_private_file(settings: Settings) -> None:
    first = ensure_demo_users(settings)
    assert first == {name: DEMO_PASSWORD for name in ("clinician", "scientist", "owner", "admin")}
    path = settings.home / "demo-users.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = (path.read_text(), path.stat().st_mtime_ns)
    with session_factory(settings.sqlalchemy_url)() as session:
        hashes = {u.username: u.password_hash for u in session.scalars(select(User))}
        roles = {u.username: u.role for u in session.scalars(select(User))}
    assert roles == {"clinician": "clinician", "scientist": "scientist",
                     "owner": "model_owner", "admin": "admin"}

    assert ensure_demo_users(settings) == first
    assert (path.read_text(), path.stat().st_mtime_ns) == before
    with session_factory(settings.sqlalchemy_url)() as session:
        assert {u.username: u.password_hash for u in session.scalars(select(User))} == hashes


def test_demo_users_generated_password(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NEURONOVA_DEMO_PASSWORD")
    get_settings.cache_clear()
    creds = ensure_demo_users(get_settings())
    assert creds is not None
    password = creds["admin"]
    assert len(password) >= 16 and password != DEMO_PASSWORD
    # Each demo user has its own password: the admin's is known to no other role.
    assert len(set(creds.values())) == len(DEMO_USERS)
    assert all(len(p) >= 16 for p in creds.values())
    recorded = json.loads((settings.home / "demo-users.json").read_text())
    assert {u["username"]: u["password"] for u in recorded["users"]} == creds
    assert "password" not in recorded  # no shared password left in the file
    assert all(demo_password(get_settings(), name) == creds[name] for name in DEMO_USERS)
    # Setting a password later does not change the users made before.
    monkeypatch.setenv("NEURONOVA_DEMO_PASSWORD", "another-password")
    get_settings.cache_clear()
    assert ensure_demo_users(get_settings()) == creds


def test_demo_users_without_their_file_are_left_alone(settings: Settings) -> None:
    ensure_demo_users(settings)
    (settings.home / "demo-users.json").unlink()
    assert ensure_demo_users(settings) is None
    assert not (settings.home / "demo-users.json").exists()


def test_create_authenticate_set_password(settings: Settings) -> None:
    upgrade_database(settings.sqlalchemy_url)
    with session_factory(settings.sqlalchemy_url)() as session:
        user = create_user(session, "ada", "first-password", "scientist", full_name="Ada")
        assert user.password_hash.startswith("$argon2id$")
        assert "first-password" not in user.password_hash
        with pytest.raises(UserExists):
            create_user(session, "ada", "first-password", "scientist")
        with pytest.raises(ValueError, match="unknown role"):
            create_user(session, "bob", "first-password", "surgeon")
        with pytest.raises(ValueError, match="too short"):
            create_user(session, "bob", "short", "clinician")
        with pytest.raises(ValueError, match="not allowed"):
            create_user(session, "../bob", "first-password", "clinician")
        session.commit()
        assert authenticate(session, "ada", "first-password") is user
        assert authenticate(session, "ada", "wrong-password") is None
        assert authenticate(session, "nobody", "first-password") is None
        set_password(session, "ada", "second-password")
        session.commit()
        assert authenticate(session, "ada", "first-password") is None
        assert authenticate(session, "ada", "second-password") is user


# -- the API: sign-in and tokens -----------------------------------------------


def test_health_and_docs(client: TestClient) -> None:
    assert client.get("/api/health").json() == {"status": "ok"}
    assert "/api/auth/token" in client.get("/api/openapi.json").json()["paths"]
    assert client.get("/api/docs").status_code == 200
    assert client.get("/health").status_code == 404  # everything lives under /api


def test_login_ok_and_me(client: TestClient) -> None:
    response = login(client, "clinician")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["role"] == "clinician"
    assert body["expires_in"] == 900
    assert body["refresh_token"]
    me = client.get("/api/users/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json() == {"username": "clinician", "role": "clinician",
                         "full_name": "Demo Clinician"}


@pytest.mark.parametrize("username,password", [("clinician", "wrong-password"),
                                               ("no-such-user", DEMO_PASSWORD)])
def test_login_refused_says_username_or_password(
    client: TestClient, username: str, password: str
) -> None:
    response = login(client, username, password)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "incorrect username or password" in response.json()["detail"]


def test_login_disabled_account_answers_like_a_wrong_password(
    client: TestClient, settings: Settings
) -> None:
    with session_factory(settings.sqlalchemy_url)() as session:
        create_user(session, "gone", "a-long-password", "clinician", is_active=False)
        create_user(session, "here", "a-long-password", "clinician")
        session.commit()
    disabled = login(client, "gone", "a-long-password")
    wrong = login(client, "here", "not-the-password")
    assert disabled.status_code == wrong.status_code == 401
    assert disabled.content == wrong.content
    assert disabled.headers["WWW-Authenticate"] == wrong.headers["WWW-Authenticate"]
    assert "disabled" not in disabled.text
    # The audit log, read by admins only, says which it was.
    reasons = audit_rows(settings, "/api/auth/token")
    assert [(r.username, r.status, r.reason) for r in reasons[-2:]] == [
        ("gone", 401, "inactive"), ("here", 401, "bad_credentials")]


def test_me_needs_a_valid_token(client: TestClient) -> None:
    missing = client.get("/api/users/me")
    assert missing.status_code == 401
    assert "POST /api/auth/token" in missing.json()["detail"]
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    garbage = client.get("/api/users/me", headers=bearer("not-a-jwt"))
    assert garbage.status_code == 401
    assert garbage.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_expired_token_is_refused(client: TestClient, app: FastAPI) -> None:
    token, _ = app.state.tokens.mint("clinician", "clinician", "access", ttl=-60)
    response = client.get("/api/users/me", headers=bearer(token))
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_refresh_token_is_not_an_access_token(client: TestClient) -> None:
    refresh = login(client, "clinician").json()["refresh_token"]
    response = client.get("/api/users/me", headers=bearer(refresh))
    assert response.status_code == 401


def test_disabled_account_token_stops_working(client: TestClient, settings: Settings) -> None:
    token = token_for(client, "scientist")
    with session_factory(settings.sqlalchemy_url)() as session:
        session.scalars(select(User).where(User.username == "scientist")).one().is_active = False
        session.commit()
    assert client.get("/api/users/me", headers=bearer(token)).status_code == 403


def test_refresh_rotation_and_reuse_detection(client: TestClient, settings: Settings) -> None:
    first = login(client, "scientist").json()
    second = client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200, second.text
    second_body = second.json()
    assert second_body["refresh_token"] != first["refresh_token"]
    assert client.get("/api/users/me",
                      headers=bearer(second_body["access_token"])).status_code == 200

    # The first refresh token is spent: presenting it again looks like theft.
    reuse = client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401
    assert "already used" in reuse.json()["detail"]
    # ...so the legitimate newer one was revoked too: everyone signs in again.
    after = client.post("/api/auth/refresh", json={"refresh_token": second_body["refresh_token"]})
    assert after.status_code == 401
    assert "revoked" in after.json()["detail"]
    with session_factory(settings.sqlalchemy_url)() as session:
        rows = session.scalars(
            select(RefreshToken).where(RefreshToken.username == "scientist")).all()
        assert rows and all(r.revoked for r in rows)
    # Other users are not affected.
    other = login(client, "clinician").json()["refresh_token"]
    assert client.post("/api/auth/refresh", json={"refresh_token": other}).status_code == 200
    # Signing in again works.
    assert login(client, "scientist").status_code == 200


def test_refresh_refuses_garbage_and_access_tokens(client: TestClient) -> None:
    access = token_for(client, "clinician")
    for bad in ("garbage", access):
        response = client.post("/api/auth/refresh", json={"refresh_token": bad})
        assert response.status_code == 401
    assert client.post("/api/auth/refresh", json={}).status_code == 422


# -- roles and the audit log ---------------------------------------------------


def test_wrong_role_on_audit_is_403_and_audited(client: TestClient) -> None:
    token = token_for(client, "clinician")
    response = client.get("/api/audit", headers=bearer(token))
    assert response.status_code == 403
    assert "admin" in response.json()["detail"]
    admin = token_for(client, "admin")
    denied = client.get("/api/audit", headers=bearer(admin),
                        params={"decision": "deny", "username": "clinician"}).json()
    assert denied[0]["reason"] == "role" and denied[0]["path"] == "/api/audit"


def test_admin_sees_login_audit(client: TestClient) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    assert login(client, "clinician").status_code == 200
    assert login(client, "clinician", "wrong-password").status_code == 401
    assert login(client, "mallory", "whatever-password").status_code == 401
    admin = token_for(client, "admin")

    records = client.get("/api/audit", headers=bearer(admin)).json()
    assert [r["username"] for r in records[:4]] == ["admin", "mallory", "clinician", "clinician"]
    times = [r["time"] for r in records]
    assert times == sorted(times, reverse=True)  # newest first
    newest = records[0]
    assert newest["service"] == "api" and newest["decision"] == "allow"
    assert newest["reason"] == "login" and newest["method"] == "POST"
    assert newest["client"] and newest["token_id"]
    assert datetime.fromisoformat(newest["time"]) >= start

    def query(**params: object) -> list[dict[str, object]]:
        response = client.get("/api/audit", headers=bearer(admin), params=params)
        assert response.status_code == 200, response.text
        return list(response.json())

    denied = query(decision="deny")
    assert {(r["username"], r["reason"], r["detail"]) for r in denied} == {
        ("clinician", "bad_credentials", "wrong password"),
        ("mallory", "bad_credentials", "unknown user"),
    }
    assert [r["reason"] for r in query(username="clinician")] == ["bad_credentials", "login"]
    assert len(query(limit=2)) == 2
    assert query(service="proxy") == []
    assert query(study="1.2.3") == []
    assert len(query(since=start.isoformat())) == len(records)
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert query(since=future) == []
    # A time without a zone is UTC.
    assert len(query(since=start.replace(tzinfo=None).isoformat())) == len(records)
    for bad in ({"limit": 1001}, {"limit": 0}, {"decision": "maybe"}, {"since": "yesterday"}):
        assert client.get("/api/audit", headers=bearer(admin), params=bad).status_code == 422


def test_admin_lists_and_creates_users(client: TestClient) -> None:
    admin = token_for(client, "admin")
    listed = client.get("/api/users", headers=bearer(admin)).json()
    assert [u["username"] for u in listed] == sorted(DEMO_USERS)
    new = {"username": "ada", "password": "a-long-password", "role": "scientist",
           "full_name": "Ada Lovelace"}
    created = client.post("/api/users", headers=bearer(admin), json=new)
    assert created.status_code == 201, created.text
    assert created.json()["role"] == "scientist" and created.json()["is_active"] is True
    assert "password" not in created.json() and "password_hash" not in created.json()
    assert client.post("/api/users", headers=bearer(admin), json=new).status_code == 409
    bad_role = client.post("/api/users", headers=bearer(admin), json={**new, "username": "x",
                                                                      "role": "surgeon"})
    assert bad_role.status_code == 422
    short = client.post("/api/users", headers=bearer(admin),
                        json={**new, "username": "y", "password": "short"})
    assert short.status_code == 422
    signed_in = login(client, "ada", "a-long-password")
    assert signed_in.status_code == 200 and signed_in.json()["role"] == "scientist"
    # Only admins manage users.
    scientist = token_for(client, "scientist")
    assert client.get("/api/users", headers=bearer(scientist)).status_code == 403
    assert client.post("/api/users", headers=bearer(scientist),
                       json={**new, "username": "z"}).status_code == 403


# -- keys ----------------------------------------------------------------------


def test_key_rotation_keeps_old_tokens_and_revocation_refuses_them(
    client: TestClient, settings: Settings
) -> None:
    old = login(client, "clinician").json()
    # Another process (`neuronova keys rotate`) changes the key file; the app follows it.
    keys = token_service(settings).keyring
    old_kid = keys.signing_key().kid
    new_kid = keys.rotate()

    def me(token: str) -> int:
        return client.get("/api/users/me", headers=bearer(token)).status_code

    assert me(old["access_token"]) == 200  # retired keys still verify
    # Judge by the kid in the token the API issued, not by the API's keyring at some later
    # instant: the keyring may reload between the login and the check.
    deadline = time.monotonic() + 5
    new = login(client, "clinician").json()
    while jwt.get_unverified_header(new["access_token"])["kid"] != new_kid:
        assert time.monotonic() < deadline, "the API did not pick up the rotated key"
        time.sleep(0.1)
        new = login(client, "clinician").json()
    assert me(new["access_token"]) == 200

    keys.revoke(old_kid)
    deadline = time.monotonic() + 5
    while me(old["access_token"]) != 401:
        assert time.monotonic() < deadline, "the API still accepts a revoked key"
        time.sleep(0.1)
    response = client.get("/api/users/me", headers=bearer(old["access_token"]))
    assert "revoked" in response.json()["detail"]
    assert client.post("/api/auth/refresh",
                       json={"refresh_token": old["refresh_token"]}).status_code == 401
    assert me(new["access_token"]) == 200


# -- the real server -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.e2e
def test_uvicorn_serves_the_api(settings: Settings, demo: dict[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEURONOVA_")}
    env["NEURONOVA_HOME"] = str(settings.home)
    log_path = tmp_path / "uvicorn.log"
    for _attempt in range(3):  # the port may be taken between choosing and binding it
        port = free_port()
        with open(log_path, "wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "services.api.app:create_app",
                 "--host", "127.0.0.1", "--port", str(port)],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        try:
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=5) as http:
                deadline = time.monotonic() + 30
                while server.poll() is None:
                    try:
                        if http.get("/api/health").json() == {"status": "ok"}:
                            break
                    except httpx.TransportError:
                        pass
                    assert time.monotonic() < deadline, log_path.read_text()
                    time.sleep(0.1)
                else:
                    continue  # exited early (port taken?): try another port
                token = login(http, "owner", demo["owner"]).json()["access_token"]
                me = http.get("/api/users/me", headers=bearer(token))
                assert me.status_code == 200
                assert me.json()["role"] == "model_owner"
                assert login(http, "owner", "wrong-password").status_code == 401
                return
        finally:
            if server.poll() is None:
                server.terminate()
                try:
                    server.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
    pytest.fail(f"uvicorn did not start:\n{log_path.read_text()}")
