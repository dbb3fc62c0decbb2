"""The study viewer's analysis and the pages' notifications without a stack: progress from
stage events, the volumes table, a job's texts, which finished jobs are announced, the
page's background reads that never renew its token, and the API's event stream and
``mine`` filter (TestClient against the real app).

In a browser on the real stack: test_dashboards_analysis_e2e.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from api_settings import service_settings
from fastapi.testclient import TestClient
from test_signin import BASE, PASSWORD

from neuronova_lib.ai.inference import STAGES
from neuronova_lib.config import Settings
from neuronova_lib.dashboards import analysis
from neuronova_lib.db.engine import session_factory
from neuronova_lib.db.models import InferenceJob
from neuronova_lib.db.users import ensure_demo_users
from neuronova_lib.dicomweb.auth import BearerAuth, TokenExpiredError
from neuronova_lib.security.tokens import token_service
from services.api.app import create_app

STUDY = "1.2.826.0.1.3680043.8.498.77"
T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _stages(*done: str, started: str | None = None) -> list[dict]:
    events = [{"stage": "queued", "status": "done"}]
    for stage in done:
        events += [{"stage": stage, "status": "started"}, {"stage": stage, "status": "done"}]
    if started:
        events.append({"stage": started, "status": "started"})
    return events


def _job(job_id: str = "j1", state: str = "done", study: str = STUDY, **more: object) -> dict:
    job = {"job_id": job_id, "state": state, "study": study, "created_by": "clinician",
           "created_at": T0.isoformat(), "finished_at": (T0 + timedelta(seconds=75)).isoformat(),
           "model": {"name": "brain-tumor-seg", "version": "3"},
           "volumes_ml": {"TC": 12.345, "WT": 40.0, "ET": 3.25},
           "not_for_clinical_use": "NeuroNova demo model - NOT FOR CLINICAL USE"}
    job.update(more)
    return job


# -- progress ---------------------------------------------------------------------------


def test_progress_counts_the_stages_done_and_names_the_current_one() -> None:
    assert analysis.progress_of([]) == analysis.Progress(0.0, "Waiting to start", "running")
    assert analysis.progress_of(_stages()).label == "Waiting to start"
    running = analysis.progress_of(_stages("load", "model", started="predict"))
    assert running.state == "running" and running.label == "Segmenting the tumour…"
    assert running.fraction == pytest.approx(2 / len(STAGES))
    between = analysis.progress_of(_stages("load"))
    assert between.label == "Loading the AI model…"
    done = analysis.progress_of(_stages(*STAGES) + [{"stage": "finished", "status": "done"}])
    assert done == analysis.Progress(1.0, "Finished", "done")
    failed = analysis.progress_of(_stages("load") + [
        {"stage": "failed", "status": "failed", "reason": "missing_channel"}])
    assert failed.state == "failed" and failed.fraction == pytest.approx(1 / len(STAGES))
    assert set(analysis.STAGE_LABELS) >= set(STAGES)  # every stage has a clinician's word


def test_server_sent_events_are_parsed_as_the_stream_sends_them() -> None:
    lines = ["id: 0", "event: stage", 'data: {"stage": "load", "status": "started"}', "",
             ": keep-alive", "", "event: done", 'data: {"state":', 'data:  "done"}', ""]
    assert list(analysis.parse_events(lines)) == [
        ("stage", "0", {"stage": "load", "status": "started"}),
        ("done", "0", {"state": "done"})]  # the last id stays, as in EventSource


def test_elapsed_time_reads_as_minutes_and_seconds() -> None:
    assert analysis.elapsed_text(42.7) == "42 s"
    assert analysis.elapsed_text(185) == "3 min 05 s" and analysis.elapsed_text(-1) == "0 s"
    assert analysis.elapsed_seconds(_job(), T0) == 75.0
    running = _job(state="running", finished_at=None)
    assert analysis.elapsed_seconds(running, T0 + timedelta(seconds=9)) == 9.0


# -- what a job says --------------------------------------------------------------------


def test_the_volumes_table_names_regions_model_and_the_warning() -> None:
    assert analysis.volume_rows(_job()) == [
        ("WT whole tumour", "40.0 ml"), ("TC tumour core", "12.3 ml"),
        ("ET enhancing tumour", "3.2 ml")]
    table = analysis.volumes_html(_job())
    assert "Analysed by brain-tumor-seg version 3 on 2026-12-07 12:01 UTC." in table
    assert "NOT FOR CLINICAL USE" in table and table.index("WT whole") < table.index("ET enh")
    assert analysis.volumes_html(_job(volumes_ml=None)) == ""
    assert "<script>" not in analysis.volumes_html(
        _job(model={"name": "<script>", "version": None}))


def test_a_failed_job_says_its_reason() -> None:
    failed = _job(state="failed", error="missing_channel: the study has no FLAIR series")
    assert analysis.job_state_text(failed) == (
        "The analysis failed: the study has no FLAIR series.")
    assert analysis.failure_reason(_job(error="worker died")) == "worker died"
    assert analysis.failure_reason(_job(error=None)) == "no reason was recorded"
    assert analysis.job_state_text(_job(state="queued")) == "The analysis is waiting to start."


def test_who_may_request_an_analysis_is_the_apis_rule() -> None:
    assert analysis.may_request("clinician") and analysis.may_request("admin")
    assert not analysis.may_request("model_owner")
    assert "model owner" in analysis.refusal_text("model_owner")
    assert "No approved AI model" in analysis.unavailable_text(503)
    assert analysis.unavailable_text(404) and analysis.unavailable_text(500) is None


# -- notifications ----------------------------------------------------------------------


def test_a_job_is_announced_once_when_it_ends_after_the_page_opened() -> None:
    watch = analysis.FinishedWatch(T0, exclude_study="1.2.3.shown")
    old = _job("old", created_at=(T0 - timedelta(hours=1)).isoformat())
    running = _job("run", state="running", created_at=(T0 - timedelta(minutes=1)).isoformat())
    here = _job("here", state="running", study="1.2.3.shown")
    assert watch.update([running, here, old]) == []  # finished before: never announced
    ended = dict(running, state="done")
    assert watch.update([dict(here, state="done"), ended, old]) == [ended]
    assert watch.update([ended, old]) == []  # once
    # A job that started and ended between two looks, after the page opened.
    quick = _job("quick", state="failed", created_at=(T0 + timedelta(seconds=5)).isoformat())
    assert watch.update([quick, ended]) == [quick]


def test_a_page_hears_of_jobs_that_start_or_change_state_after_its_first_look() -> None:
    """What makes the worklist redraw its AI column (notifications.changed_jobs)."""
    from neuronova_lib.dashboards.notifications import changed_jobs

    done = _job("a")
    running = _job("b", state="running")
    assert changed_jobs(None, [done, running]) == []  # the first look sets the baseline
    seen = {"a": "done", "b": "running"}
    assert changed_jobs(seen, [done, running]) == []
    started = _job("c", state="queued")
    ended = dict(running, state="failed")
    assert changed_jobs(seen, [started, ended, done]) == [started, ended]


def test_a_notice_links_to_the_study_and_escapes_the_patient() -> None:
    notice = analysis.notice_html(_job(), "<b>DOE, JANE</b> (ID 7)")
    assert "AI analysis finished" in notice and "3 regions measured" in notice
    assert f'href="/dashboards/voila/render/study.ipynb?study={STUDY}"' in notice
    assert "&lt;b&gt;DOE" in notice
    failed = analysis.notice_html(_job(state="failed", error="timeout: took too long"), "")
    assert "AI analysis failed" in failed and "took too long" in failed


def test_background_reads_never_renew_the_pages_token(settings: Settings) -> None:
    """A renewal counts as the user's use of the session: a watcher must not make one."""
    token, _ = token_service(settings).mint("clinician", "clinician", "access", 60)
    fetched = []
    now = [time.time()]
    auth = BearerAuth(BASE, token, source=lambda: fetched.append(1) or {"access_token": token},
                      margin=float("inf"), clock=lambda: now[0])

    class Client:
        base_url = BASE

    Client.auth = auth
    session = analysis.background_session(Client())
    request = requests.Request("GET", f"{BASE}/api/inference").prepare()
    assert session.auth(request).headers["Authorization"] == f"Bearer {token}"
    now[0] += 120  # past the token's end
    assert auth.current() is None
    with pytest.raises(TokenExpiredError):
        session.auth(requests.Request("GET", f"{BASE}/api/inference").prepare())
    assert fetched == []  # the page's own reads renew it (the user acting)
    assert auth.token() == token and fetched == [1]


