"""The study viewer page's widgets (``dashboards/study.ipynb?study=<uid>``).

NiiVue (ipyniivue, bundled in its wheel: offline) draws the chosen sequence in axial,
coronal, sagittal or all three planes; the mouse wheel scrolls through slices, and a drag
with the right button changes the window too. The AI segmentation is drawn over it, a
colour per region, with a toggle and an opacity. Data: :mod:`.study`.

The page draws before the study is loaded. Its first image is in the page's HTML
(:mod:`.first_image`, the notebook's first cell), which also starts reading the shown
sequence at a quarter of its rows and columns (HTJ2K decoded at a lower resolution: a
sixteenth of the pixels to send and draw); NiiVue draws that, then a thread of the page's
kernel loads the AI segmentation, the sequence at full resolution, then the other
sequences; the controls work meanwhile.
"""

from __future__ import annotations

import html
import threading
from typing import Any

import numpy as np

from ..ai.results import NOT_FOR_CLINICAL_USE
from ..dicomweb.brats import match_brats_series
from ..viewer import _nifti_bytes
from ..volume import LPS_TO_RAS, series_geometry
from .pages import (
    SessionEnded,
    dashboard_client,
    header_html,
    message_html,
    problem_html,
    session_ended_html,
)
from ..uids import valid_uid
from .analysis_view import show_analysis
from .first_image import OpenedStudy, done_marker, load_preview, open_study
from .notifications import show_notifications
from .patient_view import patient_panel
from .ready import PageReady
from .server import public_path
from .study import (
    COLOURS,
    LABEL_ORDER,
    REGION_COLOURS,
    SEQUENCES,
    WINDOW_PRESETS,
    SegRef,
    find_seg,
    first_sequence,
    focus_fraction,
    label_colormap,
    label_volume,
    load_seg,
    region_label,
    window,
)
from .worklist import display_date, ohif_link, person_name

VIEWS = {"Axial": 0, "Coronal": 1, "Sagittal": 2, "All planes": 3}


#: The order the sequences load in after the one shown: the contrast scan first.
LOAD_ORDER = ("flair", "t1c", "t1", "t2")


