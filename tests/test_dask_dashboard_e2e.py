"""The Dask dashboard at /dask/: signed-in admins and scientists only (nginx auth_request)."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from test_signin_e2e import browser_session

pytestmark = pytest.mark.e2e

STATUS = "/dask/status"


def test_scientist_session_opens_the_dashboard(platform: Any) -> None:
    web = browser_session(platform, "scientist", next_path=STATUS)
    page = web.get(f"{platform.url}{STATUS}", timeout=30)
    assert page.status_code == 200
    assert "Dask" in page.text and "bokeh" in page.text.lower()


def test_dashboard_refuses_clinicians_and_strangers(platform: Any) -> None:
    browser = requests.get(f"{platform.url}{STATUS}", allow_redirects=False, timeout=10,
                           headers={"Accept": "text/html"})
    assert browser.status_code == 302
    assert browser.headers["location"] == f"/login?next={STATUS}"
    clinician = browser_session(platform, "clinician", next_path=STATUS)
    assert clinician.get(f"{platform.url}{STATUS}", timeout=10).status_code == 403
    bearer = {"Authorization": f"Bearer {platform.login('clinician')}"}
    assert requests.get(f"{platform.url}{STATUS}", headers=bearer, timeout=10).status_code == 403
    admin = {"Authorization": f"Bearer {platform.login('admin')}"}
    assert requests.get(f"{platform.url}{STATUS}", headers=admin, timeout=30).status_code == 200