# -- the API: the user's own jobs, and the event stream the panel reads --------------------


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    with service_settings(tmp_path / "home", monkeypatch, PASSWORD, PORT="8080") as current:
        ensure_demo_users(current)
        yield current


def _store_job(settings: Settings, job_id: str, user: str, state: str, stages: list[dict],
               minutes: int) -> None:
    when = T0 + timedelta(minutes=minutes)
    with session_factory(settings.sqlalchemy_url)() as db:
        db.add(InferenceJob(
            id=job_id, state=state, created_by=user, role="clinician", study_uid=STUDY,
            model_name="brain-tumor-seg", model_version="3", model_uri="models:/x/3",
            created_at=when, updated_at=when, finished_at=when, stages=json.dumps(stages),
            volumes=json.dumps({"volumes_ml": {"TC": 1.0, "WT": 2.0, "ET": 0.5}})))
        db.commit()


def test_the_api_lists_the_callers_own_jobs_and_streams_a_jobs_events(
        settings: Settings) -> None:
    finished = _stages(*STAGES) + [{"stage": "finished", "status": "done"}]
    _store_job(settings, "a" * 32, "clinician", "done", finished, 0)
    _store_job(settings, "b" * 32, "admin", "done", finished, 1)
    with TestClient(create_app(settings), base_url=BASE) as api:
        token = api.post("/api/auth/token", data={"username": "clinician",
                                                  "password": PASSWORD}).json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        everyone = api.get("/api/inference", headers=bearer).json()
        mine = api.get("/api/inference", params={"mine": "true"}, headers=bearer).json()
        assert [j["job_id"] for j in everyone] == ["b" * 32, "a" * 32]
        assert [j["job_id"] for j in mine] == ["a" * 32]
        stream = api.get(f"/api/inference/{'a' * 32}/events", headers=bearer)
        assert stream.status_code == 200
    events = list(analysis.parse_events(stream.text.splitlines()))
    kinds = [kind for kind, _, _ in events]
    assert kinds == ["stage"] * len(finished) + ["done"]
    assert [data for kind, _, data in events if kind == "stage"] == finished
    job = events[-1][2]
    assert analysis.progress_of(job["stages"]).state == "done"
    assert analysis.volume_rows(job)[0] == ("WT whole tumour", "2.0 ml")
