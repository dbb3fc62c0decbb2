"""The study viewer page's widgets (``dashboards/study.ipynb?study=<uid>``).

NiiVue (ipyniivue, bundled in its wheel: offline) draws the chosen sequence in axial,
coronal, sagittal or all three planes; the mouse wheel scrolls through slices, and a drag
with the right button changes the window too. The AI segmentation is drawn over it, a
colour per region, with a toggle and an opacity. Data: :mod:`.study`.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from ..ai.results import NOT_FOR_CLINICAL_USE
from ..viewer import _nifti_bytes
from .analysis_view import show_analysis
from .notifications import show_notifications
from .pages import (
    SessionEnded,
    dashboard_client,
    header_html,
    message_html,
    problem_html,
    query_argument,
    session_ended_html,
)
from .server import public_path
from .study import (
    COLOURS,
    REGION_COLOURS,
    SEQUENCES,
    WINDOW_PRESETS,
    find_seg,
    focus_fraction,
    load_seg,
    region_label,
    window,
)
from .worklist import display_date, ohif_link, person_name

VIEWS = {"Axial": 0, "Coronal": 1, "Sagittal": 2, "All planes": 3}
#: Draw order: the largest region first, so the smaller ones inside it stay visible.
DRAW_ORDER = ("WT", "TC", "ET")


class StudyView:
    """One study: sequence, plane, window and the AI overlay, as ipywidgets around NiiVue."""

    def __init__(self, volume: Any, masks: dict[str, np.ndarray], seg_note: str) -> None:
        import ipywidgets as w
        from ipyniivue import NiiVue

        self.volume = volume
        self.masks = masks
        # A thin, half-transparent yellow crosshair: it must not hide the image or read as
        # part of the segmentation's colours.
        self.viewer = NiiVue(height=620, crosshair_width=0.5,
                             crosshair_color=(1.0, 0.85, 0.0, 0.6))
        self.viewer.opts.slice_type = 0
        names = [c for c in SEQUENCES if c in volume.channels]
        self.sequence = w.ToggleButtons(options=[(SEQUENCES[c], c) for c in names],
                                        value=names[-1] if "flair" in names else names[0],
                                        description="Sequence")
        self.plane = w.ToggleButtons(options=list(VIEWS), value="Axial", description="View")
        self.preset = w.Dropdown(options=list(WINDOW_PRESETS), value="Auto",
                                 description="Window", layout=w.Layout(width="230px"))
        self.level = w.FloatRangeSlider(description="Range", readout_format=".0f",
                                        continuous_update=False, layout=w.Layout(width="420px"))
        self.show_ai = w.Checkbox(value=bool(masks), description="AI segmentation",
                                  disabled=not masks)
        self.opacity = w.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05,
                                     description="Opacity", disabled=not masks,
                                     continuous_update=False)
        self.regions = {}
        self.colours = {}
        rows = []
        for region in DRAW_ORDER:
            if region in masks:
                rows.append(self._region_row(region))
        self.sequence.observe(lambda _: self.load(), names="value")
        self.plane.observe(lambda c: setattr(self.viewer.opts, "slice_type", VIEWS[c["new"]]),
                           names="value")
        self.preset.observe(lambda _: self.apply_preset(), names="value")
        self.level.observe(lambda _: self.apply_window(), names="value")
        self.show_ai.observe(lambda _: self.draw_overlay(), names="value")
        self.opacity.observe(lambda _: self.draw_overlay(), names="value")
        note = w.HTML(f'<p class="nn-note">{html.escape(seg_note)}</p>')
        side = w.VBox([w.HTML("<b>Image</b>"), self.preset, self.level,
                       w.HTML("<b>AI segmentation</b>"), self.show_ai, self.opacity, *rows, note],
                      layout=w.Layout(width="460px", padding="0 0 0 16px"))
        self.side, self.note = side, note  # show_segmentation() and the analysis panel
        controls = w.VBox([self.sequence, self.plane])
        self.widget = w.VBox([controls, w.HBox([w.Box([self.viewer],
                                                      layout=w.Layout(flex="1 1 auto")), side])])
        self.load()

    def _region_row(self, region: str) -> Any:
        """A region's toggle and colour, observed by the overlay."""
        import ipywidgets as w

        self.regions[region] = w.Checkbox(value=True, description=region_label(region),
                                          layout=w.Layout(width="240px"))
        self.colours[region] = w.Dropdown(options=list(COLOURS), value=REGION_COLOURS[region],
                                          layout=w.Layout(width="110px"))
        self.regions[region].observe(lambda _: self.draw_overlay(), names="value")
        self.colours[region].observe(lambda _: self.draw_overlay(), names="value")
        return w.HBox([self.regions[region], self.colours[region]])

    def channel(self) -> np.ndarray:
        return self.volume.array[self.volume.channels.index(self.sequence.value)]

    def load(self) -> None:
        """Send the chosen sequence and the region masks to NiiVue."""
        affine = self.volume.affine_ras
        layers = [{"data": _nifti_bytes(self.channel(), affine),
                   "name": f"{self.sequence.value}.nii", "colormap": "gray"}]
        for region in DRAW_ORDER:
            if region in self.masks:
                layers.append({"data": _nifti_bytes(self.masks[region].astype(np.uint8), affine),
                               "name": f"{region}.nii", "colormap": self.colour(region),
                               "opacity": self.region_opacity(region), "cal_min": 0.5,
                               "cal_max": 1.0})
        self.viewer.load_volumes(layers)
        focus = next((focus_fraction(self.masks[r], affine) for r in ("ET", "TC", "WT")
                      if r in self.masks and self.masks[r].any()), None)
        if focus is not None:  # open on the tumour, not on the middle slice
            self.viewer.scene.crosshair_pos = focus
        array = self.channel()
        low, high = float(array.min()), float(array.max())
        high = high if high > low else low + 1.0
        if low > self.level.max:  # the slider keeps min <= max at every step
            self.level.max, self.level.min = high, low
        else:
            self.level.min, self.level.max = low, high
        self.apply_preset()
        self.draw_overlay()

    def apply_preset(self) -> None:
        self.level.value = window(self.channel(), self.preset.value)

    def apply_window(self) -> None:
        if self.viewer.volumes:
            base = self.viewer.volumes[0]
            base.cal_min, base.cal_max = (float(v) for v in self.level.value)

    def colour(self, region: str) -> str:
        return self.colours[region].value if region in self.colours else REGION_COLOURS[region]

    def region_opacity(self, region: str) -> float:
        """What the overlay toggle, the region's box and the opacity slider say together."""
        shown = self.show_ai.value and (region not in self.regions or self.regions[region].value)
        return float(self.opacity.value) if shown else 0.0

    def draw_overlay(self) -> None:
        shown = [r for r in DRAW_ORDER if r in self.masks]
        for region, layer in zip(shown, self.viewer.volumes[1:]):
            layer.colormap = self.colour(region)
            layer.opacity = self.region_opacity(region)

    # -- the analysis panel's insertion (neuronova_lib.dashboards.analysis_view) ------------
    def show_segmentation(self, masks: dict[str, np.ndarray], note: str) -> None:
        """Draw a new AI segmentation (a finished analysis): its region controls, its note,
        and the overlay layers sent again; the window the user set stays."""
        level = self.level.value
        self.masks = masks
        rows = [self._region_row(r) for r in DRAW_ORDER if r in masks and r not in self.regions]
        children = list(self.side.children)
        at = children.index(self.note)
        self.side.children = tuple(children[:at] + rows + children[at:])
        self.note.value = f'<p class="nn-note">{html.escape(note)}</p>'
        self.show_ai.disabled = self.opacity.disabled = not masks
        self.show_ai.value = bool(masks)
        self.load()
        self.level.value = level


