"""The clinician dashboards without a stack: the worklist's data and table, the page
messages, the Voilà server's command line and environment, nginx's /dashboards/ route,
and the API's sign-in check minting the page's token (TestClient against the real app).

The pages in a browser on the real stack: test_dashboards_e2e.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import requests
from fastapi.testclient import TestClient
from sqlalchemy import select
from api_settings import service_settings
from test_signin import BASE, PASSWORD, _csrf, sign_in

from neuronova_lib.config import Settings
from neuronova_lib.dashboards import pages, server, worklist
from neuronova_lib.dashboards.worklist import WorklistQuery, WorklistRow
from neuronova_lib.db.engine import session_factory
from neuronova_lib.db.models import AuditRecord
from neuronova_lib.db.users import ensure_demo_users
from neuronova_lib.dicomweb.auth import TokenExpiredError
from neuronova_lib.security.tokens import token_service
from services.api.app import create_app

WORKLIST = "/dashboards/voila/render/worklist.ipynb"


# -- the worklist's data ----------------------------------------------------------------


@pytest.mark.parametrize("value, shown", [
    ("DOE^JANE", "DOE, JANE"), ("DOE^JANE^M^^", "DOE, JANE M"), ("DOE", "DOE"),
    ("^JANE", "JANE"), ("", "(no name)"), ("Yamada^Tarou=山田^太郎", "Yamada, Tarou")])
def test_person_names_read_as_people_write_them(value: str, shown: str) -> None:
    assert worklist.person_name(value) == shown


def test_dates_and_date_ranges() -> None:
    assert worklist.display_date("20240131") == "2024-01-31"
    assert worklist.display_date("") == "" and worklist.display_date("2024") == "2024"
    assert WorklistQuery().study_date() is None
    assert WorklistQuery(date_from=date(2024, 1, 1)).study_date() == "20240101-"
    assert WorklistQuery(date_to=date(2024, 2, 1)).study_date() == "-20240201"
    day = date(2024, 3, 5)
    assert WorklistQuery(date_from=day, date_to=day).study_date() == "20240305"
    assert WorklistQuery(date_from=date(2024, 1, 1),
                         date_to=date(2024, 12, 31)).study_date() == "20240101-20241231"


@pytest.mark.parametrize("jobs, status", [
    ([], "none"),
    ([{"state": "queued"}], "running"),
    ([{"state": "running"}, {"state": "done"}], "running"),
    ([{"state": "done"}, {"state": "failed"}], "done"),
    ([{"state": "failed"}, {"state": "done"}], "failed"),
    ([{"state": "something new"}], "none"),
])
def test_the_ai_status_is_the_newest_jobs(jobs: list[dict], status: str) -> None:
    assert worklist.ai_status(jobs) == status
    assert status in worklist.AI_STATUSES


def test_the_table_escapes_what_the_pacs_says_and_links_each_study() -> None:
    uid = "1.2.826.0.1.3680043.8.498.1"
    row = WorklistRow(study_uid=uid, patient_name='<script>alert("x")</script>',
                      patient_id="ID&1", study_date="2024-01-31", description="<b>MR</b>",
                      modalities="MR, SEG", ai_status="done")
    table = worklist.table_html([row])
    assert "<script>" not in table and "&lt;script&gt;" in table
    assert "ID&amp;1" in table and "&lt;b&gt;MR&lt;/b&gt;" in table
    assert f'href="/dashboards/voila/render/study.ipynb?study={uid}"' in table
    assert f'href="/api/studies/{uid}/ohif"' in table
    assert 'class="nn-ai nn-ai-done">Done<' in table
    assert "No studies match" in worklist.table_html([])


# -- messages, never tracebacks ---------------------------------------------------------


def _answer(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"HTTP {status}", response=response)


def test_problems_are_messages_and_an_ended_session_links_to_sign_in(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIPT_NAME", "/dashboards/voila/render/study.ipynb")
    monkeypatch.setenv("QUERY_STRING", "study=1.2.3")
    assert pages.page_path() == "/dashboards/voila/render/study.ipynb?study=1.2.3"
    assert pages.query_argument("study") == "1.2.3" and pages.query_argument("x") == ""
    link = 'href="/login?next=/dashboards/voila/render/study.ipynb%3Fstudy%3D1.2.3"'
    for ended in (_answer(401), TokenExpiredError("expired"), pages.SessionEnded("none")):
        text = pages.problem_html(ended, "load the worklist")
        assert "Your session has ended." in text and link in text and "Sign in again" in text
    assert "your role does not allow it" in pages.problem_html(_answer(403), "open this study")
    down = pages.problem_html(requests.ConnectionError("refused"), "load the worklist")
    assert "did not answer" in down
    other = pages.problem_html(_answer(502), "load the worklist")
    assert "Could not load the worklist (the platform answered 502)" in other
    assert "Traceback" not in other
    assert "&lt;x&gt;" in pages.header_html("<x>", {"username": "c", "role": "clinician"})


def test_a_page_kernel_connects_with_the_token_nginx_passed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from neuronova_lib.dicomweb.kernel_token import ENV_DASHBOARD_TOKEN

    for name in ("NEURONOVA_TOKEN", "NEURONOVA_REFRESH_TOKEN", "JUPYTERHUB_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NEURONOVA_URL", "http://127.0.0.1:9")
    monkeypatch.delenv(ENV_DASHBOARD_TOKEN, raising=False)
    with pytest.raises(pages.SessionEnded):
        pages.dashboard_client()
    monkeypatch.setenv(ENV_DASHBOARD_TOKEN, "a.b.c")
    client = pages.dashboard_client()
    assert client.base_url == "http://127.0.0.1:9"
    assert client.session.auth._token == "a.b.c"
    # It renews the token at the API while the page's browser session lives.
    from neuronova_lib.dicomweb.kernel_token import DashboardTokenSource

    source = client.session.auth._source
    assert isinstance(source, DashboardTokenSource)
    assert source.url == "http://127.0.0.1:9/api/auth/dashboard-token"
    assert "a.b.c" not in repr(source) and "a.b.c" not in repr(client.session.auth)


# -- the Voilà server -------------------------------------------------------------------


def test_voila_runs_on_loopback_under_the_prefix_with_the_token_header() -> None:
    argv = server.voila_argv(18106)
    assert argv[1:4] == ["-m", "voila", str(server.DASHBOARDS_DIR)]
    for option in ("--port=18106", "--Voila.ip=127.0.0.1", "--Voila.base_url=/dashboards/",
                   "--template=neuronova", "--VoilaConfiguration.show_tracebacks=False",
                   "--VoilaConfiguration.http_header_envs=X-NeuroNova-Token",
                   "--MappingKernelManager.cull_idle_timeout=300",
                   "--MappingKernelManager.cull_connected=False"):
        assert option in argv
    template = server.JUPYTER_DATA / "voila" / "templates" / "neuronova"
    assert (template / "conf.json").exists() and (template / "index.html.j2").exists()
    assert (server.DASHBOARDS_DIR / "worklist.ipynb").exists()
    assert not any(a.startswith("--Voila.server_url") for a in argv)
    # Behind a public path prefix, Voilà still serves /dashboards/ (what nginx passes on)
    # and writes the prefixed path into its pages.
    behind = server.voila_argv(18106, public_prefix="/nn/")
    assert "--Voila.base_url=/nn/dashboards/" in behind
    assert "--Voila.server_url=/dashboards/" in behind
    # A pool of preheated kernels, spared from culling, unless there is none.
    assert {"--preheat_kernel=True", "--pool_size=1",
            "--VoilaConfiguration.multi_kernel_manager_class="
            "neuronova_lib.dashboards.kernels.PoolKeepingKernelManager"} <= set(argv)
    assert not any("preheat" in a or "pool_size" in a
                   for a in server.voila_argv(18106, pool_size=0))


def test_the_pool_keeping_kernel_manager_spares_only_pooled_kernels() -> None:
    """Voilà's pool holds tasks whose results name the kernels waiting for a page."""
    import asyncio

    from neuronova_lib.dashboards.kernels import PoolKeepingKernelManager

    async def pooled(kernel_id: str) -> dict[str, str]:
        return {"kernel_id": kernel_id}

    async def check() -> tuple[set[str], list[str]]:
        manager = PoolKeepingKernelManager()
        waiting = asyncio.ensure_future(pooled("k-waiting"))
        starting = asyncio.ensure_future(asyncio.sleep(10))
        await asyncio.sleep(0)
        manager._pools = {"study.ipynb": [waiting, starting]}
        culled: list[str] = []

        async def parent_cull(self: Any, kernel_id: str) -> None:
            culled.append(kernel_id)

        base = PoolKeepingKernelManager.__mro__[1]
        original = base.cull_kernel_if_idle
        base.cull_kernel_if_idle = parent_cull  # what the server would do: shut it down
        try:
            await manager.cull_kernel_if_idle("k-waiting")
            await manager.cull_kernel_if_idle("k-served")
        finally:
            base.cull_kernel_if_idle = original
            starting.cancel()
        return manager.pooled_kernel_ids(), culled

    ids, culled = asyncio.run(check())
    assert ids == {"k-waiting"}
    assert culled == ["k-served"]


