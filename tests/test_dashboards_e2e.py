"""The clinician dashboards (Voilà at /dashboards/) on the real stack, in headless Chromium.

A platform of this module's own runs the dashboards service (the session platform does
not). The clinician signs in through the form and opens /dashboards/: the worklist must
list the stored studies, read as the clinician (the guard's audit rows name them, acting
through the dashboards), with no request from the page to any other host (Chrome's
performance log). Screenshots go to ``$NEURONOVA_SCREENSHOTS`` (default: the test's
temporary folder).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from browser import (
    WAIT,
    first_image_painted,
    network_events,
    other_hosts,
    screenshots,
    sign_in,
    wait_for,
    wait_for_text,
)
from conftest import RunningPlatform, StudyRef
from pydicom.data import get_testdata_file
from sqlalchemy import select
from test_signin_e2e import browser_session

from neuronova_lib.db.engine import get_engine
from neuronova_lib.db.models import AuditRecord
from neuronova_lib.orthanc_store import OrthancStore
from neuronova_lib.security.tokens import token_service
from neuronova_lib.stack.local import local_platform

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WORKLIST = "/dashboards/voila/render/worklist.ipynb"


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    """A platform with the dashboards service, and two small studies stored."""
    home = tmp_path_factory.mktemp("neuronova-dashboards")
    with local_platform(home, watch=True, dashboards_enabled=True,
                        mlflow_enabled=False) as local:
        store = OrthancStore.from_settings(local.settings)
        files = [get_testdata_file("MR_small.dcm"), get_testdata_file("CT_small.dcm")]
        for path in files:
            store.store_file(path)
        yield RunningPlatform(local=local, tokens=token_service(local.settings), store=store,
                              study_a=StudyRef.of(files[0]), study_b=StudyRef.of(files[1]))


def _audit_rows(platform: RunningPlatform, since: float) -> list[dict[str, Any]]:
    engine = get_engine(platform.settings.sqlalchemy_url)
    query = select(AuditRecord.__table__).order_by(AuditRecord.id)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    return [r for r in rows if _epoch(r["time"]) >= since - 1]


def _epoch(when: Any) -> float:
    from datetime import UTC

    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _open_worklist(driver: Any, platform: RunningPlatform, username: str = "clinician") -> None:
    sign_in(driver, platform.url, username, platform.password(username), next_path=WORKLIST)
    wait_for(driver, "table.nn-worklist", timeout=WAIT)


def test_clinician_sees_the_worklist_as_themselves(chromium: Any, dash: RunningPlatform,
                                                   tmp_path: Path) -> None:
    network_events(chromium)
    started = time.time()
    _open_worklist(chromium, dash)
    # The worklist lists both stored studies, with the clinician named in the header.
    wait_for_text(chromium, "clinician")
    rows = chromium.find_elements("css selector", "tr.nn-study")
    studies = {row.get_attribute("data-study") for row in rows}
    assert {dash.study_a.study, dash.study_b.study} <= studies
    chromium.save_screenshot(str(screenshots(tmp_path) / "dashboards-worklist.png"))

    # Nothing came from another host (Voilà's CDN links are gone from the template).
    events = network_events(chromium)
    assert events, "Chrome's performance log is empty"
    assert other_hosts(events, dash.url) == []

    # The page read the studies as the clinician, through the dashboards (act claim).
    deadline = time.monotonic() + 10
    while True:
        rows = _audit_rows(dash, started)
        searches = [r for r in rows if r["service"] == "proxy" and r["decision"] == "allow"
                    and (r["path"] or "").endswith("/dicom-web/studies")]
        if searches or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert searches, rows
    assert {(r["username"], r["role"], r["server"]) for r in searches} == {
        ("clinician", "clinician", "dashboards")}
    minted = [r for r in rows if r["reason"] == "dashboard_token"]
    assert minted and minted[0]["username"] == "clinician"
    assert minted[0]["detail"] == f"for {WORKLIST}"


def test_the_dashboards_need_a_signed_in_clinician(dash: RunningPlatform) -> None:
    # A browser that is not signed in is sent to sign in, and comes back to the page.
    page = requests.get(f"{dash.url}{WORKLIST}", allow_redirects=False, timeout=10,
                        headers={"Accept": "text/html"})
    assert page.status_code == 302
    assert page.headers["location"] == f"/login?next={WORKLIST}"
    # A scientist is refused (the dashboards are the clinicians' and model owners').
    scientist = browser_session(dash, "scientist", WORKLIST)
    refused = scientist.get(f"{dash.url}{WORKLIST}", timeout=10, headers={"Accept": "text/html"})
    assert refused.status_code == 403
    # The clinician gets the page; routes of other roles stay closed to them.
    clinician = browser_session(dash, "clinician", WORKLIST)
    assert clinician.get(f"{dash.url}{WORKLIST}", timeout=60).status_code == 200
    for path in ("/dask/", "/api/users", "/api/audit"):
        answer = clinician.get(f"{dash.url}{path}", timeout=10, allow_redirects=False)
        assert answer.status_code in (401, 403, 404), (path, answer.status_code)
        assert answer.status_code != 200


def test_a_token_header_from_the_browser_counts_for_nothing(dash: RunningPlatform) -> None:
    """nginx replaces X-NeuroNova-Token: an admin's token sent along by a clinician's
    browser never reaches the page's kernel, whether the API minted one for the page (a
    page opened: Accept text/html) or not (then the kernel has none at all)."""
    clinician = browser_session(dash, "clinician", WORKLIST)
    other = dash.access_token("admin", sub="admin")
    before = time.time()
    for accept in ("text/html", "*/*"):
        page = clinician.get(f"{dash.url}{WORKLIST}", timeout=60,
                             headers={"Accept": accept, "X-NeuroNova-Token": other})
        assert page.status_code == 200
    time.sleep(1.5)  # the guard's audit writer
    readers = {(r["username"], r["server"]) for r in _audit_rows(dash, before)
               if r["service"] == "proxy" and r["decision"] == "allow"}
    assert readers == {("clinician", "dashboards")}


def test_an_ended_session_says_sign_in_again(chromium: Any, dash: RunningPlatform,
                                             tmp_path: Path) -> None:
    """Signing out elsewhere ends the page's token too: the next search says so, with a
    link to sign in again (not a traceback)."""
    _open_worklist(chromium, dash)
    cookie = chromium.get_cookie("neuronova_session")["value"]
    other = requests.Session()
    other.cookies.set("neuronova_session", cookie)
    form = other.get(f"{dash.url}/login", timeout=10)
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf, form.text[:500]
    out = other.post(f"{dash.url}/logout", data={"csrf": csrf.group(1)},
                     headers={"Origin": dash.url}, allow_redirects=False, timeout=10)
    assert out.status_code == 303, out.text
    # The guard refuses a revoked token within NEURONOVA_REVOCATION_BOUND: search until.
    deadline = time.monotonic() + 30
    while True:
        chromium.find_element("css selector", ".widget-button.mod-primary").click()
        try:
            wait_for_text(chromium, "Your session has ended", timeout=3)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
    link = chromium.find_element("link text", "Sign in again")
    assert link.get_attribute("href").endswith(f"/login?next={WORKLIST}")
    assert "Traceback" not in chromium.find_element("tag name", "body").text
    chromium.save_screenshot(str(screenshots(tmp_path) / "dashboards-session-ended.png"))


@pytest.fixture(scope="module")
def demo(dash: RunningPlatform, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A synthetic four-sequence case with a SEG of its ground truth (tests/ohif_page.py)."""
    from ohif_page import store_demo_study

    return store_demo_study(dash.settings, tmp_path_factory.mktemp("dash-case"), seed=41)


