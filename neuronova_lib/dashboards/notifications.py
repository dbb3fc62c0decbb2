"""Notices on every dashboard page when an analysis the signed-in user requested finishes
(done or failed), wherever they are: the worklist, or another study.

Each page's kernel looks at the user's own jobs (``GET /api/inference?mine=true``) every
:data:`POLL_S` seconds in a background thread, with the page's token as it is (never
renewed: an open page must not keep an idle session alive, see :mod:`.analysis`), and
shows a dismissable notice with a link to the study for each job that finished since the
page opened (:class:`.analysis.FinishedWatch`). A page that shows jobs' states (the
worklist's AI column) is told when one of the user's jobs changes state (``on_change``).
Pages call :func:`show_notifications` once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .analysis import FinishedWatch, background_session, my_jobs, notice_html, study_patient

log = logging.getLogger(__name__)

#: Seconds between two looks at the user's jobs.
POLL_S = 3.0
NOTICE_STYLE = """<style>
.nn-notices { position: fixed; top: 64px; right: 24px; z-index: 1000; width: 440px; }
.nn-notice { background: #fff; border: 1px solid #b9d3f0; border-left: 6px solid #1d5e2c;
  border-radius: 4px; box-shadow: 0 2px 8px rgba(0, 0, 0, 0.18); padding: 8px 10px;
  margin-bottom: 8px; align-items: flex-start; }
.nn-notice.nn-notice-failed { border-left-color: #8a1c14; }
.nn-notice-text { font-size: 14px; color: #12355b; line-height: 1.4; }
.nn-notice-text a { color: #0b5cad; text-decoration: underline; font-weight: 600; }
</style>"""


class Notifier:
    """The notices box (:attr:`widget`) and the thread that fills it."""

    def __init__(self, client: Any, exclude_study: str | None = None,
                 poll: float = POLL_S,
                 on_change: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
        import ipywidgets as w

        self.base_url = client.base_url
        self.session = background_session(client)
        self.watch = FinishedWatch(datetime.now(UTC), exclude_study)
        self.poll = poll
        self.on_change = on_change
        self.states: dict[str, str] | None = None  # job id → state at the last look
        self.widget = w.VBox([w.HTML(NOTICE_STYLE)])
        self.widget.add_class("nn-notices")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="nn-notifier")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def look(self) -> int:
        """Look at the user's jobs once; how many notices were added."""
        jobs = my_jobs(self.session, self.base_url)
        finished = self.watch.update(jobs)
        for job in finished:
            self.add(job)
        changed = changed_jobs(self.states, jobs)
        self.states = {str(j.get("job_id")): str(j.get("state")) for j in jobs}
        if changed and self.on_change is not None:
            self.on_change(changed)
        return len(finished)

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.look()
            except Exception as exc:  # noqa: BLE001 - an ended token or a restart: look again
                log.debug("notifications: %s", exc)

    def add(self, job: dict[str, Any]) -> None:
        import ipywidgets as w

        try:
            patient = study_patient(self.session, self.base_url, str(job.get("study", "")))
        except Exception:  # noqa: BLE001 - the notice without the patient's name
            patient = ""
        dismiss = w.Button(description="Dismiss", layout=w.Layout(width="90px", flex="0 0 auto"))
        notice = w.HBox([w.HTML(notice_html(job, patient), layout=w.Layout(flex="1 1 auto")),
                         dismiss])
        notice.add_class("nn-notice")
        if job.get("state") != "done":
            notice.add_class("nn-notice-failed")
        dismiss.on_click(lambda _: self.dismiss(notice))
        self.widget.children = (*self.widget.children, notice)

    def dismiss(self, notice: Any) -> None:
        self.widget.children = tuple(c for c in self.widget.children if c is not notice)


def changed_jobs(before: dict[str, str] | None, jobs: list[dict[str, Any]]
                 ) -> list[dict[str, Any]]:
    """The jobs that are new or in another state since ``before`` (job id → state; ``None``
    at the first look, when nothing counts as changed)."""
    if before is None:
        return []
    return [j for j in jobs if before.get(str(j.get("job_id"))) != str(j.get("state"))]


def show_notifications(client: Any, exclude_study: str | None = None,
                       on_change: Callable[[list[dict[str, Any]]], None] | None = None
                       ) -> Notifier:
    """Display the page's notices and start watching (a page's one call for them).
    ``exclude_study``: the study the page shows, whose own panel reports its analyses;
    ``on_change``: called (on the watcher's thread) with the user's jobs that started or
    changed state."""
    from IPython.display import display

    notifier = Notifier(client, exclude_study, on_change=on_change)
    display(notifier.widget)
    notifier.start()
    return notifier