def test_links_carry_the_public_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    uid = "1.2.3"
    monkeypatch.setenv("SCRIPT_NAME", WORKLIST)
    monkeypatch.delenv("QUERY_STRING", raising=False)
    monkeypatch.delenv(server.ENV_PUBLIC_PREFIX, raising=False)
    assert worklist.ohif_link(uid) == f"/api/studies/{uid}/ohif"
    monkeypatch.setenv(server.ENV_PUBLIC_PREFIX, "/nn")
    assert worklist.study_link(uid) == f"/nn/dashboards/voila/render/study.ipynb?study={uid}"
    assert worklist.ohif_link(uid) == f"/nn/api/studies/{uid}/ohif"
    assert pages.signin_url() == f"/nn/login?next={WORKLIST}"


def test_kernels_see_the_platform_url_and_no_setting_or_secret() -> None:
    env = server.voila_env("http://127.0.0.1:8080", Path("/run/nn/dashboards"), {
        "PATH": "/usr/bin", "HOME": "/home/x", "NEURONOVA_DATABASE_URL": "postgresql://u:pw@db/x",
        "NEURONOVA_OPENEMR_CLIENT_SECRET": "s", "AWS_SECRET_ACCESS_KEY": "k",
        "PYTHONPATH": "/opt/extra"})
    assert env["NEURONOVA_URL"] == "http://127.0.0.1:8080"
    assert env["PATH"] == "/usr/bin" and env["HOME"] == "/home/x"
    assert env["JUPYTER_PATH"] == str(server.JUPYTER_DATA)
    assert env["JUPYTER_CONFIG_DIR"] == "/run/nn/dashboards/config"  # not ~/.jupyter
    assert env["JUPYTER_RUNTIME_DIR"] == "/run/nn/dashboards/runtime"
    assert env["PYTHONPATH"].split(":")[:2] == [str(server.REPO_ROOT), "/opt/extra"]
    assert not {"NEURONOVA_DATABASE_URL", "NEURONOVA_OPENEMR_CLIENT_SECRET",
                "AWS_SECRET_ACCESS_KEY"} & set(env)


