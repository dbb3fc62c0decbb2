"""Sign-in, nginx's auth_request and MLflow behind it, on the real stack.

The session ``platform`` fixture runs MLflow under the supervisor like ``neuronova up``.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select, update

from neuronova_lib.db.browser_sessions import COOKIE_NAME, session_hash
from neuronova_lib.db.engine import session_factory
from neuronova_lib.db.models import BrowserSession

pytestmark = pytest.mark.e2e

MLFLOW_API = "/mlflow/api/2.0/mlflow"


def browser_session(platform: Any, username: str,
                    next_path: str = "/mlflow/") -> requests.Session:
    """A requests session signed in through the form, as a browser would (Origin set)."""
    web = requests.Session()
    form = web.get(f"{platform.url}/login", params={"next": next_path}, timeout=10)
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert form.status_code == 200 and token
    done = web.post(f"{platform.url}/login", timeout=10, allow_redirects=False,
                    headers={"Origin": platform.url},
                    data={"username": username, "password": platform.password(username),
                          "csrf": token.group(1), "next": next_path})
    assert done.status_code == 303, done.text
    assert done.headers["location"] == next_path
    return web


def test_browser_is_sent_to_sign_in_and_program_gets_401(platform: Any) -> None:
    page = requests.get(f"{platform.url}/mlflow/#/experiments", allow_redirects=False,
                        headers={"Accept": "text/html,application/xhtml+xml"}, timeout=10)
    assert page.status_code == 302
    assert page.headers["location"] == "/login?next=/mlflow/"
    program = requests.get(f"{platform.url}{MLFLOW_API}/experiments/search",
                           params={"max_results": 5}, timeout=10)
    assert program.status_code == 401
    assert "not signed in" in program.text
    # A client's own identity headers count for nothing.
    spoof = requests.get(f"{platform.url}{MLFLOW_API}/experiments/search",
                         params={"max_results": 5}, timeout=10,
                         headers={"X-NeuroNova-User": "admin", "X-NeuroNova-Role": "admin"})
    assert spoof.status_code == 401
    refused = platform.wait_for_audit(program.headers["x-request-id"], service="api")
    assert refused["reason"] == "not_signed_in" and refused["path"].startswith("/mlflow/api")


def test_owner_session_opens_mlflow_and_sign_out_ends_it(platform: Any) -> None:
    web = browser_session(platform, "owner")
    cookie = web.cookies[COOKIE_NAME]
    ui = web.get(f"{platform.url}/mlflow/", timeout=10)
    assert ui.status_code == 200 and "<title>MLflow</title>" in ui.text
    search = web.get(f"{platform.url}/mlflow/ajax-api/2.0/mlflow/experiments/search",
                     params={"max_results": 5}, timeout=10)
    assert search.status_code == 200 and "experiments" in search.json()
    # The MLflow UI's own ajax POST (same origin) works; the same POST from another site not.
    name = f"ui-{uuid.uuid4().hex[:8]}"
    create = web.post(f"{platform.url}/mlflow/ajax-api/2.0/mlflow/experiments/create",
                      json={"name": name}, timeout=10,
                      headers={"Origin": platform.url, "Sec-Fetch-Site": "same-origin"})
    assert create.status_code == 200, create.text
    forged = web.post(f"{platform.url}/mlflow/ajax-api/2.0/mlflow/experiments/create",
                      json={"name": name + "-csrf"}, timeout=10,
                      headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert forged.status_code == 403
    audit = platform.wait_for_audit(forged.headers["x-request-id"], service="api")
    assert audit["reason"] == "cross_site" and audit["method"] == "POST"
    # Only the hash of the session id is stored.
    with session_factory(platform.settings.sqlalchemy_url)() as db:
        assert db.get(BrowserSession, session_hash(cookie)) is not None
        assert db.scalar(select(BrowserSession).where(BrowserSession.id_hash == cookie)) is None

    signed_in = web.get(f"{platform.url}/login", timeout=10)
    token = re.search(r'name="csrf" value="([^"]+)"', signed_in.text)
    assert token and "Signed in" in signed_in.text
    out = web.post(f"{platform.url}/logout", data={"csrf": token.group(1)}, timeout=10,
                   headers={"Origin": platform.url}, allow_redirects=False)
    assert out.status_code == 303
    old = requests.get(f"{platform.url}/mlflow/", cookies={COOKIE_NAME: cookie}, timeout=10,
                       headers={"Accept": "text/html"}, allow_redirects=False)
    assert old.status_code == 302 and old.headers["location"].startswith("/login")


def test_forged_expired_and_clinician_sessions_are_refused(platform: Any) -> None:
    url = f"{platform.url}{MLFLOW_API}/experiments/search?max_results=1"
    forged = requests.get(url, cookies={COOKIE_NAME: "A" * 43}, timeout=10)
    assert forged.status_code == 401

    web = browser_session(platform, "scientist")
    assert web.get(url, timeout=10).status_code == 200
    with session_factory(platform.settings.sqlalchemy_url)() as db:
        db.execute(update(BrowserSession)
                   .where(BrowserSession.id_hash == session_hash(web.cookies[COOKIE_NAME]))
                   .values(expires_at=BrowserSession.created_at))
        db.commit()
    expired = web.get(url, timeout=10)
    assert expired.status_code == 401
    assert platform.wait_for_audit(expired.headers["x-request-id"],
                                   service="api")["reason"] == "session_expired"

    clinician = browser_session(platform, "clinician", next_path="/")
    refused = clinician.get(f"{platform.url}/mlflow/", timeout=10,
                            headers={"Accept": "text/html"}, allow_redirects=False)
    assert refused.status_code == 403 and "this needs the role" in refused.text
    audit = platform.wait_for_audit(refused.headers["x-request-id"], service="api")
    assert (audit["reason"], audit["username"]) == ("role", "clinician")


def test_mlflow_client_with_a_platform_token(platform: Any, monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    tracking = f"{platform.url}/mlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", platform.login("scientist"))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client = MlflowClient(tracking_uri=tracking)
    experiment = client.create_experiment(f"notebook-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment)
    client.log_param(run.info.run_id, "lr", "0.001")
    client.log_metric(run.info.run_id, "heldout_dice_wt", 0.9)
    (tmp_path / "notes.txt").write_text("artifact through the proxy\n")
    client.log_artifact(run.info.run_id, str(tmp_path / "notes.txt"))
    client.set_terminated(run.info.run_id)
    name = f"model-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/notes.txt",
                                          run_id=run.info.run_id)
    assert client.get_run(run.info.run_id).data.metrics["heldout_dice_wt"] == 0.9
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["notes.txt"]
    assert Path(client.download_artifacts(run.info.run_id, "notes.txt",
                                          str(tmp_path / "back"))).read_text().startswith("art")

    # Aliases: refused in front of MLflow for everyone, the REST API and the UI's ajax-api.
    with pytest.raises(MlflowException, match="403|model_alias_gate_only"):
        client.set_registered_model_alias(name, "champion", version.version)
    owner = {"Authorization": f"Bearer {platform.login('owner')}"}
    for method, path in (
        ("POST", "/mlflow/api/2.0/mlflow/registered-models/alias"),
        ("DELETE", "/mlflow/ajax-api/2.0/mlflow/registered-models/alias"),
        ("POST", "/mlflow/api/2.0/mlflow/registered-models/%61lias"),
        ("POST", "/mlflow/api/2.0/mlflow//registered-models/alias/"),
        ("POST", "/mlflow/api/2.0/mlflow/registered-models/rename"),
        ("DELETE", "/mlflow/api/2.0/mlflow/registered-models/delete"),
        ("DELETE", "/mlflow/ajax-api/2.0/mlflow/model-versions/delete"),
    ):
        answer = requests.request(method, platform.url + path, headers=owner, timeout=10,
                                  json={"name": name, "alias": "champion",
                                        "version": version.version, "new_name": "x"})
        assert answer.status_code == 403, (method, path, answer.text)
        assert answer.json()["reason"] == "model_alias_gate_only"
    assert platform.wait_for_audit(answer.headers["x-request-id"])["reason"] == (
        "model_alias_gate_only")
    # The promotion gate's way (loopback, straight to MLflow) works, and reading it through
    # nginx is allowed.
    MlflowClient(tracking_uri=platform.settings.mlflow_url).set_registered_model_alias(
        name, "champion", version.version)
    assert client.get_model_version_by_alias(name, "champion").version == version.version
    assert client.get_registered_model(name).name == name

    # A clinician's token: no MLflow at all.
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", platform.login("clinician"))
    with pytest.raises(MlflowException, match="403|needs the role"):
        MlflowClient(tracking_uri=tracking).search_experiments()


@pytest.mark.parametrize("mlflow", [True, False])
def test_nginx_accepts_the_config_with_and_without_mlflow(tmp_path: Path, mlflow: bool) -> None:
    import shutil
    import subprocess

    from neuronova_lib.config import Settings
    from neuronova_lib.stack.render import render_nginx

    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    settings = Settings(home=tmp_path, mlflow_enabled=mlflow)
    path = render_nginx(settings)
    result = subprocess.run([nginx, "-t", "-c", str(path), "-p", str(settings.run_dir),
                             "-e", str(tmp_path / "err.log")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "[warn]" not in result.stderr, result.stderr
