"""The study viewer's first image, in the page's HTML itself.

Voilà sends a page's outputs as data that its scripts draw: nothing of the page shows
until the browser has loaded and started JupyterLab's widget manager, the widgets and
NiiVue (2–3 s on the platform's machine, warm). A clinician should not look at a spinner
that long. So the study page's first cell (:func:`open_study`) reads one slice of the
shown sequence (its middle, one frame request, HTJ2K decoded in the kernel) and puts it
in the page's HTML as a PNG: the platform's Voilà template writes that one output as it
is, marked :data:`FIRST_IMAGE`, so the browser draws it as soon as the HTML arrives.

A few lines of script in it put the image where NiiVue's canvas will be (once the
widgets are built), and take it away when the kernel says NiiVue has drawn
(:data:`VIEWER_DONE`, :func:`done_marker`) or that the page will draw no viewer.
"""

from __future__ import annotations

import base64
import html
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..dicomweb.brats import match_brats_series
from ..uids import valid_uid
from .pages import STYLE, await_request, dashboard_client, query_argument
from .study import SEQUENCES, axial_image, first_sequence, window

logger = logging.getLogger(__name__)

#: The output metadata key the template looks for (``dashboards/jupyter/.../index.html.j2``).
FIRST_IMAGE = "neuronova_first_image"
#: The class of the element the kernel shows once NiiVue has drawn (or never will).
VIEWER_DONE = "nn-viewer-done"

_STYLE = """<style>
#nn-first-image { max-width: 1860px; margin: 0 auto; padding: 12px 24px; }
#nn-first-image .nn-first-frame { height: 620px; background: #000; display: flex;
  align-items: center; justify-content: center; overflow: hidden; }
#nn-first-image .nn-first-caption { color: #555; font-size: 13px; margin: 6px 0; }
.nn-first-frame img { height: 100%; max-width: 100%; object-fit: contain; }
.nn-first-frame.nn-over { position: absolute; inset: 0; height: auto; z-index: 5;
  background: #000; display: flex; align-items: center; justify-content: center; }
</style>"""

#: Moves the image over NiiVue's canvas when that exists, and removes it when the kernel
#: shows VIEWER_DONE. Runs as the HTML is parsed (Voilà's pages allow inline scripts).
_SCRIPT = """<script>
(function () {
  var box = document.getElementById("nn-first-image");
  var frame = box.querySelector(".nn-first-frame");
  var spinner = document.getElementById("loading");
  if (spinner) { spinner.style.display = "none"; }
  document.body.insertBefore(box, document.body.firstChild);
  var watch = new MutationObserver(function () {
    if (document.querySelector(".%(done)s")) {
      watch.disconnect();
      setTimeout(function () { box.remove(); frame.remove(); }, 100);
      return;
    }
    var canvas = document.querySelector("#rendered_cells canvas");
    if (canvas && frame.parentNode !== canvas.parentNode) {
      canvas.parentNode.style.position = "relative";
      frame.classList.add("nn-over");
      canvas.parentNode.appendChild(frame);
      box.style.display = "none";
    }
  });
  watch.observe(document.body, {childList: true, subtree: true});
})();
</script>"""


#: The viewer's first volume, read while the browser builds the page: resolution levels
#: skipped (each halves rows and columns) and one slice in PREVIEW_SLICE_STEP (a quarter
#: of the frame requests; the requests, not the decoding, are what a series' load waits for).
PREVIEW_REDUCE = 2
PREVIEW_SLICE_STEP = 4


@dataclass
class OpenedStudy:
    """What the first cell learnt, for the page's second (:func:`.study_view.show_study`):
    the study asked for; the page's client and the study's series when they could be read
    (else the second cell reads them again and says what went wrong); the series metadata
    read so far; and the viewer's first volume, on its way (:data:`PREVIEW_REDUCE`)."""

    study_uid: str
    client: Any | None = None
    listed: list[Any] | None = None
    metadata: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    preview: tuple[str, Future[Any]] | None = None  # (sequence, its reduced volume)


def open_study() -> OpenedStudy:
    """The study page's first cell: wait for the browser, then draw the first image and
    start reading the viewer's first volume."""
    import highdicom  # noqa: F401 - imported before the page is asked for (the pool)
    import ipyniivue  # noqa: F401
    import ipywidgets  # noqa: F401
    from IPython.display import HTML, display

    await_request()
    opened = OpenedStudy(query_argument("study"))
    if not valid_uid(opened.study_uid):
        return opened
    try:
        client = opened.client = dashboard_client()
        opened.listed = client.series(opened.study_uid)
        series = match_brats_series(opened.listed)
        if not series:
            return opened
        channel = first_sequence(series)
        instances = opened.metadata[series[channel].series_uid] = client.series_metadata(
            opened.study_uid, series[channel])
        page = first_image_html(client.load_series(opened.study_uid, series[channel],
                                                   progress=False, slice_at=0.5,
                                                   instances=instances), SEQUENCES[channel])
        reader = ThreadPoolExecutor(1, thread_name_prefix="neuronova-preview")
        opened.preview = (channel, reader.submit(load_preview, client, opened.study_uid,
                                                 series[channel], instances))
        reader.shutdown(wait=False)
    except Exception as exc:  # noqa: BLE001 - the second cell reads again and says why
        logger.info("no first image for study %s: %s", opened.study_uid, exc)
        return opened
    if page is not None:
        display(HTML(page), metadata={FIRST_IMAGE: True})
    return opened


def load_preview(client: Any, study_uid: str, series: Any, instances: list[dict[str, Any]]
                 ) -> Any:
    """The viewer's first volume of ``series`` (:data:`PREVIEW_REDUCE`,
    :data:`PREVIEW_SLICE_STEP`), its metadata already read."""
    return client.load_series(study_uid, series, progress=False, reduce=PREVIEW_REDUCE,
                              slice_step=PREVIEW_SLICE_STEP, instances=instances)


def first_image_html(volume: Any, sequence: str) -> str | None:
    """A one-slice volume (``Client.load_series(slice_at=…)``) as the page's first image;
    None when its slice is not axial."""
    array = volume.array[:, :, 0]
    image = axial_image(array, volume.affine_ras, *window(array, "Auto"))
    if image is None:
        return None
    return image_html(*image, f"{sequence}: the middle slice, while the viewer loads…")


def image_html(grey: Any, width_mm: float, height_mm: float, caption: str) -> str:
    """The page's first image (8-bit ``grey``, drawn at its size in mm) and its script."""
    import imagecodecs

    png = base64.b64encode(imagecodecs.png_encode(grey)).decode("ascii")
    return (f'{STYLE}{_STYLE}<div id="nn-first-image">'
            '<div class="nn-header"><h1>NeuroNova · Study</h1></div>'
            f'<div class="nn-first-frame"><img elementtiming="nn-first-image" '
            f'alt="{html.escape(caption)}" '
            f'style="aspect-ratio: {width_mm:.2f} / {height_mm:.2f}" '
            f'src="data:image/png;base64,{png}"></div>'
            f'<div class="nn-first-caption">{html.escape(caption)}</div></div>'
            + _SCRIPT % {"done": VIEWER_DONE})


def done_marker() -> str:
    """The HTML a page's widget shows once NiiVue has drawn, or when it never will."""
    return f'<span class="{VIEWER_DONE}"></span>'