def _green_share(driver: Any) -> float:
    """The share of clearly green pixels in NiiVue's canvas, from a screenshot (a WebGL
    canvas cannot be read back from the page): the whole tumour's default colour."""
    import io

    from PIL import Image

    canvas = driver.find_element("css selector", "canvas")
    shot = Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("RGB")
    pixels = np.asarray(shot).astype(int)
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return float(((green > 120) & (green > red + 60) & (green > blue + 60)).mean())


def _click(driver: Any, text: str) -> None:
    for element in driver.find_elements("css selector", "button, label"):
        if element.text.strip() == text:
            element.click()
            return
    raise AssertionError(f"no button or label {text!r} on the page")


def test_clinician_opens_a_study_from_the_worklist(chromium: Any, dash: RunningPlatform,
                                                   demo: Any, tmp_path: Path) -> None:
    network_events(chromium)
    started = time.time()
    _open_worklist(chromium, dash)
    link = chromium.find_element("css selector", f'tr[data-study="{demo.study}"] a.nn-open')
    link.click()
    wait_for(chromium, "canvas", timeout=WAIT)
    wait_for_text(chromium, "WT whole tumour")
    assert f"study={demo.study}" in chromium.current_url
    # The first image came in the page's HTML: painted before Voilà's scripts had loaded,
    # and gone once NiiVue had drawn.
    painted, scripts = first_image_painted(chromium)
    assert painted is not None, "the page's first image was never painted"
    assert scripts is not None and painted < scripts, (painted, scripts)
    deadline = time.monotonic() + 10
    while chromium.find_elements("css selector", "#nn-first-image, .nn-first-frame"):
        assert time.monotonic() < deadline, "the first image stayed over the viewer"
        time.sleep(0.2)
    body = chromium.find_element("tag name", "body").text
    for text in ("T1", "T1 contrast", "T2", "FLAIR", "Axial", "Coronal", "Sagittal",
                 "NOT FOR CLINICAL USE", "Open in OHIF"):
        assert text in body, text
    assert "Your session has ended" not in body and "Could not" not in body
    # The viewer opens on the tumour with the AI segmentation drawn over it, and the
    # toggle takes it away.
    deadline = time.monotonic() + 30
    while (shown := _green_share(chromium)) < 0.001 and time.monotonic() < deadline:
        time.sleep(0.5)
    chromium.save_screenshot(str(screenshots(tmp_path) / "dashboards-study.png"))
    assert shown >= 0.001, "no green (whole tumour) over the image"
    _click(chromium, "AI segmentation")
    deadline = time.monotonic() + 15
    while (hidden := _green_share(chromium)) > shown / 10 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert hidden <= shown / 10, (shown, hidden)
    _click(chromium, "AI segmentation")
    # The mouse wheel steps through slices (NiiVue's own scrolling): the image changes.
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.support.ui import Select

    canvas = chromium.find_element("css selector", "canvas")
    before = canvas.screenshot_as_png
    for _ in range(4):
        ActionChains(chromium).scroll_from_origin(ScrollOrigin.from_element(canvas), 0, 120
                                                  ).perform()
        time.sleep(0.2)
    time.sleep(1)
    assert canvas.screenshot_as_png != before, "scrolling did not change the slice"
    # A window preset moves the range.
    readout = chromium.find_element("css selector", ".widget-readout").text
    Select(chromium.find_element("css selector", ".widget-dropdown select")).select_by_visible_text(
        "Full range")
    deadline = time.monotonic() + 10
    while chromium.find_element("css selector", ".widget-readout").text == readout:
        assert time.monotonic() < deadline, "the window preset did not change the range"
        time.sleep(0.2)
    _click(chromium, "Coronal")
    _click(chromium, "T1")
    time.sleep(2)
    chromium.save_screenshot(str(screenshots(tmp_path) / "dashboards-study-coronal-t1.png"))
    assert "Could not" not in chromium.find_element("tag name", "body").text

    events = network_events(chromium)
    assert other_hosts(events, dash.url) == []
    # The images were read as the clinician, through the dashboards.
    time.sleep(1.5)
    reads = [r for r in _audit_rows(dash, started) if r["service"] == "proxy"
             and r["study"] == demo.study and r["decision"] == "allow"]
    assert reads and {(r["username"], r["server"]) for r in reads} == {
        ("clinician", "dashboards")}

    # Leaving the page ends its kernel (and the kernel's loading of the other sequences).
    kernel = json.loads(chromium.find_element("id", "jupyter-config-data")
                        .get_attribute("textContent"))["kernelId"]
    chromium.get(dash.url + WORKLIST)
    wait_for(chromium, "table.nn-worklist", timeout=WAIT)
    deadline = time.monotonic() + 20
    while (status := _kernel_status(chromium, kernel)) == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert status == 404, f"the study page's kernel outlived the page (HTTP {status})"


