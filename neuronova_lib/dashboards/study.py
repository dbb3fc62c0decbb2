"""The study viewer's data: the four sequences, the AI segmentation on their grid, and
window presets. Read as the page's user through the guard (see :mod:`.pages`).

The AI's DICOM SEG (:mod:`neuronova_lib.ai.results`) is a BINARY segmentation of three
nested regions (TC, WT, ET) over the reference series' slices; its frames are matched to
the volume's slices by the SOP Instance UIDs they derive from, so no resampling is needed
when the SEG was made on the reference series (the platform's inference does that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..ai.results import REGION_CODES, REGIONS

#: The sequences, in the order the viewer offers them, and what a clinician calls them.
SEQUENCES = {"t1": "T1", "t1c": "T1 contrast", "t2": "T2", "flair": "FLAIR"}
#: The colours a region can take (RGB), and each region's own.
COLOURS = {"red": (230, 30, 30), "green": (0, 200, 0), "blue": (40, 110, 255),
           "yellow": (245, 215, 0), "cyan": (0, 205, 215), "violet": (170, 90, 255)}
REGION_COLOURS = {"WT": "green", "TC": "blue", "ET": "red"}
#: The regions from outermost to innermost: a voxel in several takes the colour of the
#: innermost one shown (the tumour's core over its oedema, the enhancing part over both).
LABEL_ORDER = ("WT", "TC", "ET")
#: Window presets over the sequence's own intensities (MR has no fixed units): percentiles.
WINDOW_PRESETS = {"Auto": (1.0, 99.0), "Full range": (0.0, 100.0),
                  "High contrast": (20.0, 97.0), "Bright": (0.5, 90.0)}


@dataclass(frozen=True)
class SegRef:
    series_uid: str
    sop_uid: str
    description: str


def region_label(region: str) -> str:
    """``"TC tumour core"`` for ``"TC"``: what the SEG calls the region."""
    return REGION_CODES[region][1]


def window(array: np.ndarray, preset: str) -> tuple[float, float]:
    """The (low, high) intensities of ``preset`` for ``array`` (background zeros ignored)."""
    low, high = WINDOW_PRESETS[preset]
    values = array[array != 0] if np.any(array) else array.ravel()
    lo, hi = (float(v) for v in np.percentile(values, [low, high]))
    return (lo, hi if hi > lo else lo + 1.0)


def first_sequence(series: dict[str, Any]) -> str:
    """The sequence the viewer shows first: FLAIR (oedema and tumour extent), else the
    first of :data:`SEQUENCES` the study has."""
    names = [c for c in SEQUENCES if c in series]
    return "flair" if "flair" in names else names[0]


def axial_image(array: np.ndarray, affine_ras: np.ndarray, low: float, high: float
                ) -> tuple[np.ndarray, float, float] | None:
    """One axial slice (``array[i, j]`` with the volume's RAS ``affine_ras``) as NiiVue
    draws it: 8-bit grey rows top to bottom, the patient's anterior at the top and their
    right on the screen's right (NiiVue's default, neurological convention), windowed to
    ``low``–``high``; with its width and height in mm. None when the slice is not axial
    (its normal further than 45° from the head's axis): NiiVue would reslice it."""
    axes = np.asarray(affine_ras, dtype=float)[:3, :3]
    normal = np.cross(axes[:, 0], axes[:, 1])
    if abs(normal[2]) < np.linalg.norm(normal) * np.sqrt(0.5):
        return None
    across = int(np.argmax(np.abs(axes[0, :2])))  # the image axis most along left-right
    image = np.asarray(array) if across == 0 else np.asarray(array).T  # [x, y]
    down = 1 - across
    if axes[0, across] < 0:
        image = image[::-1, :]  # index grows towards the patient's right
    if axes[1, down] > 0:
        image = image[:, ::-1]  # index grows towards the back: the front on top
    scaled = (image.T.astype(np.float32) - low) * (255.0 / max(high - low, 1e-6))
    grey = np.clip(scaled, 0, 255).astype(np.uint8)
    width = image.shape[0] * float(np.linalg.norm(axes[:, across]))
    height = image.shape[1] * float(np.linalg.norm(axes[:, down]))
    return np.ascontiguousarray(grey), width, height


def find_seg(client: Any, study_uid: str, series: list[Any] | None = None) -> SegRef | None:
    """The study's newest SEG series (highest series number) and its instance, if any
    (``series``: the study's series when already listed)."""
    listed = client.series(study_uid) if series is None else series
    segs = [s for s in listed if s.modality == "SEG"]
    if not segs:
        return None
    newest = max(segs, key=lambda s: (s.number or 0, s.series_uid))
    instances = client.dicomweb.search_for_instances(study_uid, newest.series_uid)
    if not instances:
        return None
    sop = str(instances[-1]["00080018"]["Value"][0])
    return SegRef(newest.series_uid, sop, newest.description)


def region_masks(seg_dataset: Any, sop_uids: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The SEG's regions as boolean ``(X, Y, Z)`` masks on the grid of the series whose
    slices are ``sop_uids`` (the volume's, in ``k`` order).

    Raises
    ------
    ValueError
        The SEG was not made on this series (its frames derive from other slices).
    """
    import highdicom as hd

    seg = hd.seg.Segmentation.from_dataset(seg_dataset, copy=False)
    numbers = seg.get_segment_numbers()
    by_label = {str(seg.get_segment_description(n).tracking_id): n for n in numbers}
    wanted = [r for r in REGIONS if r in by_label]
    if not wanted:
        raise ValueError("the segmentation has none of the regions TC, WT, ET")
    try:
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=list(sop_uids), segment_numbers=[by_label[r] for r in wanted],
            ignore_spatial_locations=True)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ValueError(f"the segmentation is not on this series' slices ({exc})") from None
    masks = pixels.transpose(3, 2, 1, 0).astype(bool)  # (regions, X, Y, Z)
    return {region: masks[i] for i, region in enumerate(wanted)}


def load_seg(client: Any, study_uid: str, ref: SegRef, sop_uids: tuple[str, ...]
             ) -> dict[str, np.ndarray]:
    """Retrieve the SEG instance (WADO-RS, as the user) and its masks on the volume's grid."""
    dataset = client.dicomweb.retrieve_instance(study_uid, ref.series_uid, ref.sop_uid)
    return region_masks(dataset, sop_uids)


def label_volume(masks: dict[str, np.ndarray], affine_ras: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """The regions as one ``uint8`` volume cropped to their bounding box, and its RAS affine;
    ``None`` when every mask is empty.

    A voxel's value says which regions hold it: bit ``i`` for ``LABEL_ORDER[i]``, so
    overlapping regions need no rule here (:func:`label_colormap` gives each combination
    its colour). One small layer instead of one full-grid layer per region: NiiVue draws
    every layer at each slice step, and ipyniivue sends each layer's voxels back to the
    kernel once the browser has loaded it. NiiVue places the cropped grid by its affine.
    """
    present = [r for r in LABEL_ORDER if r in masks]
    union = np.zeros(next(iter(masks.values())).shape, dtype=bool) if masks else None
    for region in present:
        union |= masks[region]
    if union is None or not union.any():
        return None
    found = np.argwhere(union)
    low = np.maximum(found.min(axis=0) - 1, 0)
    high = np.minimum(found.max(axis=0) + 2, union.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
    labels = np.zeros(tuple(int(b - a) for a, b in zip(low, high, strict=True)), dtype=np.uint8)
    for region in present:
        labels[masks[region][box]] |= np.uint8(1 << LABEL_ORDER.index(region))
    affine = np.asarray(affine_ras, dtype=float).copy()
    affine[:3, 3] = affine[:3, :3] @ low + affine[:3, 3]
    return labels, affine


def label_colormap(colours: dict[str, str], shown: set[str]) -> dict[str, list[Any]]:
    """NiiVue's label colormap for :func:`label_volume`'s values: each combination of
    regions in the colour (``colours``: region → a name of :data:`COLOURS`) of its
    innermost region in ``shown``, transparent when none is."""
    table: dict[str, list[Any]] = {"R": [], "G": [], "B": [], "A": [], "I": [], "labels": []}
    for value in range(1 << len(LABEL_ORDER)):
        held = [r for i, r in enumerate(LABEL_ORDER) if value & (1 << i) and r in shown]
        rgb = COLOURS[colours.get(held[-1], REGION_COLOURS[held[-1]])] if held else (0, 0, 0)
        for key, channel in zip("RGB", rgb, strict=True):
            table[key].append(int(channel))
        table["A"].append(255 if held else 0)
        table["I"].append(value)
        table["labels"].append(held[-1] if held else "")
    return table


def focus_fraction(mask: np.ndarray, affine_ras: np.ndarray, frame_shape: tuple[int, ...] | None = None,
                   frame_affine: np.ndarray | None = None) -> list[float] | None:
    """Where NiiVue's crosshair goes to show the region ``mask`` (its centre), as NiiVue's
    fraction of its background volume's RAS bounding box per axis (``frame_shape`` and
    ``frame_affine``: the image shown under the mask, by default the mask's own grid);
    ``None`` for an empty mask."""
    if not mask.any():
        return None
    centre = np.argwhere(mask).mean(axis=0)
    shape = np.asarray(mask.shape if frame_shape is None else frame_shape[:3], dtype=float)
    frame = np.asarray(affine_ras if frame_affine is None else frame_affine, dtype=float)
    corners = np.array([[x, y, z, 1.0] for x in (-0.5, shape[0] - 0.5)
                        for y in (-0.5, shape[1] - 0.5) for z in (-0.5, shape[2] - 0.5)])
    mm = corners @ frame.T
    low, high = mm[:, :3].min(axis=0), mm[:, :3].max(axis=0)
    point = (np.asarray(affine_ras, dtype=float) @ np.append(centre, 1.0))[:3]
    return [float(v) for v in np.clip((point - low) / (high - low), 0.0, 1.0)]
