"""Revocation, sign-out and sign-in throttling in the API, on a real SQLite data dir.

The same rules seen through the whole stack (nginx, guard) are in
``test_revocation_e2e.py``; here the API runs in-process with FastAPI's
``TestClient`` and the guard's snapshot is read from the same database.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from neuronova_lib.cli import main as neuronova
from neuronova_lib.config import Settings
from neuronova_lib.db.engine import get_engine, session_factory
from neuronova_lib.db.models import AuditRecord, RefreshToken, SignInFailure
from neuronova_lib.db.revocation import RevocationWatcher, load_snapshot
from neuronova_lib.db.throttle import delay_after
from neuronova_lib.db.users import create_user
from neuronova_lib.security.tokens import Claims
from services.api.app import create_app
from test_api import bearer, login, postgres_url, settings  # noqa: F401 - same fixtures

PASSWORD = "a-long-password"


@pytest.fixture
def app(settings: Settings) -> FastAPI:  # noqa: F811
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI, settings: Settings) -> Iterator[TestClient]:  # noqa: F811
    with TestClient(app) as test_client:
        with session_factory(settings.sqlalchemy_url)() as session:
            create_user(session, "root", PASSWORD, "admin")
            for name in ("ada", "bob", "cy"):
                create_user(session, name, PASSWORD, "scientist")
            session.commit()
        yield test_client


def sign_in(client: TestClient, username: str) -> dict[str, str]:
    answer = login(client, username, PASSWORD)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def me(client: TestClient, token: str) -> int:
    return client.get("/api/users/me", headers=bearer(token)).status_code


def claims_of(app: FastAPI, token: str, typ: str = "access") -> Claims:
    return app.state.tokens.verify(token, typ)


def last_audit(settings: Settings, path: str) -> AuditRecord:  # noqa: F811
    with session_factory(settings.sqlalchemy_url)() as session:
        row = session.scalars(select(AuditRecord).where(AuditRecord.path == path)
                              .order_by(AuditRecord.id.desc())).first()
    assert row is not None, f"no audit record for {path}"
    return row


# -- the snapshot the guard reads -------------------------------------------------------------


def test_snapshot_refuses_disabled_re_roled_revoked_and_older_tokens(
    settings: Settings, client: TestClient, app: FastAPI  # noqa: F811
) -> None:
    tokens = app.state.tokens
    engine = get_engine(settings.sqlalchemy_url)
    ada = claims_of(app, sign_in(client, "ada")["access_token"])
    signed, _ = tokens.mint("ada", "scientist", "signed", 60, studies=["1.2.3"], parent=ada.jti)
    signed_claims = tokens.verify(signed, "signed")
    ghost = tokens.verify(tokens.mint("ghost", "scientist", "access", 60)[0], "access")
    with engine.connect() as conn:
        snapshot = load_snapshot(conn)
    assert snapshot.refusal(ada) is None and snapshot.refusal(signed_claims) is None
    assert snapshot.refusal(ghost).reason == "unknown_user"  # type: ignore[union-attr]

    root = sign_in(client, "root")["access_token"]
    assert client.post("/api/tokens/revoke", headers=bearer(root),
                       json={"jti": ada.jti}).status_code == 200
    with engine.connect() as conn:
        snapshot = load_snapshot(conn)
    assert snapshot.refusal(ada).reason == "revoked"  # type: ignore[union-attr]
    # The signed URL minted with the revoked token goes with it.
    assert snapshot.refusal(signed_claims).reason == "revoked"  # type: ignore[union-attr]

    bob = claims_of(app, sign_in(client, "bob")["access_token"])
    assert client.patch("/api/users/bob", headers=bearer(root),
                        json={"role": "clinician"}).status_code == 200
    cy = claims_of(app, sign_in(client, "cy")["access_token"])
    assert client.patch("/api/users/cy", headers=bearer(root),
                        json={"is_active": False}).status_code == 200
    with engine.connect() as conn:
        snapshot = load_snapshot(conn)
    assert snapshot.refusal(bob).reason == "role_changed"  # type: ignore[union-attr]
    assert snapshot.refusal(cy).reason == "user_disabled"  # type: ignore[union-attr]
    assert snapshot.refusal(claims_of(app, sign_in(client, "bob")["access_token"])) is None


def test_a_token_minted_just_before_the_snapshot_is_judged_by_it() -> None:
    """``iat`` is rounded to the millisecond: a token minted half a millisecond before the
    snapshot may carry a later ``iat``, and must not pass unjudged (CI once saw an unknown
    user's token pass that way)."""
    from neuronova_lib.db.revocation import IAT_ROUNDING_S, RevocationSnapshot

    taken = 1_796_000_000.0007
    snapshot = RevocationSnapshot(users={}, revoked=frozenset(), taken_wall=taken)

    def ghost(iat: float) -> Claims:
        return Claims(sub="ghost", role="scientist", typ="access", jti="j", exp=taken + 60,
                      kid="k", iat=iat)

    rounded_up = round(taken - 0.0001, 3)  # minted before the snapshot, iat after it
    assert rounded_up > taken
    assert snapshot.refusal(ghost(rounded_up)).reason == "unknown_user"  # type: ignore[union-attr]
    # A token minted after the snapshot (and its margin) is newer than what it knows.
    assert snapshot.refusal(ghost(taken + IAT_ROUNDING_S + 0.001)) is None


def test_watcher_fails_closed_when_its_snapshot_is_older_than_the_bound(
    settings: Settings, client: TestClient, app: FastAPI  # noqa: F811
) -> None:
    ada = claims_of(app, sign_in(client, "ada")["access_token"])
    watcher = RevocationWatcher(get_engine(settings.sqlalchemy_url), bound=0.5)
    assert watcher.refusal(ada).status == 503  # type: ignore[union-attr]  # not loaded yet
    watcher.reload()
    assert watcher.refusal(ada) is None
    time.sleep(0.6)  # no thread reloads it: it goes stale
    refused = watcher.refusal(ada)
    assert refused is not None and (refused.status, refused.reason) == (503, "revocation_stale")
    watcher.start()
    try:
        assert watcher.refusal(ada) is None
    finally:
        watcher.stop()


# -- revocation in the API ---------------------------------------------------------------------


def test_revoke_by_jti_leaves_the_users_other_tokens(client: TestClient, app: FastAPI,
                                                      settings: Settings) -> None:  # noqa: F811
    first, second = sign_in(client, "ada")["access_token"], sign_in(client, "ada")["access_token"]
    root = sign_in(client, "root")["access_token"]
    jti = claims_of(app, first).jti
    answer = client.post("/api/tokens/revoke", headers=bearer(root), json={"jti": jti})
    assert answer.status_code == 200, answer.text
    assert answer.json()["guard_bound_s"] == settings.revocation_bound
    assert me(client, first) == 401
    assert me(client, second) == 200
    record = last_audit(settings, "/api/users/me")
    assert (record.decision, record.status, record.reason, record.username) == (
        "deny", 401, "revoked", "ada")
    # Only admins revoke; naming both or neither is a 422.
    assert client.post("/api/tokens/revoke", headers=bearer(second),
                       json={"jti": jti}).status_code == 403
    assert client.post("/api/tokens/revoke", headers=bearer(root), json={}).status_code == 422
    assert client.post("/api/tokens/revoke", headers=bearer(root),
                       json={"username": "nobody"}).status_code == 404


def test_revoke_by_user_refuses_old_tokens_and_not_new_ones(
    client: TestClient, settings: Settings  # noqa: F811
) -> None:
    old = sign_in(client, "ada")
    root = sign_in(client, "root")["access_token"]
    assert client.post("/api/tokens/revoke", headers=bearer(root),
                       json={"username": "ada"}).status_code == 200
    assert me(client, old["access_token"]) == 401
    assert client.post("/api/auth/refresh",
                       json={"refresh_token": old["refresh_token"]}).status_code == 401
    # A sign-in in the same second as the revocation is not caught by it.
    assert me(client, sign_in(client, "ada")["access_token"]) == 200
    assert me(client, root) == 200


def test_cli_revokes_by_user_and_by_jti(client: TestClient, app: FastAPI,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    by_user, by_jti, kept = (sign_in(client, "ada")["access_token"],
                             sign_in(client, "bob")["access_token"],
                             sign_in(client, "bob")["access_token"])
    assert neuronova(["tokens", "revoke", "--user", "ada"]) == 0
    assert neuronova(["tokens", "revoke", "--jti", claims_of(app, by_jti).jti]) == 0
    assert "within 5 s" in capsys.readouterr().out
    assert (me(client, by_user), me(client, by_jti), me(client, kept)) == (401, 401, 200)
    assert neuronova(["tokens", "revoke", "--user", "nobody"]) == 1
    assert "no user 'nobody'" in capsys.readouterr().err


def test_logout_revokes_the_refresh_family_and_its_access_tokens(
    client: TestClient, settings: Settings  # noqa: F811
) -> None:
    first = sign_in(client, "ada")
    other = sign_in(client, "ada")  # another sign-in: another family
    second = client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    latest = second.json()
    answer = client.post("/api/auth/logout", headers=bearer(latest["access_token"]),
                         json={"refresh_token": latest["refresh_token"]})
    assert answer.status_code == 204, answer.text
    refused = client.post("/api/auth/refresh", json={"refresh_token": latest["refresh_token"]})
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    # Every access token of the family, not only the one sent, is refused.
    assert me(client, first["access_token"]) == 401
    assert me(client, latest["access_token"]) == 401
    assert me(client, other["access_token"]) == 200
    assert client.post("/api/auth/refresh",
                       json={"refresh_token": other["refresh_token"]}).status_code == 200
    with session_factory(settings.sqlalchemy_url)() as session:
        families = {r.family for r in session.scalars(select(RefreshToken))}
    assert len(families) == 2
    assert last_audit(settings, "/api/auth/logout").reason == "logout"
    # Nothing to sign out with, or a forged token: refused and audited.
    assert client.post("/api/auth/logout").status_code == 400
    assert client.post("/api/auth/logout", json={"refresh_token": "x.y.z"}).status_code == 401
    assert last_audit(settings, "/api/auth/logout").reason == "logout_malformed"


def test_disabling_a_user_revokes_their_tokens_and_role_change_takes_effect(
    client: TestClient  # noqa: F811
) -> None:
    ada = sign_in(client, "ada")
    root = sign_in(client, "root")["access_token"]
    assert client.patch("/api/users/ada", headers=bearer(root),
                        json={"is_active": False}).json()["is_active"] is False
    assert me(client, ada["access_token"]) == 401  # disabling revoked it
    assert client.patch("/api/users/ada", headers=bearer(root),
                        json={"is_active": True, "role": "clinician"}).status_code == 200
    # Enabling again does not bring the old tokens back.
    assert me(client, ada["access_token"]) == 401
    assert sign_in(client, "ada")["role"] == "clinician"
    assert client.patch("/api/users/nobody", headers=bearer(root),
                        json={"is_active": False}).status_code == 404


def test_api_401s_are_audited(client: TestClient, app: FastAPI,
                              settings: Settings) -> None:  # noqa: F811
    assert client.get("/api/users/me").status_code == 401
    assert last_audit(settings, "/api/users/me").reason == "no_token"
    assert me(client, "not-a-jwt") == 401
    assert last_audit(settings, "/api/users/me").reason == "malformed"
    expired, _ = app.state.tokens.mint("ada", "scientist", "access", ttl=-60)
    assert me(client, expired) == 401
    assert last_audit(settings, "/api/users/me").reason == "expired"
    assert login(client, "ada", "wrong-password").status_code == 401
    record = last_audit(settings, "/api/auth/token")
    assert (record.decision, record.status, record.reason) == ("deny", 401, "bad_credentials")


# -- sign-in throttling -----------------------------------------------------------------------


def test_delays_double_per_failure_up_to_the_cap(settings: Settings) -> None:  # noqa: F811
    free = settings.signin_free_failures
    assert [delay_after(free + n, settings) for n in range(0, 5)] == [0, 1, 2, 4, 8]
    assert delay_after(free + 100, settings) == settings.signin_delay_max


def _wait_until_admitted(client: TestClient, username: str, password: str,
                         deadline_s: float = 30) -> object:
    """Try until the throttle lets the attempt through; return that answer."""
    deadline = time.monotonic() + deadline_s
    while True:
        answer = login(client, username, password)
        if answer.status_code != 429:
            return answer
        assert time.monotonic() < deadline, "the account never became free again"
        time.sleep(min(0.2, float(answer.headers["Retry-After"])))


def test_sign_in_throttle_grows_per_account(client: TestClient,
                                            settings: Settings) -> None:  # noqa: F811
    free = settings.signin_free_failures
    for _ in range(free):
        assert login(client, "ada", "wrong-password").status_code == 401
    waits = []
    for _ in range(3):
        assert _wait_until_admitted(client, "ada", "wrong-password").status_code == 401
        blocked = login(client, "ada", PASSWORD)  # even the right password waits
        assert blocked.status_code == 429
        assert "try again in" in blocked.json()["detail"]
        waits.append(int(blocked.headers["Retry-After"]))
    assert waits[0] < waits[1] < waits[2], waits
    assert last_audit(settings, "/api/auth/token").reason == "signin_throttled"
    # Another account is not slowed by ada's failures.
    assert login(client, "bob", PASSWORD).status_code == 200
    # Once the wait is over the right password works, and the count starts again.
    assert _wait_until_admitted(client, "ada", PASSWORD).status_code == 200  # type: ignore[attr-defined]
    with session_factory(settings.sqlalchemy_url)() as session:
        assert session.get(SignInFailure, "ada") is None


def test_unknown_and_disabled_accounts_are_throttled_like_any_other(
    client: TestClient, settings: Settings  # noqa: F811
) -> None:
    root = sign_in(client, "root")["access_token"]
    client.patch("/api/users/cy", headers=bearer(root), json={"is_active": False})
    answers = {}
    for name, password in (("cy", PASSWORD), ("nobody", PASSWORD), ("bob", "wrong-password")):
        seen = [login(client, name, password) for _ in range(settings.signin_free_failures + 2)]
        answers[name] = [(a.status_code, a.content) for a in seen]
    assert answers["cy"] == answers["nobody"] == answers["bob"]
    assert answers["cy"][-1][0] == 429


def test_old_failures_are_forgotten(client: TestClient, settings: Settings) -> None:  # noqa: F811
    with session_factory(settings.sqlalchemy_url)() as session:
        long_ago = datetime.now(UTC) - timedelta(seconds=settings.signin_failure_window + 60)
        session.add(SignInFailure(username="ada", failures=50, last_failure_at=long_ago,
                                  blocked_until=None))
        session.commit()
    assert login(client, "ada", "wrong-password").status_code == 401
    with session_factory(settings.sqlalchemy_url)() as session:
        row = session.get(SignInFailure, "ada")
        assert row is not None and row.failures == 1


def test_demo_password_setting_sets_every_demo_user(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Scripted demos: NEURONOVA_DEMO_PASSWORD gives every demo user that one password."""
    from neuronova_lib.db.users import DEMO_USERS, ensure_demo_users

    scripted = Settings(home=tmp_path / "scripted", demo_password="scripted-demo-password")
    assert ensure_demo_users(scripted) == dict.fromkeys(DEMO_USERS, "scripted-demo-password")
    generated = ensure_demo_users(Settings(home=tmp_path / "generated"))
    assert generated is not None and len(set(generated.values())) == len(DEMO_USERS)
    for settings_ in (scripted, Settings(home=tmp_path / "generated")):
        get_engine(settings_.sqlalchemy_url).dispose()


def test_guard_refusal_names_the_user_whose_token_it_was(
    settings: Settings, client: TestClient, app: FastAPI  # noqa: F811
) -> None:
    from services.proxy.guard import Guard

    watcher = RevocationWatcher(get_engine(settings.sqlalchemy_url), bound=5)
    guard = Guard(app.state.tokens, revocations=watcher)
    access = sign_in(client, "ada")["access_token"]
    root = sign_in(client, "root")["access_token"]
    watcher.reload()
    allowed = guard.decide("GET", "/api/pacs/dicom-web/studies", "", f"Bearer {access}")
    assert allowed.allow, allowed
    assert client.patch("/api/users/ada", headers=bearer(root),
                        json={"is_active": False}).status_code == 200
    watcher.reload()
    refused = guard.decide("GET", "/api/pacs/dicom-web/studies", "", f"Bearer {access}")
    assert (refused.allow, refused.status, refused.reason) == (False, 401, "user_disabled")
    assert refused.claims is not None and refused.claims.sub == "ada"


@pytest.mark.e2e
def test_throttle_and_revocation_on_postgresql(postgres_url: str,
                                               settings: Settings) -> None:  # noqa: F811
    from neuronova_lib.db import throttle
    from neuronova_lib.db.migrate import upgrade_database
    from neuronova_lib.db.revocation import revoke_jti, revoke_user

    upgrade_database(postgres_url)
    free = settings.signin_free_failures
    with session_factory(postgres_url)() as session:
        create_user(session, "pg-throttled", PASSWORD, "clinician")
        waits = [throttle.record_failure(session, "pg-throttled", settings)
                 for _ in range(free + 2)]
        session.commit()
        assert waits == [0] * free + [1, 2]
        assert throttle.retry_after(session, "pg-throttled") > 0
        throttle.clear(session, "pg-throttled")
        revoke_jti(session, "pg-jti", reason="test",
                   expires_at=datetime.now(UTC) + timedelta(minutes=5))
        revoke_user(session, "pg-throttled")
        session.commit()
        assert throttle.retry_after(session, "pg-throttled") == 0
    with get_engine(postgres_url).connect() as conn:
        snapshot = load_snapshot(conn)
    assert "pg-jti" in snapshot.revoked
    assert snapshot.users["pg-throttled"][2] > time.time() - 60