def test_the_template_loads_nothing_from_another_host() -> None:
    text = (server.JUPYTER_DATA / "voila" / "templates" / "neuronova" / "index.html.j2").read_text()
    assert "http://" not in text and "https://" not in text
    # The two blocks of Voilà's and nbconvert's templates that link CDNs are replaced.
    assert "{%- block notebook_css -%}" in text and "{%- block html_head_js_mermaidjs -%}" in text


def test_the_template_writes_the_first_image_as_html() -> None:
    from neuronova_lib.dashboards.first_image import FIRST_IMAGE

    text = (server.JUPYTER_DATA / "voila" / "templates" / "neuronova" / "index.html.j2").read_text()
    assert f"output.metadata.get('{FIRST_IMAGE}')" in text
    assert "{{ output.data['text/html'] }}" in text and "{{ super() }}" in text


def test_the_service_and_its_switch(tmp_path: Path) -> None:
    from neuronova_lib.stack.services import dashboards_service, platform_services

    on = Settings(home=tmp_path, dashboards_port=18106)
    service = dashboards_service(on)
    assert service.argv[1:] == ["-m", "neuronova_lib.dashboards.server", "18106", on.local_url,
                                str(on.run_dir / "dashboards"), "", "1"]
    behind = Settings(home=tmp_path, public_url="https://pacs.example.org/nn/",
                      dashboard_pool_size=0)
    assert dashboards_service(behind).argv[-2:] == ["/nn", "0"]
    assert service.ports == [("127.0.0.1", 18106, "NEURONOVA_DASHBOARDS_PORT")]
    assert "dashboards" in [s.name for s in platform_services(on)]
    off = Settings(home=tmp_path, dashboards_enabled=False)
    assert "dashboards" not in [s.name for s in platform_services(off)]


