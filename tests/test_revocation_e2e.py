"""The guard honours the user database and revocations, through the real nginx, guard and API.

Each test makes its own user through the admin API, so what it disables or
revokes touches no other test. The guard learns of a change from its
revocation snapshot, reloaded every half of ``NEURONOVA_REVOCATION_BOUND``:
tests poll with a deadline (twice the bound) instead of sleeping.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from typing import Any

import jwt
import pytest
import requests

from neuronova_lib.config import REPO_ROOT
from test_security_e2e import Answer, assert_refused, bearer, send

pytestmark = pytest.mark.e2e

PASSWORD = "a-long-password-for-e2e"


def admin(platform: Any) -> dict[str, str]:
    return bearer(platform.login("admin"))


def new_user(platform: Any, role: str = "clinician") -> str:
    name = f"u-{secrets.token_hex(4)}"
    made = requests.post(f"{platform.url}/api/users", headers=admin(platform), timeout=10,
                         json={"username": name, "password": PASSWORD, "role": role})
    assert made.status_code == 201, made.text
    return name


def sign_in(platform: Any, username: str, password: str = PASSWORD) -> requests.Response:
    return requests.post(f"{platform.url}/api/auth/token", timeout=30,
                         data={"username": username, "password": password})


def tokens_of(platform: Any, username: str) -> dict[str, str]:
    answer = sign_in(platform, username)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def sign(platform: Any, access: str) -> requests.Response:
    return requests.post(f"{platform.url}/api/pacs/sign", headers=bearer(access), timeout=10,
                         json={"study_uid": platform.study_a.study, "ttl_seconds": 120})


def studies(platform: Any, access: str) -> Answer:
    return send(platform, "GET", "/api/pacs/dicom-web/studies", bearer(access))


def frame(platform: Any, signed_query: str) -> Answer:
    return send(platform, "GET", f"{platform.study_a.frame_path()}?{signed_query}",
                {"Accept": 'multipart/related; type="application/octet-stream"'})


def refused_within_bound(platform: Any, request: Any, reason: str) -> Answer:
    """Poll until the guard refuses (401); fail after twice the bound. Checks the audit row."""
    deadline = time.monotonic() + 2 * platform.settings.revocation_bound + 1
    while True:
        answer = request()
        if answer.status == 401:
            break
        assert answer.status == 200, (answer.status, answer.body[:200])
        assert time.monotonic() < deadline, "the guard still accepts the token past the bound"
        time.sleep(0.1)
    assert_refused(platform, answer, 401, reason)
    return answer


def patch_user(platform: Any, username: str, **change: Any) -> None:
    answer = requests.patch(f"{platform.url}/api/users/{username}", headers=admin(platform),
                            json=change, timeout=10)
    assert answer.status_code == 200, answer.text


# -- users disabled or re-roled ----------------------------------------------------------------


def test_disabled_user_loses_bearer_and_signed_urls_and_cannot_sign(platform: Any) -> None:
    name = new_user(platform)
    access = tokens_of(platform, name)["access_token"]
    signed = sign(platform, access)
    assert signed.status_code == 200, signed.text
    query = signed.json()["query"]
    assert studies(platform, access).status == 200 and frame(platform, query).status == 200

    patch_user(platform, name, is_active=False)
    # Minting is refused at once, from the database, not the guard's snapshot.
    at_once = sign(platform, access)
    assert at_once.status_code == 401 and "disabled" in at_once.json()["detail"]
    refused_within_bound(platform, lambda: studies(platform, access), "user_disabled")
    refused_within_bound(platform, lambda: frame(platform, query), "user_disabled")
    record = assert_refused(platform, studies(platform, access), 401, "user_disabled")
    assert record["username"] == name and record["token_id"]


def test_role_change_refuses_tokens_with_the_old_role(platform: Any) -> None:
    name = new_user(platform, role="scientist")
    access = tokens_of(platform, name)["access_token"]
    query = sign(platform, access).json()["query"]
    patch_user(platform, name, role="clinician")
    refused_within_bound(platform, lambda: studies(platform, access), "role_changed")
    refused_within_bound(platform, lambda: frame(platform, query), "role_changed")
    fresh = tokens_of(platform, name)
    assert fresh["role"] == "clinician"
    assert studies(platform, fresh["access_token"]).status == 200


# -- revocation by jti, by user, by sign-out ------------------------------------------------


def test_revoke_by_jti_refuses_that_token_and_its_signed_urls_only(platform: Any) -> None:
    name = new_user(platform)
    revoked, kept = (tokens_of(platform, name)["access_token"],
                     tokens_of(platform, name)["access_token"])
    query = sign(platform, revoked).json()["query"]
    jti = jwt.decode(revoked, options={"verify_signature": False})["jti"]
    answer = requests.post(f"{platform.url}/api/tokens/revoke", headers=admin(platform),
                           json={"jti": jti}, timeout=10)
    assert answer.status_code == 200, answer.text
    refused_within_bound(platform, lambda: studies(platform, revoked), "revoked")
    refused_within_bound(platform, lambda: frame(platform, query), "revoked")
    assert studies(platform, kept).status == 200
    assert frame(platform, sign(platform, kept).json()["query"]).status == 200


def test_revoke_by_user_with_the_cli(platform: Any) -> None:
    name = new_user(platform)
    old = tokens_of(platform, name)["access_token"]
    query = sign(platform, old).json()["query"]
    env = {**os.environ, "NEURONOVA_HOME": str(platform.settings.home),
           "PYTHONPATH": str(REPO_ROOT)}
    env.pop("NEURONOVA_DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-m", "neuronova_lib.cli", "tokens", "revoke",
                           "--user", name], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"every token {name} holds now" in done.stdout
    refused_within_bound(platform, lambda: studies(platform, old), "revoked_user")
    refused_within_bound(platform, lambda: frame(platform, query), "revoked_user")
    assert sign(platform, old).status_code == 401
    assert studies(platform, tokens_of(platform, name)["access_token"]).status == 200


def test_logout_revokes_the_refresh_family(platform: Any) -> None:
    name = new_user(platform)
    first = tokens_of(platform, name)
    rotated = requests.post(f"{platform.url}/api/auth/refresh", timeout=10,
                            json={"refresh_token": first["refresh_token"]})
    assert rotated.status_code == 200
    latest = rotated.json()
    out = requests.post(f"{platform.url}/api/auth/logout", timeout=10,
                        json={"refresh_token": latest["refresh_token"]})
    assert out.status_code == 204, out.text
    again = requests.post(f"{platform.url}/api/auth/refresh", timeout=10,
                          json={"refresh_token": latest["refresh_token"]})
    assert again.status_code == 401
    for access in (first["access_token"], latest["access_token"]):
        refused_within_bound(platform, lambda a=access: studies(platform, a), "revoked")


# -- sign-in and the sign route's refusals ---------------------------------------------------


def test_disabled_account_answers_like_a_wrong_password(platform: Any) -> None:
    disabled, other = new_user(platform), new_user(platform)
    patch_user(platform, disabled, is_active=False)
    right_but_disabled = sign_in(platform, disabled)
    wrong = sign_in(platform, other, "not-the-password")
    assert right_but_disabled.status_code == wrong.status_code == 401
    assert right_but_disabled.content == wrong.content
    assert (right_but_disabled.headers["WWW-Authenticate"]
            == wrong.headers["WWW-Authenticate"])


def test_sign_in_is_throttled_per_account_with_growing_waits(platform: Any) -> None:
    name, bystander = new_user(platform), new_user(platform)
    for _ in range(platform.settings.signin_free_failures):
        assert sign_in(platform, name, "not-the-password").status_code == 401
    waits = []
    for _ in range(2):
        deadline = time.monotonic() + 30
        while (answer := sign_in(platform, name, "not-the-password")).status_code == 429:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert answer.status_code == 401
        blocked = sign_in(platform, name)
        assert blocked.status_code == 429
        waits.append(int(blocked.headers["Retry-After"]))
    assert waits[0] < waits[1], waits
    assert sign_in(platform, bystander).status_code == 200


def test_sign_refusals_401_and_422_are_audited(platform: Any) -> None:
    no_token = send(platform, "POST", "/api/pacs/sign", {"Content-Type": "application/json"},
                    b'{"study_uid": "1.2.3"}')
    assert no_token.status == 401
    record = platform.wait_for_audit(no_token.request_id)
    assert (record["service"], record["decision"], record["status"], record["reason"]) == (
        "proxy", "deny", 401, "no_token")
    access = platform.login("clinician")
    bad_body = send(platform, "POST", "/api/pacs/sign",
                    {**bearer(access), "Content-Type": "application/json"},
                    b'{"ttl_seconds": "soon"}')
    assert bad_body.status == 422
    record = platform.wait_for_audit(bad_body.request_id)
    assert (record["decision"], record["status"], record["reason"], record["username"]) == (
        "deny", 422, "invalid_request", "clinician")
    assert "ttl_seconds" in record["detail"]


def test_api_401s_are_audited(platform: Any) -> None:
    answer = send(platform, "GET", "/api/users/me", bearer("not-a-jwt"))
    assert answer.status == 401
    record = platform.wait_for_audit(answer.request_id)
    assert (record["service"], record["decision"], record["reason"]) == ("api", "deny", "malformed")
    wrong = send(platform, "POST", "/api/auth/token",
                 {"Content-Type": "application/x-www-form-urlencoded"},
                 b"username=nobody-here&password=wrong-password")
    assert wrong.status == 401
    assert platform.wait_for_audit(wrong.request_id)["reason"] == "bad_credentials"


def test_demo_users_each_have_their_own_password(platform: Any) -> None:
    passwords = platform.local.demo_credentials
    assert set(passwords) == {"clinician", "scientist", "owner", "admin"}
    assert len(set(passwords.values())) == 4
    assert platform.settings.demo_password is None
    for name, password in passwords.items():
        assert sign_in(platform, name, password).status_code == 200
    assert sign_in(platform, "clinician", passwords["admin"]).status_code == 401
