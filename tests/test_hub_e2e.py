"""JupyterHub on the real stack: platform sign-in, a kernel's exchanged token, audited reads.

One platform with a real JupyterHub and configurable-http-proxy behind the real nginx (and
MLflow, and Dask) for this module (the session ``platform`` runs without a hub). Kernel
tokens live :data:`TOKEN_TTL` seconds, so renewal and a disabled user's cut-off are seen in
the test. A short champion model trains in the background from the start (:class:`Champion`)
for the example notebook that runs it; every notebook in ``notebooks/`` runs top to bottom.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import nibabel as nib
import pytest
import requests
from sqlalchemy import select

from browser import browser, sign_in, wait_for  # noqa: F401 (fixture)
from conftest import api_token
from neuronova_lib.ai.demo_model import DemoModel, ensure_demo_model
from neuronova_lib.db.engine import get_engine
from neuronova_lib.db.models import AuditRecord
from neuronova_lib.db.users import demo_password
from neuronova_lib.demo import SIZES, CaseInfo, write_demo_cases
from neuronova_lib.hub.protocol import GRANT_TYPE, HUB_TOKEN_TYPE
from neuronova_lib.hub.remote import KernelClient, hub_api_token, signed_in_hub
from neuronova_lib.hub.spawn import kernel_environment
from neuronova_lib.stack.local import LocalPlatform, local_platform
from neuronova_lib.stack.platform import load_folder

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: Seconds a kernel's exchanged token lives here (the renewal margin is half of it).
TOKEN_TTL = 20


#: The served champion of this module's platform: the demo model as `up` makes it
#: (:func:`ensure_demo_model`: train, register, promote through the real gate), kept short,
#: through a gate whose thresholds are 0 here (model quality is test_ai_training_e2e's subject).
CHAMPION = {"demo_model_steps": 30, "demo_model_cases": 2,
            **{f"gate_min_dice_{r}": 0.0 for r in ("tc", "wt", "et")}}
#: Seconds the notebooks wait at most for the champion trained in the background.
CHAMPION_TIMEOUT = 900


class Champion:
    """:func:`ensure_demo_model` in a thread, started with the platform so that its minutes
    overlap the module's other tests; :meth:`wait` before anything that needs the model."""

    def __init__(self, settings: Any) -> None:
        self._stop = threading.Event()
        self._result: list[Any] = []
        self.seconds: float | None = None  # how long the training took, once done
        self._thread = threading.Thread(target=self._run, args=(settings,),
                                        name="hub-champion", daemon=True)
        self._thread.start()

    def _run(self, settings: Any) -> None:
        started = time.monotonic()
        try:
            self._result.append(ensure_demo_model(settings, progress=False,
                                                  should_stop=self._stop.is_set))
        except BaseException as exc:  # noqa: BLE001 - reported by wait()
            self._result.append(exc)
        self.seconds = time.monotonic() - started

    def wait(self) -> DemoModel:
        waited = time.monotonic()
        self._thread.join(CHAMPION_TIMEOUT)
        print(f"champion trained in {self.seconds or -1:.0f} s; "
              f"waited {time.monotonic() - waited:.0f} s for it")
        if not self._result:
            pytest.fail(f"the champion was not trained in {CHAMPION_TIMEOUT} s")
        model = self._result[0]
        if isinstance(model, BaseException):
            raise model
        assert model.served, model.message
        return model

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


class Hub:
    """The module's platform with its hub, and a demo case stored in it."""

    def __init__(self, local: LocalPlatform, case: CaseInfo, champion: Champion) -> None:
        self.local, self.case, self.champion = local, case, champion
        self.url = local.url
        self.settings = local.settings

    def password(self, user: str) -> str:
        return demo_password(self.settings, user)

    def admin_token(self) -> str:
        return api_token(self.url, self.settings, "admin")

    def audit(self, **where: Any) -> list[dict[str, Any]]:
        query = select(AuditRecord.__table__)
        for name, value in where.items():
            query = query.where(getattr(AuditRecord, name) == value)
        with get_engine(self.settings.sqlalchemy_url).connect() as conn:
            return [dict(r) for r in conn.execute(query.order_by(AuditRecord.id)).mappings()]

    def client_secret(self) -> dict[str, str]:
        return dict(json.loads((self.settings.secrets_dir / "hub-client.json").read_text()))


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    home = tmp_path_factory.mktemp("neuronova-hub")
    shape, spacing = SIZES["small"]
    [case] = write_demo_cases(tmp_path_factory.mktemp("demo"), cases=1, seed=11,
                              shape=shape, spacing=spacing)
    # Dask on: the kernels get the platform's scheduler and its dashboard (the transcoding
    # notebook), and inference jobs run there (the champion notebook).
    with local_platform(home, hub_enabled=True, openemr_demo=False, hub_token_ttl=TOKEN_TTL,
                        dask_enabled=True, **CHAMPION) as local:
        load_folder(local.settings, case.directory, htj2k=True)
        champion = Champion(local.settings)
        try:
            yield Hub(local, case, champion)
        finally:
            champion.stop()


