"""When a page's widgets exist in the browser, so that its threads may start changing them.

A page displays its widgets and returns; Voilà then sends the page, and the browser asks
the kernel for every widget's state and builds them. A thread that changes a widget in
between (the images arriving, the patient record) changes the kernel's copy, and the
browser can miss that change: it can ask for the state before the change and create
the widget after the change's message has gone by. The first study page seen in a
browser test showed its AI regions yet "Looking for an AI segmentation…" beside them.
So a page's threads wait for :class:`PageReady`: a widget whose browser side, once it
is drawn, sends one message back. Widgets displayed before it exist by then.
"""

from __future__ import annotations

import threading
from typing import Any

import anywidget
import traitlets


class PageReady(anywidget.AnyWidget):  # type: ignore[misc]
    """Invisible; :meth:`wait` returns once the browser has drawn it (or at the timeout)."""

    _esm = """
export default {
  render({ model, el }) {
    el.style.display = "none";
    model.send({ drawn: true });
  },
};
"""
    drawn = traitlets.Bool(False).tag(sync=False)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._event = threading.Event()
        self.on_msg(self._received)

    def _received(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("drawn"):
            self.drawn = True
            self._event.set()

    def wait(self, timeout: float = 30.0) -> bool:
        """Whether the browser drew the page's widgets within ``timeout`` seconds. A page
        nobody opened (a program fetched it) goes on after the timeout regardless."""
        return self._event.wait(timeout)
