"""The study viewer's patient panel on the real stack, in headless Chromium at 1920×1080.

The platform (the dashboards module's own fixture: Voilà, nginx, the API with its FHIR
facade, and the recorded OpenEMR demo server ``up`` starts) holds two synthetic studies:
one of demo patient ``NNDEMO-20261128-001``, whom the recorded OpenEMR knows (the chain
finds them there, writes them to the FHIR facade and caches them), and one of
``NNDEMO-41-001``, whom no source knows. The clinician sees the first patient's banner
(name, birth date, age, sex, identifiers, source and age of the record) and a calm "no
record" for the second; a model owner sees that patient records are for clinicians.
Screenshots: ``$NEURONOVA_SCREENSHOTS`` (default: the test's temporary folder).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import WAIT, network_events, other_hosts, screenshots, sign_in, wait_for, wait_for_text
from conftest import RunningPlatform, StudyRef
from test_dashboards_e2e import _audit_rows, demo  # noqa: F401 (fixture)

from neuronova_lib.dashboards.worklist import STUDY_PAGE
from neuronova_lib.demo.openemr_server import load_records
from neuronova_lib.orthanc_store import OrthancStore
from neuronova_lib.security.tokens import token_service
from neuronova_lib.stack.local import local_platform

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: The demo patient the recorded OpenEMR holds first (pubpid = the demo studies' ID).
KNOWN = load_records()[0]


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    """A platform with the dashboards service and the recorded OpenEMR, its services not
    restarted when they end (the last test stops OpenEMR to see the panel say so)."""
    home = tmp_path_factory.mktemp("neuronova-patient-panel")
    with local_platform(home, dashboards_enabled=True, mlflow_enabled=False) as local:
        store = OrthancStore.from_settings(local.settings)
        empty = StudyRef("", "", "")  # this module's studies are the fixtures below
        yield RunningPlatform(local=local, tokens=token_service(local.settings), store=store,
                              study_a=empty, study_b=empty)


@pytest.fixture(scope="module")
def known(dash: RunningPlatform, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A study of the demo patient OpenEMR knows (the demo data's seed gives the ID)."""
    from ohif_page import store_demo_study

    seed = int(KNOWN["pubpid"].split("-")[1])
    study = store_demo_study(dash.settings, tmp_path_factory.mktemp("known-case"), seed=seed)
    return study


def _open(driver: Any, platform: RunningPlatform, study: str) -> None:
    driver.get(f"{platform.url}{STUDY_PAGE}?study={study}")


def _panel_text(driver: Any, wanted: str) -> str:
    """The panel's text once it says ``wanted`` (it fills in after the page appears)."""
    wait_for_text(driver, wanted, timeout=WAIT)
    return str(driver.find_element("css selector", ".nn-patient, .nn-patient-panel").text)


def test_clinician_sees_the_patient_banner(chromium: Any, dash: RunningPlatform,
                                           known: Any, demo: Any, tmp_path: Path) -> None:  # noqa: F811
    network_events(chromium)
    started = time.time()
    sign_in(chromium, dash.url, "clinician", dash.password("clinician"),
            next_path=f"{STUDY_PAGE}?study={known.study}")
    banner = wait_for(chromium, ".nn-patient", timeout=WAIT)
    wait_for(chromium, "canvas", timeout=WAIT)  # the images came too
    wait_for_text(chromium, "WT whole tumour")
    time.sleep(1)
    chromium.save_screenshot(str(screenshots(tmp_path) / "dashboards-patient-panel.png"))
    text = banner.text
    pid = KNOWN["pubpid"]
    for part in (f"{KNOWN['lname']}, {KNOWN['fname']}", f"Born {KNOWN['DOB']} (",
                 " years)", "Sex Female", f"Hospital MRN {pid}", "on the images",
                 f"OpenEMR chart number {KNOWN['pid']}", f"OpenEMR record ID {KNOWN['uuid']}",
                 "Patient record from OpenEMR, updated just now"):
        assert part in text, (part, text)
    assert "stale" not in text and "Not answering" not in text

    # Opened again: the chain answers from its cache, and the panel says so.
    _open(chromium, dash, known.study)
    again = _panel_text(chromium, "Patient record from local cache")
    assert f"Hospital MRN {pid}" in again and "updated just now" in again

    # A patient no source knows: a calm message naming where it was looked for.
    _open(chromium, dash, demo.study)
    missing = _panel_text(chromium, "No record for patient ID")
    assert missing == ("No record for patient ID NNDEMO-41-001 in: local cache, FHIR server, "
                       "OpenEMR."), missing
    wait_for(chromium, "canvas", timeout=WAIT)
    time.sleep(1)
    chromium.save_screenshot(str(screenshots(tmp_path) / "dashboards-patient-missing.png"))
    body = chromium.find_element("tag name", "body").text
    assert "Traceback" not in body and "Could not" not in body

    assert other_hosts(network_events(chromium), dash.url) == []
    # The record was read as the clinician, through the dashboards' token.
    reads = [r for r in _audit_rows(dash, started) if r["reason"] == "patient_read"]
    assert reads and {r["username"] for r in reads} == {"clinician"}
    assert any(f"{pid} from openemr" in (r["detail"] or "") for r in reads)


def test_a_model_owner_is_told_records_are_for_clinicians(
        chromium: Any, dash: RunningPlatform, known: Any, tmp_path: Path) -> None:
    network_events(chromium)
    sign_in(chromium, dash.url, "owner", dash.password("owner"),
            next_path=f"{STUDY_PAGE}?study={known.study}")
    text = _panel_text(chromium, "Patient records are for clinicians")
    assert text.startswith("Patient records are for clinicians: your role does not include "
                           "them."), text
    assert KNOWN["DOB"] not in chromium.find_element("tag name", "body").text
    wait_for(chromium, "canvas", timeout=WAIT)  # the images are the owner's to see
    time.sleep(1)
    chromium.save_screenshot(str(screenshots(tmp_path) / "dashboards-patient-owner.png"))
    assert "Traceback" not in chromium.find_element("tag name", "body").text
    assert other_hosts(network_events(chromium), dash.url) == []


def test_a_source_that_is_down_is_named(chromium: Any, dash: RunningPlatform,
                                        demo: Any, tmp_path: Path) -> None:  # noqa: F811
    """OpenEMR stops: a patient the other sources do not have may be there, and the panel
    says which source is not answering rather than "no record"."""
    supervisor = dash.local.supervisor
    os.killpg(supervisor.pids()["openemr-demo"], signal.SIGTERM)
    sign_in(chromium, dash.url, "clinician", dash.password("clinician"),
            next_path=f"{STUDY_PAGE}?study={demo.study}")
    text = _panel_text(chromium, "Not answering now")
    assert text == ("No record for patient ID NNDEMO-41-001 in: local cache, FHIR server. Not "
                    "answering now: OpenEMR (not reachable); the record may be there, so try "
                    "again in a moment."), text
    wait_for(chromium, "canvas", timeout=WAIT)
    time.sleep(1)
    chromium.save_screenshot(str(screenshots(tmp_path) / "dashboards-patient-source-down.png"))
    assert "Traceback" not in chromium.find_element("tag name", "body").text