class StudyView:
    """One study: sequence, plane, window and the AI overlay, as ipywidgets around NiiVue.

    Images arrive after the page is drawn (:meth:`load_all`, on a thread): ``volumes``
    holds each sequence at the best resolution loaded so far.
    """

    def __init__(self, client: Any, study_uid: str, series: dict[str, Any], done: Any,
                 metadata: dict[str, list[dict[str, Any]]] | None = None) -> None:
        import ipywidgets as w
        from ipyniivue import NiiVue

        self.client, self.study_uid, self.series = client, study_uid, series
        #: Each series' WADO-RS metadata by series UID, read once for the page.
        self.metadata: dict[str, list[dict[str, Any]]] = {} if metadata is None else metadata
        self._reference: tuple[tuple[str, ...], np.ndarray] | None = None
        self.volumes: dict[str, Any] = {}
        self.masks: dict[str, np.ndarray] = {}
        self.mask_affine: np.ndarray | None = None
        self.labels: bytes | None = None  # the regions as one cropped label volume (NIfTI)
        self._drawing = False  # while show_sequence sets the window controls itself
        self.lock = threading.RLock()
        self.shown: Any = None  # the volume NiiVue draws under the masks
        # A thin, half-transparent yellow crosshair: it must not hide the image or read as
        # part of the segmentation's colours.
        self.viewer = NiiVue(height=620, crosshair_width=0.5,
                             crosshair_color=(1.0, 0.85, 0.0, 0.6))
        self.viewer.opts.slice_type = 0
        # NiiVue's browser side ignores volumes sent before its canvas exists: wait for it.
        self.canvas_ready = threading.Event()
        self.viewer.on_canvas_attached(self.canvas_ready.set)
        # The page's hidden widget that says when NiiVue has drawn its first image: the
        # page's first image (in its HTML, .first_image) then gives way to it.
        self.done = done
        self.viewer.on_image_loaded(lambda _volume: self.viewer_done())
        names = [c for c in SEQUENCES if c in series]
        self.sequence = w.ToggleButtons(options=[(SEQUENCES[c], c) for c in names],
                                        value=first_sequence(series), description="Sequence")
        self.plane = w.ToggleButtons(options=list(VIEWS), value="Axial", description="View")
        self.loading = w.HTML(self._loading_html("Loading the images…"))
        self.preset = w.Dropdown(options=list(WINDOW_PRESETS), value="Auto",
                                 description="Window", layout=w.Layout(width="230px"))
        self.level = w.FloatRangeSlider(description="Range", readout_format=".0f",
                                        continuous_update=False, layout=w.Layout(width="420px"))
        self.show_ai = w.Checkbox(value=False, description="AI segmentation", disabled=True)
        self.opacity = w.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05,
                                     description="Opacity", disabled=True,
                                     continuous_update=False)
        self.regions: dict[str, Any] = {}
        self.colours: dict[str, Any] = {}
        self.region_rows = w.VBox([])
        self.note = w.HTML(self._note_html("Looking for an AI segmentation…"))
        self.sequence.observe(lambda _: self.show_sequence(), names="value")
        self.plane.observe(lambda c: setattr(self.viewer.opts, "slice_type", VIEWS[c["new"]]),
                           names="value")
        self.preset.observe(lambda _: self.apply_preset(), names="value")
        self.level.observe(lambda _: self.apply_window(), names="value")
        self.show_ai.observe(lambda _: self.draw_overlay(), names="value")
        self.opacity.observe(lambda _: self.draw_overlay(), names="value")
        # The analysis panel (.analysis_view) adds itself at the end of the side column.
        self.side = w.VBox([w.HTML("<b>Image</b>"), self.preset, self.level,
                            w.HTML("<b>AI segmentation</b>"), self.show_ai, self.opacity,
                            self.region_rows, self.note],
                           layout=w.Layout(width="460px", padding="0 0 0 16px"))
        controls = w.VBox([self.sequence, self.plane, self.loading])
        self.widget = w.VBox([controls, w.HBox([w.Box([self.viewer],
                                                      layout=w.Layout(flex="1 1 auto")),
                                                self.side])])

    def viewer_done(self) -> None:
        """NiiVue has drawn, or never will (a failure): the page's first image goes."""
        if not self.done.value:
            self.done.value = done_marker()

    @staticmethod
    def _loading_html(text: str) -> str:
        return f'<span class="nn-note">{html.escape(text)}</span>' if text else ""

    @staticmethod
    def _note_html(text: str) -> str:
        return f'<p class="nn-note">{html.escape(text)}</p>'

    # -- loading (the page's thread) ----------------------------------------------------
    def load_all(self, opened: OpenedStudy, on_error: Any, ready: PageReady) -> None:
        """Load what the page shows, most wanted first; errors go to ``on_error(exc, what)``.
        The first volume is read while the browser builds the page (started by the page's
        first cell, :func:`.first_image.open_study`), and drawn once it has (``ready``)."""
        client, study_uid, series = self.client, self.study_uid, self.series
        first = self.sequence.value
        what = "load the images"
        try:
            if opened.preview is not None and opened.preview[0] == first:
                preview = opened.preview[1].result()
            else:
                preview = load_preview(client, study_uid, series[first],
                                       self.instances(first))
            ready.wait()
            self.canvas_ready.wait(30.0)
            self.add_volume(first, preview)
            what = "load the AI segmentation"
            self.load_segmentation(opened.listed or [])
            what = "load the images"
            order = [first] + [c for c in LOAD_ORDER if c in series and c != first]
            for number, channel in enumerate(order, start=1):
                self.loading.value = self._loading_html(
                    f"Loading full resolution: {SEQUENCES[channel]} ({number} of {len(order)})…")
                self.add_volume(channel, client.load_series(study_uid, series[channel],
                                                            progress=False,
                                                            instances=self.instances(channel)))
            self.loading.value = ""
        except Exception as exc:  # noqa: BLE001 - the page says what failed, never a traceback
            self.loading.value = ""
            self.viewer_done()
            on_error(exc, what)

    def instances(self, channel: str) -> list[dict[str, Any]]:
        """``channel``'s series metadata, read once for the page."""
        uid = self.series[channel].series_uid
        if uid not in self.metadata:
            self.metadata[uid] = self.client.series_metadata(self.study_uid, self.series[channel])
        return self.metadata[uid]

    def load_segmentation(self, listed: list[Any]) -> None:
        """The study's newest SEG on the reference series' grid (:meth:`reference`)."""
        try:
            ref = find_seg(self.client, self.study_uid, listed)
            if ref is None:
                self.note.value = self._note_html("No AI segmentation for this study yet.")
                return
            sop_uids, affine = self.reference()
            masks = load_seg(self.client, self.study_uid, ref, sop_uids)
        except ValueError as exc:
            self.note.value = self._note_html(
                f"The AI segmentation cannot be shown over these images: {exc}")
            return
        self.set_segmentation(masks, affine, seg_note(ref))

    def reference(self) -> tuple[tuple[str, ...], np.ndarray]:
        """The reference (T1) series' slices in ``k`` order and its RAS affine: the grid
        the platform's SEGs are made on, from its metadata alone (read once)."""
        with self.lock:
            if self._reference is None:
                channel = "t1" if "t1" in self.series else next(iter(self.series))
                geometry = series_geometry(self.instances(channel))
                self._reference = (tuple(s.sop_uid for s in geometry.slices),
                                   LPS_TO_RAS @ geometry.affine_lps)
            return self._reference

    def show_segmentation(self, masks: dict[str, np.ndarray], note: str) -> None:
        """Draw a new AI segmentation made on the reference series (a finished analysis);
        the window the user set stays."""
        self.set_segmentation(masks, self.reference()[1], note)

    def add_volume(self, channel: str, volume: Any) -> None:
        """Keep ``volume`` as ``channel``'s best so far; draw it if that sequence is shown."""
        with self.lock:
            self.volumes[channel] = volume
            if self.sequence.value == channel:
                self.show_sequence()

    # -- drawing --------------------------------------------------------------------------
    def show_sequence(self) -> None:
        """Draw the chosen sequence under the AI segmentation."""
        from ipyniivue import Volume

        with self.lock:
            volume = self.volumes.get(self.sequence.value)
            if volume is None or volume is self.shown:
                return
            first = self.shown is None
            same_sequence = (self.shown is not None
                             and self.shown.series_uid == volume.series_uid)
            self.shown = volume
            array = volume.array
            low, high = float(array.min()), float(array.max())
            high = high if high > low else low + 1.0
            # The window goes in with the image: in the browser each change of a layer's
            # window recomputes every layer over the whole volume (software WebGL: seconds
            # at full resolution).
            self._drawing = True
            try:
                if low > self.level.max:  # the slider keeps min <= max at every step
                    self.level.max, self.level.min = high, low
                else:
                    self.level.min, self.level.max = low, high
                if not same_sequence:  # full resolution after the first image keeps the
                    self.level.value = window(array, self.preset.value)  # user's window
            finally:
                self._drawing = False
            cal_min, cal_max = (float(v) for v in self.level.value)
            base = Volume(data=_nifti_bytes(array, volume.affine_ras),
                          name=f"{self.sequence.value}.nii", colormap="gray",
                          cal_min=cal_min, cal_max=cal_max)
            self.set_layers([base, *self.overlay_layers()])
            if first:
                self.focus()

    def set_segmentation(self, masks: dict[str, np.ndarray], affine_ras: np.ndarray,
                         note: str) -> None:
        """Draw ``masks`` (on the grid ``affine_ras``) over the image, with their controls."""
        import ipywidgets as w

        with self.lock:
            self.masks, self.mask_affine = masks, affine_ras
            self.note.value = self._note_html(note)
            rows = []
            self.regions, self.colours = {}, {}
            for region in LABEL_ORDER:
                if region not in masks:
                    continue
                self.regions[region] = w.Checkbox(value=True, description=region_label(region),
                                                  layout=w.Layout(width="240px"))
                self.colours[region] = w.Dropdown(options=list(COLOURS),
                                                  value=REGION_COLOURS[region],
                                                  layout=w.Layout(width="110px"))
                rows.append(w.HBox([self.regions[region], self.colours[region]]))
                self.regions[region].observe(lambda _: self.draw_overlay(), names="value")
                self.colours[region].observe(lambda _: self.draw_overlay(), names="value")
            self.region_rows.children = rows
            self.show_ai.disabled = self.opacity.disabled = not masks
            self.show_ai.value = bool(masks)
            labels = label_volume(masks, affine_ras)
            self.labels = None if labels is None else _nifti_bytes(*labels)
            if self.viewer.volumes:
                self.set_layers([self.viewer.volumes[0], *self.overlay_layers()])
            self.focus()

    def overlay_layers(self) -> list[Any]:
        """The AI segmentation as one label layer (none without a segmentation). A new
        layer with each base image: ipyniivue does not draw a kept layer over a new base
        (NiiVue stays at "loading ..."); this one is small."""
        from ipyniivue import Volume

        if self.labels is None:
            return []
        layer = Volume(data=self.labels, name="ai-segmentation.nii", opacity=self.layer_opacity())
        layer.set_colormap_label(self.colormap())
        return [layer]

    def set_layers(self, layers: list[Any]) -> None:
        """Show ``layers`` and close the ones they replace: each holds its voxels twice in
        the kernel (sent, and sent back by the browser) until closed."""
        replaced = [v for v in self.viewer.volumes if all(v is not layer for layer in layers)]
        self.viewer.load_volumes(layers)
        for volume in replaced:
            volume.close()

    def focus(self) -> None:
        """Put the crosshair on the tumour (the smallest region), not the middle slice."""
        if self.shown is None or self.mask_affine is None:
            return
        point = next((focus_fraction(self.masks[r], self.mask_affine, self.shown.array.shape,
                                     self.shown.affine_ras)
                      for r in ("ET", "TC", "WT") if r in self.masks and self.masks[r].any()),
                     None)
        if point is not None:
            self.viewer.scene.crosshair_pos = point

    def apply_preset(self) -> None:
        if self.shown is not None:
            self.level.value = window(self.shown.array, self.preset.value)

    def apply_window(self) -> None:
        if self.viewer.volumes and not self._drawing:
            base = self.viewer.volumes[0]
            base.cal_min, base.cal_max = (float(v) for v in self.level.value)

    def colormap(self) -> dict[str, list[Any]]:
        """The label colours the region boxes and colour menus ask for."""
        colours = {r: self.colours[r].value if r in self.colours else REGION_COLOURS[r]
                   for r in LABEL_ORDER}
        shown = {r for r in self.masks if r not in self.regions or self.regions[r].value}
        return label_colormap(colours, shown)

    def layer_opacity(self) -> float:
        """The overlay toggle and the opacity slider together."""
        return float(self.opacity.value) if self.show_ai.value else 0.0

    def draw_overlay(self) -> None:
        """Recolour the label layer (a colour table: no voxels are sent again)."""
        for layer in self.viewer.volumes[1:]:
            layer.set_colormap_label(self.colormap())
            layer.opacity = self.layer_opacity()