@pytest.fixture(scope="module")
def kernel(hub: Hub) -> Iterator[KernelClient]:
    """A kernel in scientist's server, started through the server's REST API."""
    web = signed_in_hub(hub.url, "scientist", hub.password("scientist"))
    client = KernelClient(f"{hub.url}/user/scientist", hub_api_token(hub.url, web, "scientist"))
    yield client
    client.shutdown()


def _nifti_study(case: CaseInfo) -> np.ndarray:
    return np.stack([np.asanyarray(nib.load(case.nifti[ch]).dataobj)
                     for ch in ("t1", "t1c", "t2", "flair")])


def test_browser_sign_in_reaches_jupyterlab(hub: Hub, browser: Any) -> None:  # noqa: F811
    sign_in(browser, hub.url, "scientist", hub.password("scientist"), next_path="/hub/")
    # No second password prompt: the platform session signs in to the hub, the server starts.
    wait_for(browser, "#jp-main-dock-panel", timeout=120)
    assert "/user/scientist/lab" in browser.current_url
    examples = hub.settings.hub_dir / "users" / "scientist" / "examples"
    assert (examples / "quickstart.ipynb").exists()  # where the README says
    assert browser.get_cookie("neuronova_session") is not None


def test_kernel_connects_without_arguments_and_loads_a_study_bit_for_bit(
        hub: Hub, kernel: KernelClient, tmp_path: Path) -> None:
    out = tmp_path / "study.npy"
    run = uuid.uuid4().hex
    result = kernel.execute(f"""
import json, os, numpy as np, neuronova_lib
os.environ["MLFLOW_RUN_ID"] = "{run}"
client = neuronova_lib.connect()
volume = client.load_study("{hub.case.study_instance_uid}", progress=False)
np.save("{out}", volume.array)
print(json.dumps({{"user": client.whoami()["username"], "fetches": client.session.auth.fetches,
                  "env": {{k: os.environ.get(k) for k in ("NEURONOVA_URL", "MLFLOW_TRACKING_URI",
                                                          "DASK_SCHEDULER_ADDRESS")}}}}))
""")
    answer = result.json()
    assert answer["user"] == "scientist" and answer["fetches"] >= 1
    assert answer["env"]["NEURONOVA_URL"] == hub.url
    assert answer["env"]["MLFLOW_TRACKING_URI"] == f"{hub.url}/mlflow"
    assert answer["env"]["DASK_SCHEDULER_ADDRESS"] == f"tcp://127.0.0.1:{hub.settings.dask_port}"
    assert np.array_equal(np.load(out), _nifti_study(hub.case))
    # The audit log names the reader: scientist, from the hub server, in this MLflow run.
    reads = hub.audit(service="proxy", decision="allow", run_id=run)
    assert reads and {(r["username"], r["server"]) for r in reads} == {("scientist", "scientist/")}
    assert {r["study"] for r in reads} == {hub.case.study_instance_uid}
    [exchange] = [r for r in hub.audit(reason="token_exchange") if r["username"] == "scientist"][:1]
    assert exchange["server"] == "scientist/" and "kernel" in exchange["detail"]
    admin = {"Authorization": f"Bearer {hub.admin_token()}"}
    by_api = requests.get(f"{hub.url}/api/audit", headers=admin, timeout=10,
                          params={"server": "scientist/", "run_id": run, "limit": 1000}).json()
    assert len(by_api) == len(reads) and all(r["server"] == "scientist/" for r in by_api)


def test_an_mlflow_run_in_the_kernel_is_signed_in_and_names_its_reads(hub: Hub,
                                                                      kernel: KernelClient
                                                                      ) -> None:
    result = kernel.execute(f"""
import json, os, mlflow, neuronova_lib
os.environ.pop("MLFLOW_RUN_ID", None)  # set by an earlier test in this kernel
from mlflow.tracking.request_auth.registry import _request_auth_provider_registry as registry
from neuronova_lib.mlflow_auth import PlatformAuthProvider
# What the package's entry point does once it is installed (pip install -e .).
if not any(p.get_name() == "neuronova" for p in registry):
    registry.register(PlatformAuthProvider)
client = neuronova_lib.connect()
with mlflow.start_run() as run:
    mlflow.log_param("study", "{hub.case.study_instance_uid}")
    client.load_series("{hub.case.study_instance_uid}",
                       "{hub.case.series_instance_uids['t1']}", progress=False)
print(json.dumps({{"run": run.info.run_id,
                  "param": mlflow.get_run(run.info.run_id).data.params["study"]}}))
""").json()
    assert result["param"] == hub.case.study_instance_uid  # MLflow behind nginx, signed in
    reads = hub.audit(service="proxy", decision="allow", run_id=result["run"])
    assert reads and {r["username"] for r in reads} == {"scientist"}
    assert {r["study"] for r in reads} == {hub.case.study_instance_uid}


