"""The hub's pieces that need no running process: act claims, run ids, client secrets,
the kernel environment, a token source feeding BearerAuth, the hub config's profiles."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import requests

from neuronova_lib.db.audit import run_id_header
from neuronova_lib.dicomweb.auth import RUN_HEADER, BearerAuth
from neuronova_lib.hub.secrets import client_matches, hub_client, proxy_token
from neuronova_lib.hub.spawn import SERVER_TOKEN_SCOPES, kernel_environment
from neuronova_lib.security.keyring import KeyRing
from neuronova_lib.security.tokens import TokenError, TokenService
from neuronova_lib.stack.local import local_settings
from services.api.token_exchange import server_of


def _service(tmp_path: Path) -> TokenService:
    return TokenService(KeyRing(tmp_path / "keys.json"), "neuronova", "neuronova")


def _jwt(exp: float, iat: float) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{part({'alg': 'none'})}.{part({'exp': exp, 'iat': iat})}.sig"


def test_act_claim_survives_verification_and_names_the_server(tmp_path: Path) -> None:
    tokens = _service(tmp_path)
    act = {"sub": "jupyterhub-server:scientist/", "server": "scientist/", "kernel": "k1"}
    token, _ = tokens.mint("scientist", "scientist", "access", 60, act=act)
    claims = tokens.verify(token, "access")
    assert claims.act == act and claims.server == "scientist/"
    plain = tokens.verify(tokens.mint("scientist", "scientist", "access", 60)[0], "access")
    assert plain.act is None and plain.server is None


def test_a_malformed_act_claim_is_refused(tmp_path: Path) -> None:
    tokens = _service(tmp_path)
    token, _ = tokens.mint("scientist", "scientist", "access", 60,
                           act={"server": ["not", "a", "string"]})  # type: ignore[dict-item]
    with pytest.raises(TokenError) as refused:
        tokens.verify(token, "access")
    assert refused.value.reason == "bad_act"


@pytest.mark.parametrize(("sent", "kept"), [
    ("3f2a9c1e0b", "3f2a9c1e0b"), (b"run_1-a", "run_1-a"), ("  abc ", "abc"),
    ("a" * 80, "a" * 64), ("", None), (None, None), ("x'; DROP", None), ("a/b", None),
])
def test_only_plain_run_ids_are_kept(sent: str | bytes | None, kept: str | None) -> None:
    assert run_id_header(sent) == kept


def test_server_is_read_from_the_token_scopes() -> None:
    assert server_of({"scopes": ["users:activity!user=scientist",
                                 "access:servers!server=scientist/",
                                 "access:services!service=neuronova-token"]}) == "scientist/"
    assert server_of({"scopes": ["access:servers!user=scientist"]}) is None  # a user's token
    assert server_of({"scopes": ["access:servers!server=a/", "access:servers!server=b/"]}) is None
    assert "access:services!service=neuronova-token" in SERVER_TOKEN_SCOPES


def test_hub_secrets_are_private_stable_and_checked_in_constant_time(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    assert not client_matches(secrets, "neuronova-hub", "anything")  # no hub set up yet
    client = hub_client(secrets)
    assert hub_client(secrets) == client and proxy_token(secrets) == proxy_token(secrets)
    for name in ("hub-client.json", "hub-proxy.json"):
        assert (secrets / name).stat().st_mode & 0o777 == 0o600
    assert client_matches(secrets, client["client_id"], client["client_secret"])
    assert not client_matches(secrets, client["client_id"], client["client_secret"] + "x")
    assert not client_matches(secrets, "someone-else", client["client_secret"])


def test_kernel_environment_points_at_the_public_platform(tmp_path: Path) -> None:
    settings = local_settings(tmp_path, dask_enabled=True)
    env = kernel_environment(settings)
    assert env["NEURONOVA_URL"] == settings.public_url
    assert env["NEURONOVA_TOKEN_SERVICE_URL"] == f"{settings.public_url}/services/neuronova-token/"
    assert env["MLFLOW_TRACKING_URI"] == f"{settings.public_url}/mlflow"
    assert env["DASK_SCHEDULER_ADDRESS"] == f"tcp://127.0.0.1:{settings.dask_port}"
    dashboard = f"{settings.public_url}/dask/status"
    assert env["NEURONOVA_DASK_DASHBOARD_URL"] == dashboard
    assert env["DASK_DISTRIBUTED__DASHBOARD__LINK"] == dashboard
    without = kernel_environment(local_settings(tmp_path))
    assert not any(k.startswith(("DASK_", "NEURONOVA_DASK_")) for k in without)
    # Another cluster's scheduler: its address, but no /dask/ on this platform to link to.
    other = kernel_environment(local_settings(tmp_path, dask_scheduler="tcp://10.0.0.5:8786"))
    assert other["DASK_SCHEDULER_ADDRESS"] == "tcp://10.0.0.5:8786"
    assert "NEURONOVA_DASK_DASHBOARD_URL" not in other
    assert not any("TOKEN" in k and k != "NEURONOVA_TOKEN_SERVICE_URL" for k in env)


def test_bearer_auth_renews_from_its_source_and_sends_the_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    issued: list[str] = []

    def source() -> dict[str, str]:
        token = _jwt(exp=now[0] + 20, iat=now[0])
        issued.append(token)
        return {"access_token": token}

    auth = BearerAuth("http://platform.invalid", source=source, clock=lambda: now[0])
    assert auth.can_renew
    monkeypatch.setenv("MLFLOW_RUN_ID", "run42")
    request = auth(requests.Request("GET", "http://platform.invalid/x").prepare())
    assert request.headers["Authorization"] == f"Bearer {issued[0]}"
    assert request.headers[RUN_HEADER] == "run42"
    now[0] += 5  # well inside the lifetime: the same token
    assert auth.token() == issued[0] and auth.fetches == 1
    now[0] += 6  # past half the lifetime: a new one, without the caller noticing
    assert auth.token() == issued[1] and auth.fetches == 2
    monkeypatch.delenv("MLFLOW_RUN_ID")
    assert RUN_HEADER not in auth(requests.Request("GET", "http://x.invalid/").prepare()).headers


def test_examples_are_copied_once_and_edits_kept(tmp_path: Path) -> None:
    from neuronova_lib.hub.spawn import EXAMPLES, copy_examples

    target = copy_examples(tmp_path / "home")
    names = sorted(p.name for p in target.glob("*.ipynb"))
    assert names == sorted(p.name for p in EXAMPLES.glob("*.ipynb")) and "quickstart.ipynb" in names
    (target / "quickstart.ipynb").write_text("{}")  # the user's own edit
    copy_examples(tmp_path / "home")
    assert (target / "quickstart.ipynb").read_text() == "{}"


def test_view_sends_the_channel_and_overlay_as_nifti_with_the_affine() -> None:
    import nibabel as nib
    import numpy as np

    import neuronova_lib
    from neuronova_lib.volume import Volume

    array = np.arange(4 * 8 * 9 * 10, dtype=np.uint16).reshape(4, 8, 9, 10)
    volume = Volume(array=array, affine_lps=np.diag([2.0, 2.0, 3.0, 1.0]), study_uid="1.2",
                    series_uid="1.3", channels=("t1", "t1c", "t2", "flair"))
    widget = neuronova_lib.view(volume, channel="flair", overlay=array[3] > 2000)
    base, overlay = (nib.Nifti1Image.from_bytes(v.data) for v in widget.volumes)
    assert np.array_equal(np.asanyarray(base.dataobj), array[3])
    assert np.array_equal(np.asanyarray(overlay.dataobj), (array[3] > 2000).astype(np.uint8))
    assert np.allclose(base.affine, volume.affine_ras)
    assert [v.name for v in widget.volumes] == ["flair.nii", "overlay.nii"]
    with pytest.raises(ValueError, match="no channel 'dwi'"):
        neuronova_lib.view(volume, channel="dwi")
    with pytest.raises(ValueError, match="shape"):
        neuronova_lib.view(volume, overlay=np.zeros((2, 2, 2), bool))


@pytest.mark.e2e  # MLflow runs `git` to record the source version of a run
def test_the_active_mlflow_run_is_sent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    # An experiment of this store: the process may hold another test's active experiment.
    mlflow.set_experiment("hub-units")
    auth = BearerAuth("http://platform.invalid", _jwt(exp=4e9, iat=1e9))
    with mlflow.start_run() as run:
        sent = auth(requests.Request("GET", "http://platform.invalid/x").prepare())
        assert sent.headers[RUN_HEADER] == run.info.run_id
    after = auth(requests.Request("GET", "http://platform.invalid/x").prepare())
    assert RUN_HEADER not in after.headers


def test_mlflow_provider_gives_one_renewing_platform_auth(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    from neuronova_lib import mlflow_auth
    from neuronova_lib.dicomweb.kernel_token import HubTokenSource

    monkeypatch.setattr(mlflow_auth, "_auth", None)
    monkeypatch.setenv("NEURONOVA_URL", "http://platform.invalid:8080")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hub-token")
    monkeypatch.delenv("NEURONOVA_TOKEN_SERVICE_URL", raising=False)
    provider = mlflow_auth.PlatformAuthProvider()
    auth = provider.get_auth()
    assert provider.get_name() == "neuronova" and provider.get_auth() is auth
    assert isinstance(auth._source, HubTokenSource)
    assert auth._source.service_url == "http://platform.invalid:8080/services/neuronova-token/"
    monkeypatch.setattr(mlflow_auth, "_auth", None)
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN")
    monkeypatch.delenv("NEURONOVA_TOKEN", raising=False)
    with pytest.raises(RuntimeError, match="NEURONOVA_TOKEN"):
        provider.get_auth()


def test_jupyterlab_news_and_update_checks_are_off_until_the_user_turns_them_on(
        tmp_path: Path) -> None:
    import json

    from neuronova_lib.hub.spawn import quiet_lab

    path = quiet_lab(tmp_path / "home")
    assert path.name == "notification.jupyterlab-settings"
    assert json.loads(path.read_text()) == {"fetchNews": "false", "checkForUpdates": False}
    path.write_text('{"fetchNews": "true"}')
    quiet_lab(tmp_path / "home")
    assert json.loads(path.read_text()) == {"fetchNews": "true"}
