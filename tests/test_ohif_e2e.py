"""OHIF at /pacs-viewer/ on the real stack, in headless Debian Chromium.

A synthetic demo case is stored as HTJ2K lossless through the ingest gate, with a
DICOM SEG made by the platform's own writer (neuronova_lib.ai.results) from the
case's ground truth (that tests the viewer, not a model). The clinician signs in
through the form, follows the link the worklist uses (``/api/studies/{uid}/ohif``)
and OHIF must draw the first image (pixels read back from its canvas) and list the
SEG. Every request the browser makes is read from Chrome's performance log: one to
another host fails the test, and the frames it fetched must be HTJ2K (so OHIF
decoded HTJ2K in the browser to draw). Screenshots go to ``$NEURONOVA_SCREENSHOTS``
(default: the test's temporary folder).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import ohif_page
import pytest
import requests
from browser import WAIT, network_events, other_hosts, screenshots, wait_for
from ohif_page import DemoStudy, store_demo_study, wait_for_image, wait_for_overlay
from sqlalchemy import select, update
from test_signin_e2e import browser_session

from neuronova_lib.ai.results import SEG_SERIES_DESCRIPTION
from neuronova_lib.db.browser_sessions import COOKIE_NAME, session_hash
from neuronova_lib.db.engine import session_factory
from neuronova_lib.db.models import AuditRecord, BrowserSession
from neuronova_lib.stack.ohif import ViewerNotInstalled, install_viewer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HTJ2K_SYNTAXES = ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
                  "1.2.840.10008.1.2.4.203")
VIEWER_ROLES = ("clinician", "scientist", "owner", "admin")


@pytest.fixture(scope="module")
def viewer() -> Path:
    try:
        return install_viewer()
    except ViewerNotInstalled as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def demo(viewer: Path, platform: Any, tmp_path_factory: pytest.TempPathFactory) -> DemoStudy:
    return store_demo_study(platform.settings, tmp_path_factory.mktemp("ohif-case"), seed=31)


def frame_answers(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The answers to WADO-RS frame requests: URL, status, Content-Type."""
    answers = []
    for event in events:
        if event["method"] != "Network.responseReceived":
            continue
        response = event["params"]["response"]
        if "/frames/" in response["url"]:
            headers = {k.lower(): v for k, v in response["headers"].items()}
            answers.append({"url": response["url"], "status": response["status"],
                            "type": headers.get("content-type", "")})
    return answers


def bearer_tokens(events: list[dict[str, Any]]) -> set[str]:
    """The bearer tokens the page sent with its DICOMweb requests."""
    found = set()
    for event in events:
        if event["method"] in ("Network.requestWillBeSent", "Network.requestWillBeSentExtraInfo"):
            params = event["params"]
            headers = (params.get("request") or {}).get("headers") or params.get("headers") or {}
            for name, value in headers.items():
                if name.lower() == "authorization" and value.startswith("Bearer "):
                    found.add(value[7:])
    return found


def open_in_ohif(driver: Any, platform: Any, study: str, username: str = "clinician") -> None:
    network_events(driver)  # what Chromium's first tab did is not the platform's
    ohif_page.open_in_ohif(driver, platform, study, username)