def show_study() -> None:
    """Display the study viewer for ``?study=<uid>`` (the notebook's one call)."""
    import ipywidgets as w
    from IPython.display import display

    from ..uids import valid_uid

    study_uid = query_argument("study")
    status = w.HTML(message_html("Loading the study…", "info"))
    try:
        client = dashboard_client()
        user = client.whoami()
    except SessionEnded:
        display(w.HTML(header_html("Study", None) + session_ended_html()))
        return
    except Exception as exc:  # noqa: BLE001 - every failure is a message on the page
        display(w.HTML(header_html("Study", None) + problem_html(exc, "open the study")))
        return
    header = w.HTML(header_html("Study", user))
    back = f'<a href="{public_path("/dashboards/voila/render/worklist.ipynb")}">‹ Worklist</a>'
    if not valid_uid(study_uid):
        display(header, w.HTML(message_html("No study was given: open one from the worklist.")
                               + back))
        return
    display(header, status)
    show_notifications(client, exclude_study=study_uid)  # analyses of the user's that end
    try:
        volume = client.load_study(study_uid, progress=False)
    except LookupError:
        status.value = message_html("This study does not have the four sequences (T1, T1 "
                                    "contrast, T2, FLAIR) the viewer shows; open it in OHIF.",
                                    link=(ohif_link(study_uid), "Open in OHIF"))
        return
    except Exception as exc:  # noqa: BLE001
        status.value = problem_html(exc, "load the study")
        return
    masks: dict[str, np.ndarray] = {}
    note = "No AI segmentation for this study yet."
    try:
        ref = find_seg(client, study_uid)
        if ref is not None:
            masks = load_seg(client, study_uid, ref, volume.sop_uids)
            # The SEG's own description says it already when the platform's model wrote it.
            note = (ref.description if "not for clinical use" in ref.description.lower()
                    else f"{ref.description}. {NOT_FOR_CLINICAL_USE}.")
    except ValueError as exc:
        note = f"The AI segmentation cannot be shown over these images: {exc}"
    except Exception as exc:  # noqa: BLE001
        status.value = problem_html(exc, "load the AI segmentation")
        return
    meta = volume.metadata
    title = (f'<div class="nn-study-title"><b>{html.escape(person_name(str(meta.get("PatientName", ""))))}</b>'
             f' · ID {html.escape(str(meta.get("PatientID", "")))}'
             f' · {html.escape(display_date(str(meta.get("StudyDate", ""))))}'
             f' · {html.escape(str(meta.get("StudyDescription", "")))}'
             f' · {back} · <a href="{html.escape(ohif_link(study_uid))}" target="_blank" '
             'rel="noopener">Open in OHIF</a></div>')
    status.value = title
    view = StudyView(volume, masks, note)
    display(view.widget)
    show_analysis(client, user, study_uid, view, volume.sop_uids)  # "Analyse with AI"