# -- nginx ------------------------------------------------------------------------------


def _block(text: str, head: str) -> str:
    start = text.index(head)
    return text[start:text.index("\n        }", start)]


def test_nginx_route_signs_in_and_sets_the_token_header_itself(tmp_path: Path) -> None:
    from neuronova_lib.stack.render import render_nginx

    text = render_nginx(Settings(home=tmp_path / "a", dashboards_port=18106)).read_text()
    block = _block(text, "location /dashboards/ {")
    assert "auth_request /_auth_dashboards/clinician,model_owner,admin;" in block
    assert "proxy_pass http://127.0.0.1:18106;" in block
    # Only nginx sets the token (from the API's answer); empty means the header is dropped.
    assert "proxy_set_header X-NeuroNova-Token $nn_dashboard_token;" in block
    assert block.count("proxy_set_header Host ") == 1  # Voilà refuses two Host headers
    for header in ('Authorization ""', 'Cookie ""', "X-NeuroNova-User $nn_user"):
        assert f"proxy_set_header {header};" in block
    assert "Content-Security-Policy" in block and "default-src 'self'" in block
    check = _block(text, "location ~ ^/_auth_dashboards/")
    assert "internal;" in check and "act=dashboards" in check
    assert "return 302 /dashboards/voila/render/worklist.ipynb;" in text
    # The websocket that hands a preheated kernel its request (and token) is not public.
    assert "return 404;" in _block(text, "location /dashboards/voila/query/ {")
    off = render_nginx(Settings(home=tmp_path / "b", dashboards_enabled=False)).read_text()
    assert "NEURONOVA_DASHBOARDS_ENABLED" in _block(off, "location /dashboards/ {")


# -- the API's check mints the page's token ---------------------------------------------


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The API's settings in a temporary data dir with the demo users (as test_signin)."""
    with service_settings(tmp_path / "home", monkeypatch, PASSWORD, PORT="8080") as current:
        ensure_demo_users(current)
        yield current


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url=BASE) as test_client:
        yield test_client


def test_the_check_mints_a_token_for_a_page_being_opened(api: TestClient,
                                                         settings: Settings) -> None:
    assert sign_in(api, "clinician", next_path=WORKLIST).status_code == 303
    roles = {"roles": "clinician,model_owner,admin"}
    page = {"Accept": "text/html", "X-Original-URI": f"{WORKLIST}?x=1",
            "X-Original-Method": "GET"}
    opened = api.get("/api/auth/check", params={**roles, "act": "dashboards"}, headers=page)
    assert opened.status_code == 204 and opened.headers["x-neuronova-user"] == "clinician"
    claims = token_service(settings).verify(opened.headers["x-neuronova-token"], "access")
    assert (claims.sub, str(claims.role)) == ("clinician", "clinician")
    assert claims.act == {"sub": "dashboards", "server": "dashboards"}
    assert claims.parent and claims.parent.startswith("session:")  # sign-out revokes it
    assert claims.exp - claims.iat <= settings.dashboard_token_ttl + 1
    # Assets and websockets of the page, other routes, and a refused role get none.
    asset = api.get("/api/auth/check", params={**roles, "act": "dashboards"},
                    headers={"Accept": "*/*", "X-Original-URI": "/dashboards/static/x.js"})
    plain = api.get("/api/auth/check", params=roles, headers=page)
    assert asset.status_code == plain.status_code == 204
    assert "x-neuronova-token" not in asset.headers and "x-neuronova-token" not in plain.headers
    refused = api.get("/api/auth/check", params={"roles": "admin", "act": "dashboards"},
                      headers=page)
    assert refused.status_code == 403 and "x-neuronova-token" not in refused.headers
    with session_factory(settings.sqlalchemy_url)() as db:
        rows = db.scalars(select(AuditRecord).where(
            AuditRecord.reason == "dashboard_token")).all()
    assert [(r.username, r.server, r.detail, r.token_id) for r in rows] == [
        ("clinician", "dashboards", f"for {WORKLIST}", claims.jti)]