def test_a_short_token_is_renewed_without_the_code_noticing(hub: Hub, kernel: KernelClient
                                                            ) -> None:
    result = kernel.execute(f"""
import json, time, neuronova_lib
client = neuronova_lib.connect()
first = client.session.auth.expires_at
series = client.series("{hub.case.study_instance_uid}")
time.sleep({TOKEN_TTL} + 2)  # past the first token's expiry
again = client.series("{hub.case.study_instance_uid}")
print(json.dumps({{"n": [len(series), len(again)], "fetches": client.session.auth.fetches,
                  "later": client.session.auth.expires_at > first}}))
""")
    assert result.json() == {"n": [4, 4], "fetches": 2, "later": True}


def test_the_kernel_reaches_the_dask_cluster_and_the_scientist_its_dashboard(
        hub: Hub, kernel: KernelClient) -> None:
    result = kernel.execute("""
import json, os
from distributed import Client
with Client(timeout=30) as dask:  # DASK_SCHEDULER_ADDRESS, from the hub
    print(json.dumps({"scheduler": dask.scheduler.address,
                      "squares": dask.gather(dask.map(lambda x: x * x, range(4))),
                      "dashboard": os.environ["NEURONOVA_DASK_DASHBOARD_URL"],
                      "link": dask.dashboard_link}))
""").json()
    assert result["scheduler"] == f"tcp://127.0.0.1:{hub.settings.dask_port}"
    assert result["squares"] == [0, 1, 4, 9]
    assert result["dashboard"] == result["link"] == f"{hub.url}/dask/status"
    # The link a notebook shows opens in the scientist's browser (the platform session that
    # signed them in to the hub; same origin as JupyterLab, so an IFrame shows it too).
    web = signed_in_hub(hub.url, "scientist", hub.password("scientist"))
    page = web.get(result["dashboard"], timeout=30)
    assert page.status_code == 200 and "bokeh" in page.text.lower()
    assert requests.get(result["dashboard"], timeout=10, allow_redirects=False).status_code != 200


def test_bad_token_exchanges_are_refused_and_audited(hub: Hub, kernel: KernelClient) -> None:
    url = f"{hub.url}/api/auth/token"
    server_token = kernel.execute(
        "import os; print(__import__('json').dumps({'t': os.environ['JUPYTERHUB_API_TOKEN']}))"
    ).json()["t"]
    client = hub.client_secret()
    form = {"grant_type": GRANT_TYPE, "subject_token": server_token,
            "subject_token_type": HUB_TOKEN_TYPE}
    wrong = requests.post(url, data=form, auth=(client["client_id"], "not-the-secret"),
                          timeout=10)
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    nobody = requests.post(url, data=form, timeout=10)  # the kernel's token alone is not enough
    assert nobody.status_code == 401
    forged = requests.post(url, data={**form, "subject_token": "made-up"}, timeout=10,
                           auth=(client["client_id"], client["client_secret"]))
    assert forged.status_code == 400 and forged.json()["error"] == "invalid_grant"
    other = requests.post(url, data={**form, "requested_subject": "admin"}, timeout=10,
                          auth=(client["client_id"], client["client_secret"]))
    assert other.status_code == 400 and "admin" in other.json()["detail"]
    good = requests.post(url, data=form, timeout=10,
                         auth=(client["client_id"], client["client_secret"]))
    assert good.status_code == 200 and good.json()["expires_in"] == TOKEN_TTL
    for response, reason in ((wrong, "exchange_bad_client"), (nobody, "exchange_bad_client"),
                             (forged, "exchange_bad_subject"), (other, "exchange_other_user")):
        [row] = hub.audit(request_id=response.headers["x-request-id"])
        assert (row["decision"], row["reason"]) == ("deny", reason)
    [row] = hub.audit(request_id=other.headers["x-request-id"])
    assert (row["username"], row["server"]) == ("scientist", "scientist/")


def test_a_clinician_cannot_start_a_server(hub: Hub) -> None:
    web = requests.Session()
    form = web.get(f"{hub.url}/login", params={"next": "/hub/"}, timeout=10)
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf
    web.post(f"{hub.url}/login", timeout=10, headers={"Origin": hub.url}, allow_redirects=False,
             data={"username": "clinician", "password": hub.password("clinician"),
                   "csrf": csrf.group(1), "next": "/hub/"})
    landing = web.get(f"{hub.url}/hub/spawn", timeout=10, allow_redirects=True)
    assert landing.url == f"{hub.url}/dashboards/"
    # Nor by the password form, nor straight at the spawn URL.
    assert not any(c.name.startswith("jupyterhub-") for c in web.cookies)
    page = requests.get(f"{hub.url}/user/clinician/lab", timeout=10)
    assert "/user/clinician/lab" not in page.url