def test_clinician_opens_the_study_in_ohif(chromium: Any, platform: Any, demo: DemoStudy,
                                           tmp_path: Path) -> None:
    shots = screenshots(tmp_path)
    open_in_ohif(chromium, platform, demo.study)
    try:
        image = wait_for_image(chromium)
    finally:
        chromium.save_screenshot(str(shots / "ohif-first-image.png"))
    # OHIF took the token out of the address bar; the page is the viewer's.
    assert urlsplit(chromium.current_url).path == "/pacs-viewer/viewer"
    assert "token=" not in chromium.current_url
    assert image["width"] > 100 and image["height"] > 100, image
    # The study browser lists every series, the AI's SEG among them.
    deadline = time.monotonic() + WAIT
    text = ""
    while time.monotonic() < deadline:
        text = chromium.execute_script("return document.body.innerText")
        if SEG_SERIES_DESCRIPTION[:20] in text:
            break
        time.sleep(0.2)
    chromium.save_screenshot(str(shots / "ohif-study.png"))
    assert SEG_SERIES_DESCRIPTION[:20] in text, text[:2000]
    assert "SEG" in text
    assert image["colour"] < 0.0005, image  # grey MR, nothing over it yet
    # Opening the SEG draws its regions over the T1 series it was made on.
    from selenium.webdriver.common.action_chains import ActionChains

    thumbnail = chromium.find_element(
        "xpath", f"//*[contains(text(), '{SEG_SERIES_DESCRIPTION[:20]}')]")
    ActionChains(chromium).double_click(thumbnail).perform()
    try:
        overlay = wait_for_overlay(chromium)
    finally:
        chromium.save_screenshot(str(shots / "ohif-seg.png"))
    assert overlay["lit"] > 0.05, overlay

    events = network_events(chromium)
    assert not other_hosts(events, platform.url), other_hosts(events, platform.url)
    frames = frame_answers(events)
    assert frames, "OHIF fetched no frame"
    assert all(f["status"] == 200 for f in frames), frames[:5]
    # What it drew came as HTJ2K codestreams: decoded in the browser.
    assert all(any(ts in f["type"] for ts in HTJ2K_SYNTAXES) for f in frames), frames[:5]

    # Every DICOMweb request carried the link's study-scoped token, and the guard's
    # audit rows name the clinician.
    tokens = bearer_tokens(events)
    assert len(tokens) == 1, tokens
    claims = platform.tokens.verify(tokens.pop(), "signed")
    assert claims.sub == "clinician" and claims.studies == (demo.study,)
    with session_factory(platform.settings.sqlalchemy_url)() as db:
        rows = db.execute(select(AuditRecord.username, AuditRecord.decision, AuditRecord.study,
                                 AuditRecord.reason)
                          .where(AuditRecord.token_id == claims.jti)).all()
    proxy_rows = [r for r in rows if r.reason != "ohif_open"]
    assert proxy_rows and {r.username for r in rows} == {"clinician"}
    assert {r.decision for r in proxy_rows} == {"allow"}
    assert any(r.reason == "ohif_open" and r.study == demo.study for r in rows)


