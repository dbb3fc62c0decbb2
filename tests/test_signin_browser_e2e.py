"""The sign-in in a real browser (headless Debian Chromium): MLflow's UI behind it.

Screenshots of the sign-in page and of the signed-in MLflow page are written to
``$NEURONOVA_SCREENSHOTS`` (default: the test's temporary folder) for a person to look at.
"""

from __future__ import annotations

import functools
import os
import threading
import uuid
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import update

from browser import browser, session_cookie, sign_in, wait_for, wait_for_text  # noqa: F401
from neuronova_lib.db.browser_sessions import COOKIE_NAME, session_hash
from neuronova_lib.db.engine import session_factory
from neuronova_lib.db.models import BrowserSession

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("NEURONOVA_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _path(driver: Any) -> str:
    return "/" + driver.current_url.split("/", 3)[3]


def test_owner_signs_in_opens_mlflow_and_signs_out(browser: Any, platform: Any,  # noqa: F811
                                                   tmp_path: Path) -> None:
    shots = _shots(tmp_path)
    browser.get(f"{platform.url}/mlflow/")
    wait_for(browser, "#username")
    assert _path(browser) == "/login?next=/mlflow/"
    browser.save_screenshot(str(shots / "signin-login.png"))

    browser.find_element("css selector", "#username").send_keys("owner")
    browser.find_element("css selector", "#password").send_keys(platform.password("owner"))
    browser.find_element("css selector", "button[type=submit]").click()
    # MLflow's React app really runs: its navigation and the experiments it fetched.
    wait_for_text(browser, "Experiments")
    wait_for_text(browser, "Default")
    assert _path(browser).startswith("/mlflow/")
    browser.save_screenshot(str(shots / "signin-mlflow.png"))
    # A write the way MLflow's UI makes one (fetch POST from its page, cookie only) passes
    # the cross-site check: the browser marks it same-origin.
    name = f"ui-{uuid.uuid4().hex[:8]}"
    status = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/mlflow/ajax-api/2.0/mlflow/experiments/create', {method: 'POST',"
        " headers: {'Content-Type': 'application/json'},"
        f" body: JSON.stringify({{name: '{name}'}})}}).then(r => done(r.status));")
    assert status == 200
    from mlflow.tracking import MlflowClient

    assert MlflowClient(platform.settings.mlflow_url).get_experiment_by_name(name) is not None
    cookie = browser.get_cookie(COOKIE_NAME)
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/"

    # Sign out from the sign-in page (a form with the session's CSRF token).
    browser.get(f"{platform.url}/login")
    wait_for(browser, "#sign-out").click()
    wait_for_text(browser, "You are signed out.")
    assert session_cookie(browser) is None
    with session_factory(platform.settings.sqlalchemy_url)() as db:
        assert db.get(BrowserSession, session_hash(cookie["value"])) is None
    old = requests.get(f"{platform.url}/mlflow/", cookies={COOKIE_NAME: cookie["value"]},
                       headers={"Accept": "text/html"}, allow_redirects=False, timeout=10)
    assert old.status_code == 302
    browser.get(f"{platform.url}/mlflow/")
    wait_for(browser, "#username")


def test_forged_and_expired_cookies_and_a_clinician_are_refused(
        browser: Any, platform: Any) -> None:  # noqa: F811
    browser.get(f"{platform.url}/login")
    browser.add_cookie({"name": COOKIE_NAME, "value": uuid.uuid4().hex, "path": "/"})
    browser.get(f"{platform.url}/mlflow/")
    wait_for(browser, "#username")  # the forged cookie got the sign-in page

    sign_in(browser, platform.url, "scientist", platform.password("scientist"), "/mlflow/")
    wait_for_text(browser, "Experiments")
    with session_factory(platform.settings.sqlalchemy_url)() as db:
        db.execute(update(BrowserSession)
                   .where(BrowserSession.id_hash == session_hash(session_cookie(browser)))
                   .values(expires_at=BrowserSession.created_at))
        db.commit()
    browser.get(f"{platform.url}/mlflow/")
    wait_for(browser, "#username")

    browser.delete_all_cookies()
    sign_in(browser, platform.url, "clinician", platform.password("clinician"), "/mlflow/")
    wait_for_text(browser, "this needs the role")
    assert "MLflow" not in browser.title


@pytest.fixture
def other_site(tmp_path: Path) -> Iterator[str]:
    """Pages served from another origin on this machine (127.0.0.1, another port): same
    site for the browser, so the SameSite=Strict cookie goes along and only the Fetch
    Metadata / Origin check stands between the page and the session."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_cross_site_form_post_is_refused(browser: Any, platform: Any,  # noqa: F811
                                           other_site: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    name = f"csrf-{uuid.uuid4().hex[:8]}"
    # The classic JSON-by-form trick: text/plain body '{"name": "...", "x": "="}'.
    (tmp_path / "attack.html").write_text(f"""<!doctype html><html><body>
<form id="f" method="post" enctype="text/plain"
 action="{platform.url}/mlflow/ajax-api/2.0/mlflow/experiments/create">
<input name='{{"name": "{name}", "x": "' value='"}}'></form>
<form id="g" method="post" action="{platform.url}/logout"><input name="csrf" value="x"></form>
</body></html>""")
    sign_in(browser, platform.url, "owner", platform.password("owner"), "/mlflow/")
    wait_for_text(browser, "Experiments")
    cookie = session_cookie(browser)

    browser.get(f"{other_site}/attack.html")
    browser.execute_script("document.getElementById('f').submit()")
    wait_for_text(browser, "cannot use your session")
    assert MlflowClient(platform.settings.mlflow_url).get_experiment_by_name(name) is None

    browser.get(f"{other_site}/attack.html")
    browser.execute_script("document.getElementById('g').submit()")
    wait_for_text(browser, "Request refused")
    assert session_cookie(browser) == cookie  # still signed in
    browser.get(f"{platform.url}/mlflow/")
    wait_for_text(browser, "Experiments")
