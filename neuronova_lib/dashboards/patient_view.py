"""The study viewer's patient panel, drawn: a patient banner above the images.

:func:`patient_panel` returns the widget at once and fills it from a background thread
(one study search and one patient-record request), so the record never delays the first
image. Every outcome is a sentence: the record, "no record for patient ID X in: ...",
which source is not answering, patient records being for clinicians; never a traceback.
Data and words: :mod:`.patient`.
"""

from __future__ import annotations

import html
import threading
from typing import Any

import requests

from .pages import SessionEnded, message_html, problem_html, session_ended_html, status_of
from .patient import (
    ACCESS_TEXT,
    NO_PATIENT_ID_TEXT,
    PatientRecord,
    missing_text,
    record_of,
    study_patient_id,
)

#: The banner's look (a band under the page header, as clinical systems show the patient).
PANEL_STYLE = """<style>
.nn-patient { background: #f4f7fa; border: 1px solid #c9d5e1; border-left: 5px solid #12355b;
  border-radius: 4px; padding: 10px 16px; margin: 0 0 10px 0; font-size: 14px; color: #1d2733;
  box-sizing: border-box; }
.nn-patient-top { display: flex; flex-wrap: wrap; align-items: baseline; gap: 6px 26px; }
.nn-patient-name { font-size: 19px; font-weight: 700; color: #12355b; }
.nn-patient-field .nn-label, .nn-patient-ids .nn-label { color: #5a6876; margin-right: 2px; }
.nn-patient-ids { display: flex; flex-wrap: wrap; gap: 4px 26px; margin-top: 6px; }
.nn-patient-ids .nn-value { font-family: inherit; font-weight: 600; }
.nn-on-images { color: #1d5e2c; font-size: 12px; margin-left: 4px; }
.nn-patient-source { margin-top: 6px; color: #4a5866; font-size: 13px; }
.nn-stale { background: #fff4d6; color: #7a5a00; border: 1px solid #f0d68a;
  border-radius: 10px; padding: 1px 8px; font-size: 12px; font-weight: 600; margin-left: 6px; }
.nn-patient-warning { margin-top: 6px; color: #7a5a00; font-size: 13px; }
.nn-deceased { color: #611a15; font-weight: 600; }
</style>"""
LOADING_TEXT = "Loading the patient record…"


def _field(label: str, value: str) -> str:
    return (f'<span class="nn-patient-field"><span class="nn-label">{html.escape(label)}</span>'
            f" {html.escape(value)}</span>")


def record_html(record: PatientRecord) -> str:
    """The banner for a record: name, birth date and age, sex; identifiers; source and age
    of the answer (stale flagged); the sources that could not answer."""
    top = [f'<span class="nn-patient-name">{html.escape(record.name)}</span>']
    born = record.birth_date or "not recorded"
    if record.age:
        born += f" ({record.age})"
    top += [_field("Born", born), _field("Sex", record.sex)]
    if record.deceased:
        top.append(f'<span class="nn-deceased">{html.escape(record.deceased)}</span>')
    ids = []
    for identifier in record.identifiers:
        mark = (' <span class="nn-on-images">✓ on the images</span>'
                if identifier.on_images else "")
        ids.append(f'<span class="nn-patient-id"><span class="nn-label">'
                   f"{html.escape(identifier.label)}</span> "
                   f'<span class="nn-value">{html.escape(identifier.value)}</span>{mark}</span>')
    stale = ('<span class="nn-stale" title="Older than the platform keeps a record fresh; '
             'it could not be refreshed">stale</span>' if record.stale else "")
    source = (f'<div class="nn-patient-source">Patient record from '
              f"<b>{html.escape(record.source)}</b>, {html.escape(record.updated)}{stale}</div>")
    warning = ""
    if record.unavailable:
        warning = (f'<div class="nn-patient-warning">Not answering now: '
                   f"{html.escape(', '.join(record.unavailable))}.</div>")
    return (f'{PANEL_STYLE}<div class="nn-patient" data-patient-id='
            f'"{html.escape(record.patient_id)}"><div class="nn-patient-top">{"".join(top)}'
            f'</div><div class="nn-patient-ids">{"".join(ids)}</div>{source}{warning}</div>')


def panel_message_html(text: str, kind: str = "info") -> str:
    """A message in the panel's place (not found, no access, ...)."""
    return f'<div class="nn-patient-panel">{message_html(text, kind)}</div>'


def panel_html(client: Any, study_uid: str) -> str:
    """The panel's content for one study, whatever happens (read as the page's user)."""
    from ..patients.errors import PatientNotFound

    try:
        patient_id = study_patient_id(client, study_uid)
        if not patient_id:
            return panel_message_html(NO_PATIENT_ID_TEXT)
        return record_html(record_of(client.patient(patient_id), patient_id))
    except PatientNotFound as missing:
        return panel_message_html(missing_text(missing.patient_id, missing.asked,
                                               missing.unavailable))
    except SessionEnded:
        return session_ended_html()
    except requests.HTTPError as exc:
        if status_of(exc) == 403 and "/api/patients/" in str(getattr(exc.response, "url", "")):
            return panel_message_html(ACCESS_TEXT)
        return problem_html(exc, "load the patient record")
    except Exception as exc:  # noqa: BLE001 - every failure is a message on the page
        return problem_html(exc, "load the patient record")


def patient_panel(client: Any, study_uid: str, ready: Any = None) -> Any:
    """The patient panel's widget, shown at once with "Loading…" and filled by a daemon
    thread, so that it never holds up the images; the thread reads at once and shows what
    it read once the page is drawn (``ready``: :class:`.ready.PageReady`)."""
    import ipywidgets as w

    panel = w.HTML(panel_message_html(LOADING_TEXT))

    def fill() -> None:
        text = panel_html(client, study_uid)
        if ready is not None:
            ready.wait()
        panel.value = text

    threading.Thread(target=fill, name="patient-panel", daemon=True).start()
    return panel