def test_a_page_renews_its_token_while_its_session_lives(api: TestClient,
                                                         settings: Settings) -> None:
    assert sign_in(api, "clinician", next_path=WORKLIST).status_code == 303
    page = {"Accept": "text/html", "X-Original-URI": WORKLIST, "X-Original-Method": "GET"}
    first = api.get("/api/auth/check", headers=page,
                    params={"roles": "clinician", "act": "dashboards"}).headers["x-neuronova-token"]
    renewed = api.post("/api/auth/dashboard-token", headers={"Authorization": f"Bearer {first}"})
    assert renewed.status_code == 200, renewed.text
    assert renewed.headers["cache-control"] == "no-store"
    service = token_service(settings)
    old, new = service.verify(first, "access"), service.verify(
        renewed.json()["access_token"], "access")
    assert (new.sub, new.parent, new.act) == (old.sub, old.parent, old.act)
    assert new.jti != old.jti
    # Only a dashboard page's token is renewed here (not a program's own sign-in token).
    own = api.post("/api/auth/token", data={"username": "clinician",
                                            "password": PASSWORD})
    other = api.post("/api/auth/dashboard-token",
                     headers={"Authorization": f"Bearer {own.json()['access_token']}"})
    assert other.status_code == 403
    assert api.post("/api/auth/dashboard-token").status_code == 401
    # Signing out ends the page: its tokens are revoked and the session is gone.
    form = api.get("/login")
    out = api.post("/logout", data={"csrf": _csrf(form.text)}, headers={"Origin": BASE},
                   follow_redirects=False)
    assert out.status_code == 303
    for token in (first, renewed.json()["access_token"]):
        ended = api.post("/api/auth/dashboard-token", headers={"Authorization": f"Bearer {token}"})
        assert ended.status_code == 401, ended.text
    with session_factory(settings.sqlalchemy_url)() as db:
        reasons = [r.reason for r in db.scalars(select(AuditRecord).where(
            AuditRecord.server == "dashboards").order_by(AuditRecord.id)).all()]
    assert reasons[:3] == ["dashboard_token", "dashboard_token_renewed", "not_a_dashboard_token"]


# -- the study viewer's data ------------------------------------------------------------


def test_window_presets_follow_the_images_intensities() -> None:
    from neuronova_lib.dashboards.study import WINDOW_PRESETS, window

    rng = np.random.default_rng(3)
    image = np.zeros((20, 20, 10), dtype=np.int16)
    image[5:15, 5:15] = rng.integers(100, 1100, size=(10, 10, 10))
    low, high = window(image, "Full range")
    assert (low, high) == (float(image[image > 0].min()), float(image.max()))
    auto = window(image, "Auto")
    assert low < auto[0] < auto[1] < high  # the background's zeros do not count
    assert set(WINDOW_PRESETS) >= {"Auto", "Full range"}
    assert window(np.zeros((3, 3, 3)), "Auto") == (0.0, 1.0)  # a blank image still has a range


