"""The study viewer's "Analyse with AI" panel: request an analysis as the signed-in user,
follow its progress live, then draw its segmentation and show the tumour volumes.

The job's Server-Sent Events are read in a thread of the page's kernel, which sets the
widgets as events come (ipywidgets send a change from any thread; Voilà forwards it).
A job already queued or running for the study (a reload, a colleague's) is followed, not
started twice: the API answers with that job. Data and texts: :mod:`.analysis`.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from .analysis import (
    FINAL_STATES,
    background_session,
    elapsed_seconds,
    elapsed_text,
    failure_reason,
    job_events,
    job_state_text,
    may_request,
    progress_of,
    read_job,
    refusal_text,
    request_analysis,
    segmentation_note,
    study_jobs,
    unavailable_text,
    volumes_html,
)
from .pages import message_html, problem_html, status_of
from .study import SegRef, load_seg

log = logging.getLogger(__name__)

#: The panel's look (the page's STYLE holds the rest).
PANEL_STYLE = """<style>
.nn-analysis { border-top: 1px solid #d5dde6; margin-top: 10px; padding-top: 8px; }
.nn-stage { font-size: 14px; color: #12355b; white-space: nowrap; }
.nn-elapsed { font-size: 13px; color: #555; white-space: nowrap; }
table.nn-volumes { border-collapse: collapse; font-size: 14px; margin: 6px 0; min-width: 300px; }
table.nn-volumes th { text-align: left; background: #e9eef3; padding: 4px 10px;
  border-bottom: 2px solid #c5d0db; }
table.nn-volumes td { padding: 3px 10px; border-bottom: 1px solid #e3e8ee; }
table.nn-volumes .nn-num { text-align: right; }
.nn-warning { font-size: 12px; font-weight: 600; color: #8a1c14; margin: 4px 0; line-height: 1.3; }
</style>"""
RUN = "Analyse with AI"
RERUN = "Run the analysis again"
#: Tries to read the event stream again after it broke before the job ended.
STREAM_RETRIES = 5


class AnalysisPanel:
    """The panel; :attr:`widget` goes into the viewer's side column."""

    def __init__(self, client: Any, user: dict[str, Any], study_uid: str, view: Any,
                 ready: Any = None) -> None:
        import ipywidgets as w

        self.client, self.study_uid, self.view = client, study_uid, view
        self.ready = ready  # .ready.PageReady: the follower's changes wait for the page
        self.role = str(user.get("role", ""))
        self.background = background_session(client)
        self.button = w.Button(description=RUN, button_style="primary",
                               layout=w.Layout(width="220px"))
        self.button.on_click(lambda _: self.request())
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0, bar_style="info",
                                        layout=w.Layout(width="170px", display="none"))
        self.progress.add_class("nn-progress")
        self.stage = w.HTML()
        self.elapsed = w.HTML()
        self.message = w.HTML()
        self.volumes = w.HTML()
        self.rerun = False
        self.job: dict[str, Any] | None = None
        self._follower: threading.Thread | None = None
        self.widget = w.VBox([w.HTML(PANEL_STYLE + "<b>AI analysis</b>"),
                              w.HBox([self.button, self.elapsed],
                                     layout=w.Layout(align_items="center", gap="10px")),
                              w.HBox([self.progress, self.stage],
                                     layout=w.Layout(align_items="center", gap="10px")),
                              self.message, self.volumes])
        self.widget.add_class("nn-analysis")
        if not may_request(self.role):
            self.button.disabled = True
            self.message.value = message_html(refusal_text(self.role), "info")

    # -- opening ----------------------------------------------------------------------------
    def open(self) -> None:
        """Show the study's newest analysis: follow it while it runs; its volumes once done."""
        try:
            jobs = study_jobs(self.client, self.study_uid)
        except Exception as exc:  # noqa: BLE001 - every failure is a message on the page
            self.message.value = problem_html(exc, "read this study's analyses")
            return
        done = next((j for j in jobs if j.get("state") == "done"), None)
        if done is not None:
            self.show_volumes(done)
        if jobs and jobs[0].get("state") not in FINAL_STATES:
            self.follow(jobs[0])
        elif jobs and jobs[0].get("state") == "failed":
            self.show_failed(jobs[0])

    def set_button(self, running: bool) -> None:
        allowed = may_request(self.role)
        self.button.description = RERUN if self.rerun else RUN
        self.button.disabled = running or not allowed

    # -- requesting -------------------------------------------------------------------------
    def request(self) -> None:
        """The button: ask for an analysis (again, once one is done) and follow it."""
        self.button.disabled = True
        self.message.value = ""
        try:
            # Someone's job running on this study since the page opened is followed: a
            # rerun would not be deduplicated by the API.
            newest = study_jobs(self.client, self.study_uid, limit=1)
            if newest and newest[0].get("state") not in FINAL_STATES:
                self.follow({**newest[0], "existing": True})
                return
            job = request_analysis(self.client, self.study_uid, rerun=self.rerun)
        except Exception as exc:  # noqa: BLE001
            said = unavailable_text(status_of(exc))
            self.message.value = message_html(said) if said else problem_html(
                exc, "request an analysis")
            self.set_button(running=False)
            return
        if job.get("state") == "done":  # analysed by this model already (someone else)
            self.finish(job)
        else:
            self.follow(job)

    # -- following --------------------------------------------------------------------------
    def follow(self, job: dict[str, Any]) -> None:
        """Show the job's progress from its event stream, in a thread of the kernel."""
        self.job = job
        self.set_button(running=True)
        self.progress.layout.display = ""
        self.progress.bar_style = "info"
        self.show_progress(job.get("stages") or [])
        self.message.value = (message_html("This study is being analysed already: its "
                                           "progress is shown.", "info")
                              if job.get("existing") else "")
        self._follower = threading.Thread(target=self._follow, args=(job,), daemon=True,
                                          name="nn-analysis")
        self._follower.start()

    def show_progress(self, stages: list[dict[str, Any]]) -> None:
        progress = progress_of(stages)
        self.progress.value = progress.fraction
        self.stage.value = f'<span class="nn-stage">{html.escape(progress.label)}</span>'

    def _tick(self, stop: threading.Event) -> None:
        while self.job is not None and not stop.is_set():
            self.elapsed.value = ('<span class="nn-elapsed">Elapsed '
                                  f'{elapsed_text(elapsed_seconds(self.job, _now()))}</span>')
            stop.wait(1.0)

    def _follow(self, job: dict[str, Any]) -> None:
        if self.ready is not None:  # a change before the browser has the widgets is missed
            self.ready.wait()
        stop = threading.Event()
        clock = threading.Thread(target=self._tick, args=(stop,), daemon=True,
                                 name="nn-analysis-clock")
        clock.start()
        try:
            ended = self._stream(job)
        except Exception as exc:  # noqa: BLE001 - the page says it, the thread ends
            log.warning("following analysis %s failed: %s", job.get("job_id"), exc)
            self.progress.bar_style = "danger"
            self.message.value = problem_html(exc, "follow the analysis (reload the page "
                                              "to see its result)")
            self.set_button(running=False)
            return
        finally:
            stop.set()
            clock.join()  # its last "Elapsed" comes before the end's "Took"
        try:
            self.finish(ended)
        except Exception as exc:  # noqa: BLE001
            log.warning("showing analysis %s failed: %s", job.get("job_id"), exc)
            self.message.value = problem_html(exc, "show the analysis' result")

    def _stream(self, job: dict[str, Any]) -> dict[str, Any]:
        """Read the job's events until its end; the finished job."""
        job_id = str(job["job_id"])
        stages: list[dict[str, Any]] = []
        for attempt in range(STREAM_RETRIES + 1):
            try:
                for kind, _, data in job_events(self.background, self.client.base_url, job_id,
                                                after=len(stages) - 1):
                    if kind == "stage":
                        stages.append(data)
                        self.show_progress(stages)
                    elif kind in FINAL_STATES:
                        return data
            except (OSError, ValueError) as exc:  # a broken stream: read it again
                log.info("event stream of %s broke (%s)", job_id, exc)
            latest = read_job(self.background, self.client.base_url, job_id)
            if latest.get("state") in FINAL_STATES:
                return latest
            time.sleep(min(2.0 ** attempt, 10.0))
        return read_job(self.background, self.client.base_url, job_id)

    # -- the end ----------------------------------------------------------------------------
    def finish(self, job: dict[str, Any]) -> None:
        """A job ended: its volumes and segmentation, or why it failed."""
        self.job = dict(job)
        if job.get("state") != "done":
            if job.get("state") == "failed":
                self.show_failed(job)
            else:  # still running after every retry
                self.message.value = message_html("The analysis is still running; reload the "
                                                  "page later to see its result.", "info")
                self.set_button(running=False)
            return
        stages = job.get("stages") or [{"stage": "finished", "status": "done"}]
        self.show_progress(stages)
        self.progress.bar_style = "success"
        self.elapsed.value = ('<span class="nn-elapsed">Took '
                              f'{elapsed_text(elapsed_seconds(job, _now()))}</span>')
        self.show_volumes(job)
        self.stage.value = '<span class="nn-stage">Drawing the new segmentation…</span>'
        seg = job.get("seg") or {}
        try:
            masks = load_seg(self.client, self.study_uid,
                             SegRef(seg["series_uid"], seg["sop_uid"], ""),
                             self.view.reference()[0])
            self.view.show_segmentation(masks, segmentation_note(job))
            self.show_progress(stages)
        except KeyError:
            self.message.value = message_html("The analysis wrote no segmentation to show.")
        except Exception as exc:  # noqa: BLE001
            self.message.value = problem_html(exc, "load the new segmentation")

    def show_volumes(self, job: dict[str, Any]) -> None:
        self.volumes.value = volumes_html(job)
        self.rerun = True
        self.set_button(running=False)

    def show_failed(self, job: dict[str, Any]) -> None:
        self.progress.bar_style = "danger"
        self.stage.value = ""
        self.message.value = message_html(job_state_text(job))
        log.info("analysis %s failed: %s", job.get("job_id"), failure_reason(job))
        self.set_button(running=False)


def _now() -> datetime:
    return datetime.now(UTC)


def show_analysis(client: Any, user: dict[str, Any], study_uid: str, view: Any,
                  ready: Any = None) -> AnalysisPanel:
    """Put the analysis panel into the study viewer's side column (the one call from
    :func:`.study_view.show_study`)."""
    panel = AnalysisPanel(client, user, study_uid, view, ready)
    view.side.children = (*view.side.children, panel.widget)
    panel.open()
    return panel