#: Notebooks that need the served champion: run last, so that the model's training in the
#: background overlaps the others.
NEEDS_CHAMPION = {"champion-model.ipynb"}
NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"),
                   key=lambda p: (p.name in NEEDS_CHAMPION, p.name))


@pytest.fixture(scope="module")
def champion(hub: Hub) -> DemoModel:
    """The served champion, once its background training is done."""
    return hub.champion.wait()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_example_notebook_runs_top_to_bottom(hub: Hub, kernel: KernelClient, path: Path,
                                             tmp_path: Path, request: pytest.FixtureRequest,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """nbclient runs the notebook with the environment a hub kernel has (the server's hub
    token, MLflow, the Dask scheduler and dashboard), so connect(), MLflow and
    distributed.Client() take the hub's paths as in JupyterLab."""
    if path.name in NEEDS_CHAMPION:
        request.getfixturevalue("champion")
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), (
        f"{path.name}: commit it with clean outputs")
    names = ["JUPYTERHUB_API_TOKEN", *kernel_environment(hub.settings)]
    server = kernel.execute(f"import json, os\nprint(json.dumps({{k: os.environ[k] for k in "
                            f"{names!r}}}))").json()
    for name, value in server.items():
        monkeypatch.setenv(name, value)
    NotebookClient(notebook, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors


def _program_login(hub: Hub, user: str, password: str) -> tuple[requests.Session, int]:
    """The hub's password form, as a program posts it (xsrf cookie from the form page)."""
    web = requests.Session()
    page = web.get(f"{hub.url}/hub/login", params={"form": "password"}, timeout=10)
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
    assert page.status_code == 200 and xsrf, page.text[:500]
    done = web.post(f"{hub.url}/hub/login", timeout=30, allow_redirects=False,
                    data={"username": user, "password": password, "_xsrf": xsrf.group(1)})
    return web, done.status_code


@pytest.mark.parametrize(("user", "admin", "group"), [("admin", True, "admin"),
                                                      ("owner", False, "model_owner")])
def test_programs_sign_in_with_the_password_form_and_roles_carry_over(
        hub: Hub, user: str, admin: bool, group: str) -> None:
    web, status = _program_login(hub, user, hub.password(user))
    assert status == 302
    model = web.get(f"{hub.url}/hub/api/user", timeout=10).json()
    assert (model["name"], model["admin"], model["groups"]) == (user, admin, [group])
    _, wrong = _program_login(hub, user, "not-the-password")
    assert wrong == 403
    _, clinician = _program_login(hub, "clinician", hub.password("clinician"))
    assert clinician == 403


def test_a_disabled_user_is_refused_at_sign_in_and_in_the_running_kernel(
        hub: Hub, kernel: KernelClient) -> None:
    live = kernel.execute("import json, neuronova_lib\nclient = neuronova_lib.connect()\n"
                          f"print(json.dumps(len(client.series('{hub.case.study_instance_uid}'))))")
    assert int(live.stdout) >= 4, live.error  # and the champion notebook's SEG and SR
    admin = {"Authorization": f"Bearer {hub.admin_token()}"}
    disabled = requests.patch(f"{hub.url}/api/users/scientist", headers=admin, timeout=10,
                              json={"is_active": False})
    assert disabled.status_code == 200, disabled.text
    started = time.monotonic()
    result = kernel.execute(f"""
import json, time, requests
deadline = time.monotonic() + {TOKEN_TTL} + 5
refused = None
while time.monotonic() < deadline and refused is None:
    try:
        client.series("{hub.case.study_instance_uid}")
        time.sleep(0.5)
    except requests.RequestException as exc:
        refused = str(exc)
print(json.dumps({{"refused": refused}}))
""")
    assert time.monotonic() - started < TOKEN_TTL + 5
    refused = result.json()["refused"]
    assert refused is not None and "disabled" in refused, refused
    web = requests.Session()
    form = web.get(f"{hub.url}/login", params={"next": "/hub/"}, timeout=10)
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf
    again = web.post(f"{hub.url}/login", timeout=10, headers={"Origin": hub.url},
                     allow_redirects=False,
                     data={"username": "scientist", "password": hub.password("scientist"),
                           "csrf": csrf.group(1), "next": "/hub/"})
    assert again.status_code != 303
    assert any(r["reason"] == "exchange_inactive" for r in hub.audit(username="scientist"))
