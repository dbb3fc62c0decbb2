"""The worklist's data: one page of studies (QIDO-RS through the guard) with their AI status.

Everything is read with the dashboard kernel's client, so as the signed-in user: the
guard audits each search to them, and they see only what their role may see. A page
is asked for one study more than it shows, which tells whether there is a next page
(QIDO-RS gives no total; a worklist of thousands of studies is paged, never counted).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import quote, urlencode

from ..dicomweb.results import StudySummary

#: What a study's newest inference job says, as the worklist shows it.
AI_STATUSES = ("none", "running", "done", "failed")
AI_LABELS = {"none": "—", "running": "Running", "done": "Done", "failed": "Failed"}
_JOB_STATES = {"queued": "running", "running": "running", "done": "done", "failed": "failed"}

PAGE_SIZES = (25, 50, 100)
STUDY_PAGE = "/dashboards/voila/render/study.ipynb"


@dataclass(frozen=True)
class WorklistQuery:
    """The worklist's filters: QIDO-RS matching (``patient_name`` and ``description`` match
    as substrings, ``patient_id`` exactly; dates inclusive) and the page."""

    patient_name: str = ""
    patient_id: str = ""
    description: str = ""
    date_from: date | None = None
    date_to: date | None = None
    ai_status: str = ""  # one of AI_STATUSES, or "" for any (filters the page shown)
    page: int = 0
    page_size: int = PAGE_SIZES[0]

    def study_date(self) -> str | None:
        """The QIDO-RS StudyDate range, or ``None`` for any date."""
        if self.date_from is None and self.date_to is None:
            return None
        first = self.date_from.strftime("%Y%m%d") if self.date_from else ""
        last = self.date_to.strftime("%Y%m%d") if self.date_to else ""
        return first if first == last else f"{first}-{last}"


@dataclass(frozen=True)
class WorklistRow:
    study_uid: str
    patient_name: str
    patient_id: str
    study_date: str
    description: str
    modalities: str
    ai_status: str


@dataclass(frozen=True)
class WorklistPage:
    rows: list[WorklistRow]
    page: int
    has_next: bool


def person_name(value: str) -> str:
    """A DICOM person name as people write it: ``DOE^JANE`` → ``DOE, JANE``."""
    parts = [p.strip() for p in value.split("=")[0].split("^")]
    family, given = (parts + ["", ""])[:2]
    rest = " ".join(p for p in parts[2:] if p)
    name = ", ".join(p for p in (family, " ".join(p for p in (given, rest) if p)) if p)
    return name or "(no name)"


def display_date(value: str) -> str:
    """``20240131`` → ``2024-01-31``; anything else as it is."""
    if re.fullmatch(r"\d{8}", value):
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value


def ai_status(jobs: list[dict[str, Any]]) -> str:
    """The study's AI status from its inference jobs, newest first (``GET /api/inference``):
    the newest job's state (queued counts as running), ``none`` without a job."""
    if not jobs:
        return "none"
    return _JOB_STATES.get(str(jobs[0].get("state", "")), "none")


def study_ai_status(client: Any, study_uid: str) -> str:
    """Ask the inference jobs API for one study's newest job (as the client's user)."""
    response = client.session.get(f"{client.base_url}/api/inference",
                                  params={"study": study_uid, "limit": 1},
                                  timeout=client.timeout)
    if response.status_code != 200:
        from ..dicomweb.auth import http_error

        raise http_error(response, "the inference jobs could not be read")
    return ai_status(response.json())


def row_of(study: StudySummary, status: str) -> WorklistRow:
    return WorklistRow(
        study_uid=study.study_uid, patient_name=person_name(study.patient_name),
        patient_id=study.patient_id, study_date=display_date(study.study_date),
        description=study.description, modalities=", ".join(study.modalities),
        ai_status=status)


def load_page(client: Any, query: WorklistQuery) -> WorklistPage:
    """One page of the worklist: a QIDO-RS search (limit and offset) through the guard,
    then each study's AI status; the AI status filter applies to that page."""
    found = client.find_studies(
        patient_id=query.patient_id.strip() or None,
        patient_name=query.patient_name.strip() or None,
        description=query.description.strip() or None,
        study_date=query.study_date(),
        limit=query.page_size + 1, offset=query.page * query.page_size)
    has_next = len(found) > query.page_size
    rows = [row_of(study, study_ai_status(client, study.study_uid))
            for study in found[:query.page_size]]
    if query.ai_status:
        rows = [row for row in rows if row.ai_status == query.ai_status]
    return WorklistPage(rows=rows, page=query.page, has_next=has_next)


def study_link(study_uid: str) -> str:
    """The study viewer's page for one study."""
    from .server import public_path

    return public_path(f"{STUDY_PAGE}?{urlencode({'study': study_uid})}")


def ohif_link(study_uid: str) -> str:
    """The API's redirect to OHIF with a token for this study alone (what
    ``neuronova_lib.stack.ohif.study_link`` gives where the settings are at hand; a page's
    kernel has only the platform's URL and the public prefix)."""
    from .server import public_path

    return public_path(f"/api/studies/{quote(study_uid, safe='')}/ohif")


def table_html(rows: list[WorklistRow]) -> str:
    """The worklist as an HTML table; every value from the PACS is escaped. A row's
    patient name opens the study viewer; "OHIF" opens the same study in OHIF."""
    if not rows:
        return '<p class="nn-empty">No studies match.</p>'
    head = ("<tr><th>Patient</th><th>Patient ID</th><th>Date</th><th>Description</th>"
            "<th>Modalities</th><th>AI</th><th></th></tr>")
    body = []
    for row in rows:
        e = html.escape
        body.append(
            f'<tr class="nn-study" data-study="{e(row.study_uid)}">'
            f'<td><a class="nn-open" href="{e(study_link(row.study_uid))}">'
            f"{e(row.patient_name)}</a></td>"
            f"<td>{e(row.patient_id)}</td><td>{e(row.study_date)}</td>"
            f"<td>{e(row.description)}</td><td>{e(row.modalities)}</td>"
            f'<td><span class="nn-ai nn-ai-{e(row.ai_status)}">{e(AI_LABELS[row.ai_status])}'
            "</span></td>"
            f'<td><a class="nn-ohif" href="{e(ohif_link(row.study_uid))}" target="_blank" '
            'rel="noopener">OHIF</a></td></tr>')
    return f'<table class="nn-worklist"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'
