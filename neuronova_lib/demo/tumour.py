"""A synthetic glioma: necrotic core, enhancing rim and oedema, as labels and partial volumes.

Shape: an ellipsoid with random axes and orientation, deformed by a smooth
random field so that its surface is irregular. Its level sets give the
compartments, from the inside out:

* necrotic core (BraTS label 1): inside ``1 - rim/R`` (own small deformation);
* enhancing rim (label 4): the shell between the core and the surface ``s = 1``;
* oedema (label 2): beyond the surface, out to a distance that is larger in
  white matter than in grey matter (oedema follows white-matter tracts), and
  never in CSF.

Labels are thresholded partial volumes (≥ 0.5), and the necrotic label is
eroded by one voxel inside the core, so the enhancing rim always separates
the core from the rest — even on coarse grids.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .fields import smooth_field
from .geometry import Grid

logger = logging.getLogger(__name__)

#: BraTS label values.
LABEL_NECROTIC = 1
LABEL_OEDEMA = 2
LABEL_ENHANCING = 4

_MAX_PLACEMENT_TRIES = 300
_MAX_SHAPE_TRIES = 8
_FIELD_CLIP = 1.5


@dataclass(frozen=True)
class TumourParams:
    """What was drawn for one tumour (kept in the manifest to explain a case).

    Attributes
    ----------
    centre_lps : tuple of float
        Centre of the ellipsoid, patient LPS mm.
    radii_mm : tuple of float
        Semi-axes of the enhancing surface before deformation.
    rim_mm : float
        Nominal thickness of the enhancing rim.
    oedema_extent : float
        How far oedema reaches in white matter, in multiples of the tumour radius.
    deformation : float
        Amplitude of the surface deformation (relative).
    """

    centre_lps: tuple[float, float, float]
    radii_mm: tuple[float, float, float]
    rim_mm: float
    oedema_extent: float
    deformation: float


@dataclass(frozen=True)
class Tumour:
    """A tumour placed in one grid.

    Attributes
    ----------
    params : TumourParams
        What was drawn.
    labels : ndarray
        uint8 label map of the whole grid (0, 1, 2, 4).
    box : tuple of slice
        The part of the grid the partial volumes below cover.
    necrotic, enhancing, oedema : ndarray
        float32 partial volumes (0..1) inside ``box``; they add up to at most
        the brain fraction.
    texture : ndarray
        float32 smooth field (zero mean, unit variance) inside ``box`` for
        tumour heterogeneity.
    """

    params: TumourParams
    labels: np.ndarray
    box: tuple[slice, slice, slice]
    necrotic: np.ndarray
    enhancing: np.ndarray
    oedema: np.ndarray
    texture: np.ndarray

    @property
    def whole(self) -> np.ndarray:
        """Partial volume of the whole tumour (all three compartments) inside ``box``."""
        return self.necrotic + self.enhancing + self.oedema


def grow_tumour(rng: np.random.Generator, grid: Grid, tissues: dict[str, np.ndarray]) -> Tumour:
    """Draw a tumour and place it in the white matter of one case.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every random choice.
    grid : Grid
        The case's grid.
    tissues : dict of str to ndarray
        Tissue fractions on ``grid`` (``gm``, ``wm``, ``csf``, ``brain``).

    Returns
    -------
    Tumour

    Raises
    ------
    RuntimeError
        When no tumour with all three compartments fits: the grid is too
        coarse or does not cover the brain.
    """
    coarsest = max(grid.spacing)
    for attempt in range(_MAX_SHAPE_TRIES):
        params = _draw_params(rng, grid, tissues, coarsest)
        tumour = _rasterise(rng, grid, tissues, params, coarsest)
        counts = np.bincount(tumour.labels[tumour.box].ravel(), minlength=5)
        if all(counts[v] >= 2 for v in (LABEL_NECROTIC, LABEL_OEDEMA, LABEL_ENHANCING)):
            logger.debug("tumour placed after %d attempt(s): %s", attempt + 1, params)
            return tumour
    raise RuntimeError(
        f"could not draw a tumour with necrosis, enhancing rim and oedema on a grid of "
        f"{grid.shape} voxels at {grid.spacing} mm; use a finer grid (voxels of 4 mm or less) "
        f"that covers the brain"
    )


def _draw_params(
    rng: np.random.Generator, grid: Grid, tissues: dict[str, np.ndarray], coarsest: float
) -> tuple[TumourParams, np.ndarray]:
    """Random size and shape (with the ellipsoid's rotation); a centre deep in white matter."""
    rim = max(rng.uniform(2.0, 6.0), 1.5 * coarsest)
    core_min = max(3.0, 1.5 * coarsest)
    radius = rng.uniform(max(10.0, rim + core_min + 2.0), max(22.0, rim + core_min + 6.0))
    radii = radius * rng.uniform(0.8, 1.2, size=3)
    deformation = rng.uniform(0.06, 0.2)
    extent = rng.uniform(1.3, 2.1)
    rotation = _random_rotation(rng)
    candidates = np.flatnonzero((tissues["wm"] >= 0.6) & (tissues["brain"] >= 0.99))
    if candidates.size == 0:
        raise RuntimeError(
            f"the grid {grid.shape} at {grid.spacing} mm holds no white matter: "
            "it must cover the brain"
        )
    directions = _unit_directions()
    for _ in range(_MAX_PLACEMENT_TRIES):
        voxel = np.array(np.unravel_index(rng.choice(candidates), grid.shape))
        centre = np.asarray(grid.origin_lps) + voxel * np.asarray(grid.spacing)
        surface = centre + (directions * radii * (1.0 + 1.5 * deformation) * 1.1) @ rotation.T
        if _all_in_brain(surface, grid, tissues["brain"]):
            break
    else:
        raise RuntimeError(
            f"found no place in the brain for a tumour of radius {radius:.0f} mm on grid "
            f"{grid.shape} at {grid.spacing} mm; the grid must cover the whole brain"
        )
    return TumourParams(
        centre_lps=tuple(float(v) for v in centre),  # type: ignore[arg-type]
        radii_mm=tuple(float(v) for v in radii),  # type: ignore[arg-type]
        rim_mm=float(rim),
        oedema_extent=float(extent),
        deformation=float(deformation),
    ), rotation


def _rasterise(
    rng: np.random.Generator,
    grid: Grid,
    tissues: dict[str, np.ndarray],
    drawn: tuple[TumourParams, np.ndarray],
    coarsest: float,
) -> Tumour:
    """Partial volumes and labels of one drawn tumour, computed in a box around it."""
    params, rotation = drawn
    radii = np.asarray(params.radii_mm)
    radius = float(np.cbrt(np.prod(radii)))
    reach = radii.max() * params.oedema_extent / (1.0 - _FIELD_CLIP * params.deformation) + 3.0
    box = _box(grid, np.asarray(params.centre_lps), reach)
    axes = [grid.axis_mm(a)[box[a]] for a in range(3)]
    brain = tissues["brain"][box]
    wm = tissues["wm"][box]
    csf = np.minimum(tissues["csf"][box], brain)

    rho = _ellipsoid_radius(axes, np.asarray(params.centre_lps), rotation, radii)
    length = radius * rng.uniform(0.5, 0.9)
    shape_field = np.clip(smooth_field(rng, axes, length), -_FIELD_CLIP, _FIELD_CLIP)
    core_field = np.clip(smooth_field(rng, axes, 0.7 * length), -_FIELD_CLIP, _FIELD_CLIP)
    oedema_field = np.clip(smooth_field(rng, axes, 1.3 * length), -_FIELD_CLIP, _FIELD_CLIP)
    texture = smooth_field(rng, axes, max(3.0, 0.3 * radius))

    a = params.deformation
    surface = rho * (1.0 + a * shape_field)
    core_level = rho * (1.0 + a * shape_field + 0.5 * a * core_field)
    width = (0.5 + 0.25 * coarsest) / radius  # partial-volume ramp, in units of the radius
    f_core = _ramp((1.0 - surface) / width) * brain
    necrotic_radius = 1.0 - params.rim_mm / radius
    f_necrotic = _ramp((necrotic_radius - core_level) / width) * f_core
    reach_wm = params.oedema_extent * (0.55 + 0.45 * wm) * (1.0 + 0.5 * a * oedema_field)
    f_whole = np.maximum(_ramp((reach_wm - surface) / (2.0 * width)) * (brain - csf), f_core)

    core = f_core >= 0.5
    # One voxel of enhancing rim at least between the necrotic core and anything else.
    necrotic_label = (f_necrotic >= 0.5) & ndi.binary_erosion(
        core, structure=np.ones((3, 3, 3), bool), border_value=0
    )
    f_necrotic = np.where(necrotic_label, f_necrotic, 0.0).astype(np.float32)
    box_labels = np.zeros(core.shape, np.uint8)
    box_labels[(f_whole >= 0.5) & ~core] = LABEL_OEDEMA
    box_labels[core] = LABEL_ENHANCING
    box_labels[necrotic_label] = LABEL_NECROTIC
    labels = np.zeros(grid.shape, np.uint8)
    labels[box] = box_labels
    return Tumour(
        params=params,
        labels=labels,
        box=box,
        necrotic=f_necrotic,
        enhancing=(f_core - f_necrotic).astype(np.float32),
        oedema=(f_whole - f_core).astype(np.float32),
        texture=texture,
    )


def _ramp(x: np.ndarray) -> np.ndarray:
    """Logistic step from 0 to 1 (0.5 at x = 0): a soft, partial-volume edge."""
    return (0.5 * (1.0 + np.tanh(0.5 * np.clip(x, -40.0, 40.0)))).astype(np.float32)


def _ellipsoid_radius(
    axes: list[np.ndarray], centre: np.ndarray, rotation: np.ndarray, radii: np.ndarray
) -> np.ndarray:
    """Normalised ellipsoid radius (1 on the surface) of every voxel of the box."""
    d = [(ax - c).astype(np.float32) for ax, c in zip(axes, centre, strict=True)]
    rho2 = np.zeros((len(d[0]), len(d[1]), len(d[2])), np.float32)
    for e in range(3):  # component along the ellipsoid's own axis e
        r = rotation[:, e] / radii[e]
        comp = (
            (r[0] * d[0])[:, None, None]
            + (r[1] * d[1])[None, :, None]
            + (r[2] * d[2])[None, None, :]
        )
        rho2 += comp * comp
    return np.sqrt(rho2)


def _box(grid: Grid, centre: np.ndarray, reach_mm: float) -> tuple[slice, slice, slice]:
    """Slices of the grid covering a cube of half-side ``reach_mm`` around ``centre``."""
    out = []
    for a in range(3):
        lo = math.floor((centre[a] - reach_mm - grid.origin_lps[a]) / grid.spacing[a])
        hi = math.ceil((centre[a] + reach_mm - grid.origin_lps[a]) / grid.spacing[a]) + 1
        out.append(slice(max(lo, 0), min(hi, grid.shape[a])))
    return tuple(out)  # type: ignore[return-value]


def _all_in_brain(points_lps: np.ndarray, grid: Grid, brain: np.ndarray) -> bool:
    """Whether every point falls in a grid voxel that is mostly brain."""
    idx = np.rint((points_lps - np.asarray(grid.origin_lps)) / np.asarray(grid.spacing))
    idx = idx.astype(int)
    inside = np.all((idx >= 0) & (idx < np.asarray(grid.shape)), axis=1)
    if not inside.all():
        return False
    return bool(np.all(brain[idx[:, 0], idx[:, 1], idx[:, 2]] >= 0.5))


def _unit_directions() -> np.ndarray:
    """The 26 directions to the neighbours of a voxel, normalised."""
    grid = np.array(
        [
            (x, y, z)
            for x in (-1, 0, 1)
            for y in (-1, 0, 1)
            for z in (-1, 0, 1)
            if (x, y, z) != (0, 0, 0)
        ],
        dtype=float,
    )
    return grid / np.linalg.norm(grid, axis=1, keepdims=True)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniformly distributed 3-D rotation matrix (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q