def test_the_first_image_is_the_axial_slice_as_niivue_draws_it() -> None:
    """Anterior at the top, the patient's right on the screen's right (NiiVue's default),
    whichever way the frame's rows and columns run; rows and columns at their size in mm."""
    from neuronova_lib.dashboards.study import axial_image
    from neuronova_lib.volume import LPS_TO_RAS

    frame = np.zeros((6, 4), dtype=np.int16)  # [i, j]: 6 columns, 4 rows
    frame[0, 0] = 1000  # i = 0 is the patient's right (i runs to the left, LPS +x), j = 0 the front
    frame[5, 3] = 500
    axial = np.diag([1.0, 2.0, 3.0, 1.0])  # columns 1 mm, rows 2 mm (LPS)
    grey, width, height = axial_image(frame, LPS_TO_RAS @ axial, 0.0, 1000.0)
    assert grey.dtype == np.uint8 and grey.shape == (4, 6) and (width, height) == (6.0, 8.0)
    assert grey[0, -1] == 255 and grey[-1, 0] == 127 and grey.sum() == 255 + 127
    # The same slice stored with rows and columns swapped, and running the other way.
    stored = frame.T[::-1, :]  # [a, b]: a = 3 - j runs to the front, b = i
    swapped = LPS_TO_RAS @ np.array([[0.0, 1.0, 0, 0], [-2.0, 0, 0, 6], [0, 0, 3.0, 0],
                                     [0, 0, 0, 1]])
    other, w2, h2 = axial_image(stored, swapped, 0.0, 1000.0)
    assert np.array_equal(other, grey) and (w2, h2) == (6.0, 8.0)
    # Values outside the window are clipped to black and white.
    assert axial_image(frame, LPS_TO_RAS @ axial, 600.0, 800.0)[0].max() == 255
    # A sagittal slice is not what NiiVue's axial view shows: no first image from it.
    sagittal = np.array([[0, 0, 1.0, 0], [1.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1]])
    assert axial_image(frame, LPS_TO_RAS @ sagittal, 0.0, 1000.0) is None


def test_the_first_image_is_html_drawn_before_any_script() -> None:
    import base64
    import re

    import imagecodecs

    from neuronova_lib.dashboards.first_image import VIEWER_DONE, done_marker, image_html

    grey = (np.arange(24, dtype=np.uint8) * 10).reshape(4, 6)
    page = image_html(grey, 6.0, 8.0, "FLAIR <middle> slice")
    png = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    assert np.array_equal(imagecodecs.png_decode(base64.b64decode(png)), grey)
    assert 'elementtiming="nn-first-image"' in page and "aspect-ratio: 6.00 / 8.00" in page
    assert "FLAIR &lt;middle&gt; slice" in page and "<middle>" not in page
    assert f'document.querySelector(".{VIEWER_DONE}")' in page  # goes once NiiVue drew
    assert "http://" not in page and "https://" not in page
    assert VIEWER_DONE in done_marker()


def test_the_viewer_opens_on_the_tumour() -> None:
    from neuronova_lib.dashboards.study import focus_fraction

    mask = np.zeros((10, 20, 40), dtype=bool)
    mask[1:4, 10:12, 30:34] = True  # centre voxel (2, 10.5, 31.5)
    assert focus_fraction(np.zeros_like(mask), np.eye(4)) is None
    assert focus_fraction(mask, np.eye(4)) == pytest.approx([2.5 / 10, 11 / 20, 32 / 40])
    # LPS → RAS flips x and y: NiiVue's fractions run along RAS.
    flipped = np.diag([-1.0, -1.0, 1.0, 1.0])
    assert focus_fraction(mask, flipped) == pytest.approx([1 - 2.5 / 10, 1 - 11 / 20, 32 / 40])