def seg_note(ref: SegRef) -> str:
    """What the page says under the overlay: the SEG's own description, which says "not
    for clinical use" already when the platform's model wrote it."""
    if "not for clinical use" in ref.description.lower():
        return ref.description
    return f"{ref.description}. {NOT_FOR_CLINICAL_USE}."


def show_study(opened: OpenedStudy | None = None) -> None:
    """Display the study viewer for ``?study=<uid>`` (the notebook's second cell, after
    :func:`.first_image.open_study`; alone, it opens the study itself)."""
    import ipywidgets as w
    from IPython.display import display

    if opened is None:
        opened = open_study()
    view = None
    done = w.HTML("", layout=w.Layout(display="none"))
    display(done)
    try:
        view = _show_study(opened, done)
    finally:
        if view is None:  # no viewer will draw: the first image (if any) goes
            done.value = done_marker()


def _show_study(opened: OpenedStudy, done: Any) -> StudyView | None:
    """The page under the first image; the viewer when there is one (``done``: the page's
    widget that says when the first image is to go)."""
    import ipywidgets as w
    from IPython.display import display

    study_uid = opened.study_uid
    status = w.HTML(message_html("Loading the study…", "info"))
    try:
        client = opened.client or dashboard_client()
        user = client.whoami()
    except SessionEnded:
        display(w.HTML(header_html("Study", None) + session_ended_html()))
        return None
    except Exception as exc:  # noqa: BLE001 - every failure is a message on the page
        display(w.HTML(header_html("Study", None) + problem_html(exc, "open the study")))
        return None
    header = w.HTML(header_html("Study", user))
    back = f'<a href="{public_path("/dashboards/voila/render/worklist.ipynb")}">‹ Worklist</a>'
    if not valid_uid(study_uid):
        display(header, w.HTML(message_html("No study was given: open one from the worklist.")
                               + back))
        return None
    display(header, status)
    show_notifications(client, exclude_study=study_uid)  # analyses of the user's that end
    try:
        listed = opened.listed if opened.listed is not None else client.series(study_uid)
        found = client.find_studies(study_uid=study_uid, limit=1)
    except Exception as exc:  # noqa: BLE001
        status.value = problem_html(exc, "load the study")
        return None
    ready = PageReady()
    # Patient panel (banner): filled by its own thread, never delays the images.
    display(patient_panel(client, study_uid, ready))
    series = match_brats_series(listed)
    if not series:
        status.value = message_html("This study does not have the sequences (T1, T1 contrast, "
                                    "T2, FLAIR) the viewer shows; open it in OHIF.",
                                    link=(ohif_link(study_uid), "Open in OHIF"))
        return None
    status.value = study_title(found[0] if found else None, study_uid, back)
    opened.listed = listed
    view = StudyView(client, study_uid, series, done, opened.metadata)
    display(view.widget, ready)
    show_analysis(client, user, study_uid, view, ready)  # "Analyse with AI"

    def failed(exc: BaseException, what: str) -> None:
        status.value = problem_html(exc, what)

    threading.Thread(target=view.load_all, args=(opened, failed, ready),
                     name="neuronova-study-loader", daemon=True).start()
    return view


def study_title(study: Any, study_uid: str, back: str) -> str:
    """The line above the images: patient, ID, date, description and the links."""
    name = person_name(str(getattr(study, "patient_name", "") or ""))
    return (f'<div class="nn-study-title"><b>{html.escape(name)}</b>'
            f' · ID {html.escape(str(getattr(study, "patient_id", "") or ""))}'
            f' · {html.escape(display_date(str(getattr(study, "study_date", "") or "")))}'
            f' · {html.escape(str(getattr(study, "description", "") or ""))}'
            f' · {back} · <a href="{html.escape(ohif_link(study_uid))}" target="_blank" '
            'rel="noopener">Open in OHIF</a></div>')
