"""The worklist page's widgets (``dashboards/worklist.ipynb``): filters, the table, paging.

The data comes from :mod:`.worklist`; this module only lays it out and reacts to the
user. A study's patient name links to the study viewer, "OHIF" to the same study in OHIF.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .analysis import background_client
from .notifications import show_notifications
from .pages import (
    SessionEnded,
    dashboard_client,
    header_html,
    message_html,
    problem_html,
    session_ended_html,
)
from .worklist import AI_LABELS, AI_STATUSES, PAGE_SIZES, WorklistQuery, load_page, table_html

log = logging.getLogger(__name__)


class WorklistView:
    """The worklist as ipywidgets; :attr:`widget` is what the notebook displays."""

    def __init__(self, client: Any) -> None:
        import ipywidgets as w

        self.client = client
        self.page = 0
        self.lock = threading.Lock()  # the user's clicks and the notifier's refreshes
        self._quiet = False  # while reset() clears the filters: one search, not one each
        text = {"layout": w.Layout(width="220px"), "continuous_update": False}
        self.patient_name = w.Text(placeholder="Patient name", description="Name", **text)
        self.patient_id = w.Text(placeholder="Patient ID", description="ID", **text)
        self.description = w.Text(placeholder="e.g. brain", description="Description", **text)
        self.date_from = w.DatePicker(description="From", layout=w.Layout(width="220px"))
        self.date_to = w.DatePicker(description="To", layout=w.Layout(width="220px"))
        self.ai_status = w.Dropdown(
            description="AI", layout=w.Layout(width="180px"),
            options=[("Any", "")] + [(AI_LABELS[s] if s != "none" else "None", s)
                                     for s in AI_STATUSES])
        self.page_size = w.Dropdown(description="Per page", options=list(PAGE_SIZES),
                                    layout=w.Layout(width="170px"))
        self.search = w.Button(description="Search", button_style="primary",
                               layout=w.Layout(width="110px"))
        self.clear = w.Button(description="Clear", layout=w.Layout(width="90px"))
        self.previous = w.Button(description="‹ Previous", layout=w.Layout(width="110px"))
        self.next = w.Button(description="Next ›", layout=w.Layout(width="110px"))
        self.page_label = w.HTML()
        self.message = w.HTML()
        self.table = w.HTML()
        self.search.on_click(lambda _: self.go(0))
        self.clear.on_click(lambda _: self.reset())
        self.previous.on_click(lambda _: self.go(max(0, self.page - 1)))
        self.next.on_click(lambda _: self.go(self.page + 1))
        for field in (self.patient_name, self.patient_id, self.description):
            field.observe(lambda _: self.go(0), names="value")
        filters = w.HBox([self.patient_name, self.patient_id, self.description, self.date_from,
                          self.date_to, self.ai_status, self.search, self.clear],
                         layout=w.Layout(flex_flow="row wrap", gap="4px"))
        paging = w.HBox([self.previous, self.page_label, self.next, self.page_size],
                        layout=w.Layout(align_items="center", gap="8px"))
        self.page_size.observe(lambda _: self.go(0), names="value")
        self.widget = w.VBox([filters, self.message, self.table, paging])

    def query(self) -> WorklistQuery:
        return WorklistQuery(
            patient_name=self.patient_name.value, patient_id=self.patient_id.value,
            description=self.description.value, date_from=self.date_from.value,
            date_to=self.date_to.value, ai_status=self.ai_status.value, page=self.page,
            page_size=int(self.page_size.value))

    def reset(self) -> None:
        self._quiet = True
        try:
            for field in (self.patient_name, self.patient_id, self.description):
                field.value = ""
            self.date_from.value = self.date_to.value = None
            self.ai_status.value = ""
        finally:
            self._quiet = False
        self.go(0)

    def go(self, page: int, background: Any = None) -> None:
        """Show page ``page`` of the current search (a message instead when it fails).
        ``background``: a refresh the user did not ask for, read with that client; no
        "Loading…", and a failure leaves the page as it is."""
        if self._quiet:
            return
        with self.lock:
            self._show(page, background)

    def _show(self, page: int, background: Any) -> None:
        if background is None:
            self.page = page
            self.message.value = message_html("Loading…", "info")
        try:
            found = load_page(background or self.client, self.query())
        except Exception as exc:  # noqa: BLE001 - every failure is a message on the page
            if background is not None:
                log.info("worklist refresh: %s", exc)
                return
            self.message.value = problem_html(exc, "load the worklist")
            self.table.value = ""  # nothing stays on screen that can no longer be read
            return
        self.message.value = ""
        self.table.value = table_html(found.rows)
        self.page_label.value = f"Page {found.page + 1}"
        self.previous.disabled = found.page == 0
        self.next.disabled = not found.has_next


def show_worklist() -> None:
    """Display the worklist page (the notebook's one call)."""
    import ipywidgets as w
    from IPython.display import display

    try:
        client = dashboard_client()
        user = client.whoami()
    except SessionEnded:
        display(w.HTML(header_html("Worklist", None) + session_ended_html()))
        return
    except Exception as exc:  # noqa: BLE001
        display(w.HTML(header_html("Worklist", None) + problem_html(exc, "open the worklist")))
        return
    view = WorklistView(client)
    display(w.HTML(header_html("Worklist", user)), view.widget)
    view.go(0)
    # Analyses of the user's that end get a notice; any that starts or ends redraws the
    # page shown, so its AI column stays true. Those reads are the page's own, not the
    # user's: they never renew its token (a page left open must not keep a session alive).
    background = background_client(client)
    show_notifications(client, on_change=lambda _: view.go(view.page, background=background))
