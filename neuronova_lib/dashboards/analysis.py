"""The study viewer's AI analysis and the pages' notifications, without widgets: the
inference jobs API as the page's user, the job's event stream, and what a clinician reads
(progress, the volumes table, a job's state, a finished job's notice).

Reads a page makes on its own in the background (following a job's progress, watching the
user's jobs for a notification) go through :func:`background_session`: it sends the page's
token as it is and never renews it, because a renewal counts as the user's use of their
browser session, and an open page alone must not keep an idle session alive. When that
token has ended, the background reads stop until the user acts on the page again.

The widgets: :mod:`.analysis_view` (study viewer) and :mod:`.notifications`.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
from requests.auth import AuthBase

from ..ai.inference import STAGES
from ..ai.results import NOT_FOR_CLINICAL_USE
from ..dicomweb.auth import TokenExpiredError, http_error
from ..dicomweb.session import DICOMWEB_PATH
from ..security.roles import INFERENCE_REQUESTERS
from .study import region_label
from .worklist import display_date, person_name, study_link

#: What a clinician reads for each stage of a job (``neuronova_lib.ai.inference.STAGES``).
STAGE_LABELS = {
    "queued": "Waiting to start",
    "load": "Reading the images",
    "model": "Loading the AI model",
    "preprocess": "Preparing the images",
    "predict": "Segmenting the tumour",
    "postprocess": "Measuring the regions",
    "write": "Writing the results",
    "store": "Saving the results to the archive",
    "finished": "Finished",
    "failed": "Failed",
}
#: The volumes table's order: the whole tumour first, as the viewer draws the regions.
VOLUME_ORDER = ("WT", "TC", "ET")
FINAL_STATES = frozenset({"done", "failed"})
ROLE_NAMES = {"clinician": "clinician", "scientist": "scientist", "model_owner": "model owner",
              "admin": "administrator"}


# -- who may ask ----------------------------------------------------------------------------

def may_request(role: str) -> bool:
    """Whether ``role`` may request an analysis (the API's own rule)."""
    return role in {str(r) for r in INFERENCE_REQUESTERS}


def refusal_text(role: str) -> str:
    """Why the Analyse button is off for ``role``."""
    return (f"As a {ROLE_NAMES.get(role, role)} you can see analyses but not request one: "
            "a clinician or an administrator can.")


def unavailable_text(status: int | None) -> str | None:
    """What a refused request for an analysis means to a clinician, where the platform's
    answer says more than "could not" (else ``None``: the page's usual message)."""
    if status == 503:
        return ("No approved AI model is available for analyses at the moment: tell your "
                "administrator.")
    if status == 404:
        return "This study is no longer in the archive."
    return None


# -- progress ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Progress:
    """Where a job is: ``fraction`` of its stages done, what it does now, and its state
    (``running``, ``done`` or ``failed``)."""

    fraction: float
    label: str
    state: str


def progress_of(stages: list[dict[str, Any]]) -> Progress:
    """The job's progress from its stage events in order (the event stream's ``stage``
    events, or the job's ``stages``): one step per stage of :data:`STAGES` done."""
    done = {e.get("stage") for e in stages if e.get("status") == "done"}
    fraction = sum(1 for s in STAGES if s in done) / len(STAGES)
    last = stages[-1] if stages else {"stage": "queued", "status": "done"}
    stage = str(last.get("stage", ""))
    if stage == "failed" or last.get("status") == "failed":
        return Progress(fraction, STAGE_LABELS["failed"], "failed")
    if stage == "finished":
        return Progress(1.0, STAGE_LABELS["finished"], "done")
    if last.get("status") == "started":
        return Progress(fraction, f"{STAGE_LABELS.get(stage, stage)}…", "running")
    following = [s for s in STAGES if s not in done]
    label = STAGE_LABELS["queued"] if stage == "queued" else (
        f"{STAGE_LABELS[following[0]]}…" if following else STAGE_LABELS["store"])
    return Progress(fraction, label, "running")


def parse_events(lines: Iterable[str]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Server-Sent Events from a stream's lines: ``(event, id, data)`` per event, the data
    as JSON. Comments (keep-alives) are skipped; several ``data:`` lines are joined."""
    kind, ident, data = "message", "", []
    for line in lines:
        if line == "":
            if data:
                yield kind, ident, json.loads("\n".join(data))
            kind, data = "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            kind = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            ident = value


def elapsed_text(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60:02d} s"


def when(value: Any) -> datetime | None:
    """A job's timestamp (ISO 8601 from the API) as a datetime; ``None`` if absent."""
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def elapsed_seconds(job: dict[str, Any], now: datetime) -> float:
    """Seconds since the job was requested, up to when it finished."""
    start = when(job.get("created_at"))
    end = when(job.get("finished_at")) or now
    return (end - start).total_seconds() if start else 0.0


# -- what a finished job says -------------------------------------------------------------------

def failure_reason(job: dict[str, Any]) -> str:
    """A failed job's reason as a sentence (the API's ``error`` is ``reason: message``)."""
    error = str(job.get("error") or "").strip()
    code, sep, message = error.partition(": ")
    text = message if sep and code and " " not in code else error
    return text or "no reason was recorded"


def model_text(job: dict[str, Any]) -> str:
    model = job.get("model") or {}
    version = model.get("version")
    return f"{model.get('name', 'unknown model')}" + (f" version {version}" if version else "")


def finished_text(job: dict[str, Any]) -> str:
    """``2026-12-07 12:40 UTC``: when a job finished (or was requested)."""
    moment = when(job.get("finished_at")) or when(job.get("created_at"))
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else ""


def job_state_text(job: dict[str, Any]) -> str:
    """One line about a job for the page."""
    state = job.get("state")
    if state == "done":
        return f"Analysed by {model_text(job)} on {finished_text(job)}."
    if state == "failed":
        return f"The analysis failed: {failure_reason(job)}."
    if state == "queued":
        return "The analysis is waiting to start."
    return "The analysis is running."


def volume_rows(job: dict[str, Any]) -> list[tuple[str, str]]:
    """``(region name, "12.3 ml")`` per region of a finished job, whole tumour first."""
    volumes = job.get("volumes_ml") or {}
    return [(region_label(r), f"{float(volumes[r]):.1f} ml") for r in VOLUME_ORDER
            if r in volumes]


def volumes_html(job: dict[str, Any]) -> str:
    """The tumour volumes table of a finished job, with its model and the warning."""
    rows = volume_rows(job)
    if not rows:
        return ""
    e = html.escape
    body = "".join(f"<tr><td>{e(name)}</td><td class=\"nn-num\">{e(ml)}</td></tr>"
                   for name, ml in rows)
    warning = str(job.get("not_for_clinical_use") or NOT_FOR_CLINICAL_USE)
    return (f'<p class="nn-warning">{e(warning)}</p>'
            f'<table class="nn-volumes"><thead><tr><th>Region</th><th class="nn-num">Volume'
            f"</th></tr></thead><tbody>{body}</tbody></table>"
            f'<p class="nn-note">{e(job_state_text(job))}</p>')


def segmentation_note(job: dict[str, Any]) -> str:
    """The viewer's note under the overlay for a job's SEG."""
    return f"AI segmentation by {model_text(job)}, {finished_text(job)}: not for clinical use."


# -- the API, as the page's user ------------------------------------------------------------

class _PageToken(AuthBase):
    """The page client's current token, never renewed (:meth:`BearerAuth.current`)."""

    def __init__(self, auth: Any) -> None:
        self.auth = auth

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self.auth.current()
        if token is None:
            raise TokenExpiredError("the page's token has ended: act on the page to renew it")
        request.headers["Authorization"] = f"Bearer {token}"
        return request


def background_session(client: Any) -> requests.Session:
    """A session for the page's background reads: the page client's token as it is."""
    session = requests.Session()
    session.auth = _PageToken(client.auth)
    return session


def background_client(client: Any) -> Any:
    """A platform client for the page's background reads (DICOMweb included): the page
    client's token as it is, never renewed."""
    from ..dicomweb.client import Client
    from ..dicomweb.session import http_session

    session = http_session(4)
    session.auth = _PageToken(client.auth)
    return Client(client.base_url, session, max_workers=4, timeout=client.timeout)


def study_jobs(client: Any, study_uid: str, limit: int = 10) -> list[dict[str, Any]]:
    """The study's inference jobs, newest first."""
    response = client.session.get(f"{client.base_url}/api/inference", timeout=client.timeout,
                                  params={"study": study_uid, "limit": limit})
    if response.status_code != 200:
        raise http_error(response, "the inference jobs could not be read")
    return list(response.json())


def request_analysis(client: Any, study_uid: str, rerun: bool) -> dict[str, Any]:
    """``POST /api/inference``: the new job (202), or the one that exists (200, ``existing``)."""
    response = client.session.post(f"{client.base_url}/api/inference", timeout=client.timeout,
                                   json={"study": study_uid, "rerun": rerun})
    if response.status_code not in (200, 202):
        raise http_error(response, "the analysis was refused")
    return dict(response.json())


def read_job(session: requests.Session, base_url: str, job_id: str) -> dict[str, Any]:
    response = session.get(f"{base_url}/api/inference/{job_id}", timeout=30)
    if response.status_code != 200:
        raise http_error(response, "the analysis could not be read")
    return dict(response.json())


def my_jobs(session: requests.Session, base_url: str, limit: int = 20) -> list[dict[str, Any]]:
    """The user's own jobs, newest first (``GET /api/inference?mine=true``)."""
    response = session.get(f"{base_url}/api/inference", timeout=30,
                           params={"mine": "true", "limit": limit})
    if response.status_code != 200:
        raise http_error(response, "your analyses could not be read")
    return list(response.json())


def job_events(session: requests.Session, base_url: str, job_id: str, after: int = -1,
               timeout: float = 60.0) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """The job's Server-Sent Events (``GET /api/inference/{id}/events``) from event
    ``after + 1`` on, until the server ends the stream (after ``done`` or ``failed``).
    ``timeout`` bounds the wait for each line (the server sends a keep-alive every 15 s)."""
    headers = {"Accept": "text/event-stream"}
    if after >= 0:
        headers["Last-Event-ID"] = str(after)
    with session.get(f"{base_url}/api/inference/{job_id}/events", stream=True,
                     timeout=(10, timeout), headers=headers) as response:
        if response.status_code != 200:
            raise http_error(response, "the analysis' progress could not be read")
        yield from parse_events(response.iter_lines(decode_unicode=True))


def study_patient(session: requests.Session, base_url: str, study_uid: str) -> str:
    """``DOE, JANE (ID 123)`` for a study (QIDO-RS as the user); ``""`` if not found."""
    response = session.get(f"{base_url}{DICOMWEB_PATH}/studies", timeout=30,
                           params={"StudyInstanceUID": study_uid},
                           headers={"Accept": "application/dicom+json"})
    if response.status_code != 200 or not response.content:
        return ""
    found = response.json()
    if not found:
        return ""
    tags = found[0]

    def value(tag: str) -> str:
        values = tags.get(tag, {}).get("Value") or [""]
        first = values[0]
        return str(first.get("Alphabetic", "") if isinstance(first, dict) else first)

    return f"{person_name(value('00100010'))} (ID {value('00100020')}, " \
           f"{display_date(value('00080020'))})"


# -- notifications ------------------------------------------------------------------------------

class FinishedWatch:
    """Which of the user's jobs finished since the page opened, from successive listings.

    A job is announced once, when it is seen final (done or failed) after it was seen
    queued or running, or when it is first seen already final but was requested after the
    page opened (it ran between two looks). Jobs on ``exclude_study`` (the study the page
    shows, whose panel says it already) are never announced.
    """

    def __init__(self, opened: datetime, exclude_study: str | None = None) -> None:
        self.opened = opened
        self.exclude_study = exclude_study
        self.states: dict[str, str] = {}

    def update(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The jobs of ``jobs`` (a listing, newest first) to announce now."""
        announce = []
        for job in jobs:
            job_id, state = str(job.get("job_id")), str(job.get("state"))
            before = self.states.get(job_id)
            self.states[job_id] = state
            if state not in FINAL_STATES or job.get("study") == self.exclude_study:
                continue
            created = when(job.get("created_at"))
            if (before is not None and before not in FINAL_STATES) or (
                    before is None and created is not None and created >= self.opened):
                announce.append(job)
        return announce


def notice_html(job: dict[str, Any], patient: str) -> str:
    """A finished job's notice: what finished, for whom, and a link to the study."""
    e = html.escape
    done = job.get("state") == "done"
    what = "AI analysis finished" if done else "AI analysis failed"
    detail = (f"{len(volume_rows(job))} regions measured by {model_text(job)}" if done
              else failure_reason(job))
    link = study_link(str(job.get("study", "")))
    return (f'<div class="nn-notice-text"><b>{e(what)}</b>'
            f'{" · " + e(patient) if patient else ""}<br>{e(detail)}. '
            f'<a class="nn-notice-open" href="{e(link)}">Open the study</a></div>')