def test_the_segs_regions_come_back_on_the_series_grid(tmp_path: Path) -> None:
    """A SEG made by the platform's writer over a demo case's T1 series, read back by the
    viewer onto that series' slices (``k`` order) equals the masks it was made from."""
    import datetime as dt

    import nibabel as nib
    import pydicom
    from test_ai_results import brats_regions

    from neuronova_lib.ai.results import ModelInfo, build_results
    from neuronova_lib.dashboards.study import region_masks
    from neuronova_lib.demo import SMALL_SHAPE, SMALL_SPACING, write_demo_cases
    from neuronova_lib.volume import instances_json, series_geometry

    info = write_demo_cases(tmp_path, cases=1, seed=17, shape=SMALL_SHAPE,
                            spacing=SMALL_SPACING)[0]
    sources = [pydicom.dcmread(p, stop_before_pixels=True)
               for p in sorted(Path(info.dicom_dirs["t1"]).glob("*.dcm"))]
    masks = brats_regions(np.asarray(nib.load(info.labels).dataobj))
    seg = build_results(sources, masks, model=ModelInfo("ground-truth", "0", None),
                        job_id="viewer-1", created=dt.datetime(2026, 12, 7, tzinfo=dt.UTC)).seg
    slices = tuple(s.sop_uid for s in series_geometry(instances_json(sources)).slices)
    found = region_masks(seg, slices)
    assert list(found) == ["TC", "WT", "ET"]
    for index, region in enumerate(("TC", "WT", "ET")):
        assert np.array_equal(found[region], masks[index]), region
    with pytest.raises(ValueError, match="not on this series"):
        region_masks(seg, tuple(f"1.2.3.{k}" for k in range(len(slices))))


def test_the_regions_become_one_small_label_volume_in_its_place() -> None:
    """Nested regions (WT ⊃ TC ⊃ ET) as one cropped volume: each voxel says which regions
    hold it, and the crop sits where the masks were (its affine moved, not its voxels)."""
    from neuronova_lib.dashboards.study import label_volume

    shape = (30, 40, 20)
    wt = np.zeros(shape, dtype=bool)
    wt[10:20, 12:22, 5:9] = True
    tc = np.zeros(shape, dtype=bool)
    tc[12:16, 14:18, 6:8] = True
    et = np.zeros(shape, dtype=bool)
    et[13, 15, 7] = True
    affine = np.diag([-2.0, -1.5, 3.0, 1.0])
    affine[:3, 3] = (100.0, 50.0, -20.0)
    labels, moved = label_volume({"TC": tc, "WT": wt, "ET": et}, affine)
    assert labels.dtype == np.uint8 and labels.shape == (12, 12, 6)  # the box and 1 voxel
    low = np.array([9, 11, 4])
    # Back on the full grid, each region is exactly the voxels with its bit.
    full = np.zeros(shape, dtype=np.uint8)
    full[9:21, 11:23, 4:10] = labels
    for bit, mask in enumerate((wt, tc, et)):
        assert np.array_equal((full & (1 << bit)) > 0, mask), bit
    assert np.allclose(moved[:3, :3], affine[:3, :3])
    assert np.allclose(moved @ [0, 0, 0, 1], affine @ [*low, 1])
    assert label_volume({"WT": np.zeros(shape, dtype=bool)}, affine) is None
    assert label_volume({}, affine) is None


def test_a_voxel_takes_the_colour_of_its_innermost_region_shown() -> None:
    from neuronova_lib.dashboards.study import COLOURS, label_colormap

    colours = {"WT": "green", "TC": "blue", "ET": "red"}
    table = label_colormap(colours, {"WT", "TC", "ET"})
    assert table["I"] == list(range(8)) and table["A"][0] == 0

    def rgb(value: int, table: dict) -> tuple[int, int, int] | None:
        return (tuple(table[c][value] for c in "RGB") if table["A"][value] else None)

    assert rgb(0b001, table) == COLOURS["green"]  # oedema only
    assert rgb(0b011, table) == COLOURS["blue"]  # core
    assert rgb(0b111, table) == COLOURS["red"]  # enhancing
    no_et = label_colormap({**colours, "TC": "yellow"}, {"WT", "TC"})
    assert rgb(0b111, no_et) == COLOURS["yellow"]  # ET hidden: its voxels show the core's
    assert rgb(0b001, label_colormap(colours, {"TC"})) is None  # WT hidden: oedema clear
    assert all(a == 0 for a in label_colormap(colours, set())["A"])