def test_the_link_token_opens_its_study_only(platform: Any, demo: DemoStudy) -> None:
    web = browser_session(platform, "clinician", next_path="/")
    opened = web.get(f"{platform.url}/api/studies/{demo.study}/ohif", allow_redirects=False,
                     timeout=10)
    assert opened.status_code == 303 and opened.headers["cache-control"] == "no-store"
    target = urlsplit(opened.headers["location"])
    assert target.path == "/pacs-viewer/viewer"
    query = parse_qs(target.query)
    assert query["StudyInstanceUIDs"] == [demo.study]
    token = query["token"][0]
    dicomweb = f"{platform.url}/api/pacs/dicom-web"
    bearer = {"Authorization": f"Bearer {token}", "Accept": "application/dicom+json"}
    own = requests.get(f"{dicomweb}/studies/{demo.study}/metadata", headers=bearer, timeout=30)
    assert own.status_code == 200 and len(own.json()) > 0
    # Study B, as a bearer and as a signed URL: refused, audited under the clinician.
    for url, headers in ((f"{dicomweb}/studies/{platform.study_b.study}/metadata", bearer),
                         (f"{dicomweb}/studies/{platform.study_b.study}/metadata?token={token}",
                          {"Accept": "application/dicom+json"})):
        other = requests.get(url, headers=headers, timeout=30)
        assert other.status_code == 403, other.text
        row = platform.wait_for_audit(other.headers["x-request-id"], service="proxy")
        assert (row["username"], row["reason"]) == ("clinician", "scope")
    search = requests.get(f"{dicomweb}/studies", headers=bearer, timeout=30)
    assert [s["0020000D"]["Value"][0] for s in search.json()] == [demo.study]
    # The token reads images and nothing else: it mints no signed URL, opens no page,
    # calls no API.
    mint = requests.post(f"{platform.url}/api/pacs/sign", json={"study_uid": demo.study},
                         headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert mint.status_code == 403
    page = requests.get(f"{platform.url}/pacs-viewer/", allow_redirects=False, timeout=10,
                        headers={"Authorization": f"Bearer {token}"})
    assert page.status_code == 401
    me = requests.get(f"{platform.url}/api/users/me", timeout=10,
                      headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 401
    # A link with something else than a study UID is refused in words, and audited.
    bad = web.get(f"{platform.url}/api/studies/not-a-uid/ohif", allow_redirects=False,
                  timeout=10)
    assert bad.status_code == 400 and "is not a DICOM study UID" in bad.text
    row = platform.wait_for_audit(bad.headers["x-request-id"], service="api")
    assert (row["username"], row["reason"]) == ("clinician", "bad_uid")


def test_signing_out_ends_the_link_token(platform: Any, demo: DemoStudy) -> None:
    web = browser_session(platform, "clinician", next_path="/")
    opened = web.get(f"{platform.url}/api/studies/{demo.study}/ohif", allow_redirects=False,
                     timeout=10)
    token = parse_qs(urlsplit(opened.headers["location"]).query)["token"][0]
    url = f"{platform.url}/api/pacs/dicom-web/studies/{demo.study}/metadata"
    bearer = {"Authorization": f"Bearer {token}", "Accept": "application/dicom+json"}
    assert requests.get(url, headers=bearer, timeout=30).status_code == 200
    page = web.get(f"{platform.url}/login", timeout=10)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf, page.text[:500]
    out = web.post(f"{platform.url}/logout", data={"csrf": csrf.group(1)}, timeout=10,
                   headers={"Origin": platform.url}, allow_redirects=False)
    assert out.status_code == 303
    deadline = time.monotonic() + platform.settings.revocation_bound + 5
    answer = requests.get(url, headers=bearer, timeout=30)
    while answer.status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.25)
        answer = requests.get(url, headers=bearer, timeout=30)
    assert answer.status_code == 401, answer.text
    row = platform.wait_for_audit(answer.headers["x-request-id"], service="proxy")
    assert (row["username"], row["reason"]) == ("clinician", "revoked")


def test_the_viewer_route_and_its_config(platform: Any, viewer: Path) -> None:
    for username in VIEWER_ROLES:
        web = browser_session(platform, username, next_path="/pacs-viewer/")
        page = web.get(f"{platform.url}/pacs-viewer/viewer", timeout=10)
        assert page.status_code == 200, (username, page.text[:300])
        assert 'window.PUBLIC_URL="/pacs-viewer/"' in page.text
        assert "cross-origin-embedder-policy" not in page.headers
        csp = page.headers["content-security-policy"]
        assert "connect-src 'self' blob: data:;" in csp and "default-src 'self'" in csp
        assert page.headers["cache-control"] == "no-store"
    config = web.get(f"{platform.url}/pacs-viewer/app-config.js", timeout=10)
    assert config.status_code == 200 and "/api/pacs/dicom-web" in config.text
    for gone in ("cloudfront", "https://", "huggingface", "MarkerLabelmap",
                 "LabelmapSlicePropagation", "InterpolateLabelmap"):
        assert gone not in config.text, gone
    # Bundles are the re-based copy, their chunk loader pointed at /pacs-viewer/.
    bundle = next(viewer.glob("app.bundle.*.js")).name
    script = web.get(f"{platform.url}/pacs-viewer/{bundle}", timeout=30)
    assert script.status_code == 200 and '__webpack_require__.p = "/pacs-viewer/";' in script.text
    # Without a session: a browser is sent to sign in, a program gets 401.
    anonymous = requests.get(f"{platform.url}/pacs-viewer/viewer?StudyInstanceUIDs=1.2.3",
                             headers={"Accept": "text/html"}, allow_redirects=False, timeout=10)
    assert anonymous.status_code == 302
    assert anonymous.headers["location"].startswith("/login?next=/pacs-viewer/viewer")
    link = requests.get(f"{platform.url}/api/studies/1.2.3/ohif", allow_redirects=False,
                        timeout=10)
    assert link.status_code == 303
    assert link.headers["location"] == "/login?next=/api/studies/1.2.3/ohif"


def test_an_ended_session_goes_back_to_sign_in(chromium: Any, platform: Any,
                                               demo: DemoStudy, tmp_path: Path) -> None:
    open_in_ohif(chromium, platform, demo.study)
    wait_for_image(chromium)
    cookie = chromium.get_cookie(COOKIE_NAME)["value"]
    # The session runs out (its absolute end passes), as NEURONOVA_SESSION_TTL would.
    with session_factory(platform.settings.sqlalchemy_url)() as db:
        db.execute(update(BrowserSession).where(BrowserSession.id_hash == session_hash(cookie))
                   .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
        db.commit()
    chromium.get(f"{platform.url}/pacs-viewer/viewer?StudyInstanceUIDs={demo.study}")
    wait_for(chromium, "#username")
    assert urlsplit(chromium.current_url).path == "/login"
    chromium.get(f"{platform.url}/api/studies/{demo.study}/ohif")
    wait_for(chromium, "#username")
    assert urlsplit(chromium.current_url).path == "/login"
    chromium.save_screenshot(str(screenshots(tmp_path) / "ohif-session-ended.png"))
    # Signing in again comes back to the viewer with the study.
    chromium.find_element("css selector", "#username").send_keys("clinician")
    chromium.find_element("css selector", "#password").send_keys(platform.password("clinician"))
    chromium.find_element("css selector", "button[type=submit]").click()
    wait_for_image(chromium)
    assert urlsplit(chromium.current_url).path == "/pacs-viewer/viewer"