def _kernel_status(driver: Any, kernel: str) -> int:
    """HTTP status of Voilà's kernel model ``kernel``, asked from the current page."""
    return int(driver.execute_async_script(
        "const [url, done] = arguments;"
        "fetch(url, {cache: 'no-store'}).then(r => done(r.status), () => done(0));",
        f"/dashboards/api/kernels/{kernel}"))


def test_the_worklist_pages_through_the_guard(dash: RunningPlatform, demo: Any) -> None:
    """QIDO-RS limit and offset through the guard, as the worklist asks for a page."""
    from neuronova_lib.dashboards.worklist import WorklistQuery, load_page
    from neuronova_lib.dicomweb.session import connect

    client = connect(dash.url, token=dash.login("clinician"))
    seen = []
    for page in range(3):
        found = load_page(client, WorklistQuery(page=page, page_size=1))
        assert len(found.rows) == 1 and found.has_next == (page < 2), page
        seen.append(found.rows[0].study_uid)
    assert sorted(seen) == sorted({dash.study_a.study, dash.study_b.study, demo.study})
    assert load_page(client, WorklistQuery(page=3, page_size=1)).rows == []
    # Search: one patient by ID; a name matches anywhere in it; the AI filter on the page.
    by_id = load_page(client, WorklistQuery(patient_id="NNDEMO-41-001"))
    assert [r.study_uid for r in by_id.rows] == [demo.study]
    assert by_id.rows[0].ai_status == "none"
    assert [r.study_uid for r in load_page(client, WorklistQuery(patient_name="case0")).rows
            ] == [demo.study]
    assert load_page(client, WorklistQuery(ai_status="done")).rows == []


def test_the_worklist_refreshes_in_the_background_without_renewing(
        dash: RunningPlatform, demo: Any) -> None:
    """The notifier's refresh of the worklist (a job of the user's changed state) reads with
    the page's token as it is: once that has ended, the refresh leaves the page as it was
    and asks for no new token; the user's own next action is what meets the ended session."""
    from neuronova_lib.dashboards.analysis import background_client
    from neuronova_lib.dashboards.pages import session_ended_html
    from neuronova_lib.dashboards.worklist_view import WorklistView
    from neuronova_lib.dicomweb.session import connect

    token, _ = token_service(dash.settings).mint("clinician", "clinician", "access", 4)
    client = connect(dash.url, token=token)
    view = WorklistView(client)
    background = background_client(client)
    view.go(0, background=background)
    shown = view.table.value
    assert demo.study in shown and view.message.value == ""
    time.sleep(5)  # past the token's end
    view.table.value = shown.replace(demo.study, "1.2.3.stale")
    view.go(0, background=background)
    assert "1.2.3.stale" in view.table.value and view.message.value == ""  # untouched
    assert client.auth.current() is None  # not renewed behind the user's back
    view.go(0)  # the user's own click: the ended session is said
    assert view.message.value == session_ended_html()
