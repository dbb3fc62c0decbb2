"""The study viewer's AI analysis and the pages' notifications on the real stack, in
headless Chromium at 1920×1080.

A platform of this module's own with the dashboards and MLflow, serving the demo model as
``up`` makes it (:func:`ensure_demo_model`, a few steps, a gate at 0: model quality is
test_ai_training_e2e's subject), trained in the background while the model owner's test
runs. A four-sequence demo case without any SEG is stored. The clinician clicks "Analyse
with AI", watches the progress, then sees the volumes table and the new overlay; a job
they request while on the worklist brings a notice there with a link to the study; a model
owner's page says why it cannot ask. Screenshots go to ``$NEURONOVA_SCREENSHOTS``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from browser import WAIT, network_events, other_hosts, screenshots, sign_in, wait_for, wait_for_text
from conftest import OnPlatform
from test_dashboards_e2e import _green_share
from test_hub_e2e import CHAMPION, Champion

from neuronova_lib.dashboards.worklist import study_link
from neuronova_lib.demo import SIZES, CaseInfo, write_demo_cases
from neuronova_lib.stack.local import local_platform
from neuronova_lib.stack.platform import load_folder

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WORKLIST = "/dashboards/voila/render/worklist.ipynb"
#: Seconds a test waits for a job to end (the demo model on a small case: seconds).
JOB_WAIT = 300.0


@dataclass
class Lab(OnPlatform):
    case: CaseInfo
    champion: Champion

    def jobs(self, user: str = "clinician") -> list[dict[str, Any]]:
        answer = requests.get(f"{self.url}/api/inference", timeout=30,
                              params={"study": self.case.study_instance_uid},
                              headers={"Authorization": f"Bearer {self.login(user)}"})
        answer.raise_for_status()
        return list(answer.json())

    def study_page(self) -> str:
        return study_link(self.case.study_instance_uid)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    home = tmp_path_factory.mktemp("neuronova-analysis")
    shape, spacing = SIZES["small"]
    [case] = write_demo_cases(tmp_path_factory.mktemp("analysis-case"), cases=1, seed=23,
                              shape=shape, spacing=spacing)
    with local_platform(home, watch=True, dashboards_enabled=True, openemr_demo=False,
                        **CHAMPION) as local:
        loaded = load_folder(local.settings, case.directory / "dicom", htj2k=True)
        assert set(loaded["status"]) == {"Success"}, loaded
        champion = Champion(local.settings)
        try:
            yield Lab(local, case, champion)
        finally:
            champion.stop()


def _open_study(driver: Any, lab: Lab, user: str) -> None:
    sign_in(driver, lab.url, user, lab.password(user), next_path=lab.study_page())
    wait_for(driver, "canvas", timeout=WAIT)
    wait_for_text(driver, "AI analysis")


def _button(driver: Any, text: str) -> Any:
    for element in driver.find_elements("css selector", "button"):
        if element.text.strip() == text:
            return element
    raise AssertionError(f"no button {text!r} on the page")


def _body(driver: Any) -> str:
    return str(driver.find_element("tag name", "body").text)


def test_a_model_owner_sees_why_they_cannot_request(chromium: Any, lab: Lab,
                                                    tmp_path: Path) -> None:
    _open_study(chromium, lab, "owner")
    assert not _button(chromium, "Analyse with AI").is_enabled()
    wait_for_text(chromium, "but not request one: a clinician or an administrator can")
    assert "Traceback" not in _body(chromium) and "Could not" not in _body(chromium)
    chromium.save_screenshot(str(screenshots(tmp_path) / "analysis-model-owner.png"))
    # The API refuses them too (the button only says so first).
    answer = requests.post(f"{lab.url}/api/inference", timeout=30,
                           json={"study": lab.case.study_instance_uid},
                           headers={"Authorization": f"Bearer {lab.login('owner')}"})
    assert answer.status_code == 403


def test_the_clinician_analyses_the_study_and_watches_it(chromium: Any, lab: Lab,
                                                        tmp_path: Path) -> None:
    model = lab.champion.wait()
    network_events(chromium)
    _open_study(chromium, lab, "clinician")
    assert _green_share(chromium) < 0.0005, "an overlay before any analysis"
    assert "No AI segmentation for this study yet" in _body(chromium)
    _button(chromium, "Analyse with AI").click()
    # Live progress from the job's event stream, set from a thread of the page's kernel.
    wait_for(chromium, ".nn-progress", timeout=30)
    wait_for_text(chromium, "Elapsed", timeout=30)
    chromium.save_screenshot(str(screenshots(tmp_path) / "analysis-progress.png"))
    wait_for(chromium, "table.nn-volumes", timeout=JOB_WAIT)
    table = chromium.find_element("css selector", "table.nn-volumes").text
    for region in ("WT whole tumour", "TC tumour core", "ET enhancing tumour"):
        assert region in table, table
    assert table.count(" ml") == 3, table
    wait_for_text(chromium, "Finished", timeout=60)  # the new SEG drawn
    body = _body(chromium)
    assert f"{model.name} version {model.version}" in body, body
    assert "NOT FOR CLINICAL USE" in body and "Took" in body
    # The new SEG is drawn over the image.
    deadline = time.monotonic() + 60
    while (shown := _green_share(chromium)) < 0.001 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert shown >= 0.001, "no green (whole tumour) over the image after the analysis"
    wait_for_text(chromium, "WT whole tumour")  # the region's toggle
    assert _button(chromium, "Run the analysis again").is_enabled()
    assert "Traceback" not in _body(chromium) and "Could not" not in _body(chromium)
    chromium.save_screenshot(str(screenshots(tmp_path) / "analysis-done.png"))
    [job] = lab.jobs()
    assert job["state"] == "done" and job["created_by"] == "clinician"
    assert other_hosts(network_events(chromium), lab.url) == []


def test_the_worklist_tells_the_clinician_when_their_analysis_ends(
        chromium: Any, lab: Lab, tmp_path: Path) -> None:
    lab.champion.wait()
    network_events(chromium)
    sign_in(chromium, lab.url, "clinician", lab.password("clinician"), next_path=WORKLIST)
    wait_for(chromium, "table.nn-worklist", timeout=WAIT)
    time.sleep(2)  # the page's watcher has looked once
    # The clinician asks again (as from another page, or a script of theirs).
    answer = requests.post(f"{lab.url}/api/inference", timeout=30,
                           json={"study": lab.case.study_instance_uid, "rerun": True},
                           headers={"Authorization": f"Bearer {lab.login('clinician')}"})
    assert answer.status_code == 202, answer.text
    notice = wait_for(chromium, ".nn-notice", timeout=JOB_WAIT)
    assert "AI analysis finished" in notice.text, notice.text
    assert f"ID {lab.case.patient_id}" in notice.text, notice.text
    href = chromium.find_element("css selector", "a.nn-notice-open").get_attribute("href")
    assert href == f"{lab.url}{lab.study_page()}", href
    chromium.save_screenshot(str(screenshots(tmp_path) / "analysis-notice-worklist.png"))
    _button(chromium, "Dismiss").click()
    deadline = time.monotonic() + 10
    while chromium.find_elements("css selector", ".nn-notice"):
        assert time.monotonic() < deadline, "the notice stayed after Dismiss"
        time.sleep(0.2)
    # Opening the study shows the finished analysis at once, and offers to run it again.
    chromium.get(href)
    wait_for(chromium, "table.nn-volumes", timeout=WAIT)
    assert _button(chromium, "Run the analysis again").is_enabled()
    assert len(lab.jobs()) == 2  # the pages asked for no job of their own
    assert other_hosts(network_events(chromium), lab.url) == []
    assert "Traceback" not in _body(chromium)


def test_a_running_job_is_followed_not_started_again(chromium: Any, lab: Lab,
                                                     tmp_path: Path) -> None:
    """An admin's analysis of the study is running when the clinician opens it: the page
    follows that job, and the clinician's button does not start a second one."""
    lab.champion.wait()
    before = len(lab.jobs())
    answer = requests.post(f"{lab.url}/api/inference", timeout=30,
                           json={"study": lab.case.study_instance_uid, "rerun": True},
                           headers={"Authorization": f"Bearer {lab.login('admin')}"})
    assert answer.status_code == 202, answer.text
    _open_study(chromium, lab, "clinician")
    # Followed: its progress and clock, or, when it ended while the page was being built
    # (a warm worker takes seconds), its result; either way the clinician started nothing.
    deadline = time.monotonic() + 30
    while not any(t in chromium.find_element("tag name", "body").text
                  for t in ("Elapsed", "Took")):
        assert time.monotonic() < deadline, "the running job is not followed"
        time.sleep(0.2)
    enabled = _button(chromium, "Run the analysis again").is_enabled()
    # Read after the button: a job that ends in between shows "Took" before the button
    # comes back.
    if "Took" not in chromium.find_element("tag name", "body").text:
        assert not enabled, "the button was on while the admin's analysis ran"
    wait_for_text(chromium, "Took", timeout=JOB_WAIT)
    jobs = lab.jobs()
    assert len(jobs) == before + 1 and jobs[0]["created_by"] == "admin"
    assert jobs[0]["state"] == "done"
    assert not chromium.find_elements("css selector", ".nn-notice")  # not theirs
