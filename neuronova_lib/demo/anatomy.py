"""Normal head anatomy for the synthetic cases, from nilearn's MNI152 templates.

nilearn ships the templates inside its package, so this works offline. They
are exactly left-right symmetric (the symmetric MNI152 2009 template), so the
healthy anatomy is too; only the tumour makes a case asymmetric. They are
skull-stripped (nothing outside the brain mask), so the layers outside
the brain (a thin CSF space, skull, scalp) are built here as shells at a
fixed distance from the brain mask.

Everything is returned as tissue *fractions* (partial volumes) that add up
to at most 1 per voxel; the remainder is air. Fractions are computed once on
the template's 1 mm grid and cached, then resampled to each case's grid:
exactly (nearest voxel, no interpolation) when the case grid is a 1 mm grid
aligned with the template, otherwise with a Gaussian anti-alias filter and
trilinear sampling.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
from scipy import ndimage as ndi

from .channels import ANATOMY_TISSUES
from .geometry import LPS_TO_RAS, Grid

logger = logging.getLogger(__name__)

# Shells outside the brain mask, in mm from the brain surface: (tissue, inner, outer).
_SHELLS: tuple[tuple[str, float, float], ...] = (
    ("csf", 0.0, 1.5),
    ("bone", 1.5, 7.0),
    ("scalp", 7.0, 12.0),
)


@functools.lru_cache(maxsize=1)
def template_fractions() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Tissue fractions on the MNI152 1 mm grid and that grid's RAS affine.

    Returns
    -------
    fractions : dict of str to ndarray
        ``gm``, ``wm``, ``csf``, ``bone``, ``scalp`` (float32, template index order)
        plus ``brain`` (the brain mask as 0/1 float32).
    affine : ndarray
        The template's 4×4 RAS affine.

    Raises
    ------
    RuntimeError
        When nilearn cannot load its bundled templates.
    """
    try:
        from nilearn import datasets
    except ImportError as exc:  # pragma: no cover - nilearn is a hard dependency
        raise RuntimeError(
            "the demo data are built on nilearn's MNI152 templates: "
            "install it with `pip install 'nilearn>=0.10.3'`"
        ) from exc

    mask_img = datasets.load_mni152_brain_mask(resolution=1)
    brain = np.asarray(mask_img.dataobj) > 0
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).dataobj, dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).dataobj, dtype=np.float32)
    gm = np.where(brain, np.clip(gm, 0.0, 1.0), 0.0).astype(np.float32)
    wm = np.where(brain, np.clip(wm, 0.0, 1.0), 0.0).astype(np.float32)
    total = gm + wm
    over = total > 1.0
    gm[over] /= total[over]
    wm[over] /= total[over]
    csf = np.where(brain, 1.0 - gm - wm, 0.0).astype(np.float32)

    fractions = {
        "gm": gm,
        "wm": wm,
        "csf": csf,
        "bone": np.zeros_like(gm),
        "scalp": np.zeros_like(gm),
    }
    distance = _distance_outside(brain)
    for tissue, inner, outer in _SHELLS:
        shell = np.clip(distance - inner, 0.0, 1.0) - np.clip(distance - outer, 0.0, 1.0)
        fractions[tissue] += shell.astype(np.float32)
    fractions["brain"] = brain.astype(np.float32)
    logger.debug("loaded MNI152 templates %s", brain.shape)
    return fractions, np.asarray(mask_img.affine, dtype=float)


def _distance_outside(mask: np.ndarray) -> np.ndarray:
    """Distance (mm) from each voxel outside ``mask`` to the mask; 0 inside.

    An exact distance transform of the 1 mm template costs ~1.5 s; computed on
    a 2 mm grid and upsampled linearly it costs ~0.3 s and is within 1 mm,
    plenty for shells 5 mm thick.
    """
    pad = [(0, (-n) % 2) for n in mask.shape]
    padded = np.pad(mask, pad)
    nx, ny, nz = (n // 2 for n in padded.shape)
    coarse = padded.reshape(nx, 2, ny, 2, nz, 2).mean(axis=(1, 3, 5)) >= 0.5
    coarse_distance = ndi.distance_transform_edt(~coarse, sampling=2.0).astype(np.float32)
    fine = ndi.zoom(coarse_distance, 2, order=1, grid_mode=True, mode="nearest")
    fine = fine[: mask.shape[0], : mask.shape[1], : mask.shape[2]]
    return np.where(mask, 0.0, fine).astype(np.float32)


def brain_centre_lps() -> np.ndarray:
    """LPS position (mm) of the centre of the template brain's bounding box."""
    fractions, affine = template_fractions()
    brain = fractions["brain"] > 0
    lo = np.array([np.flatnonzero(brain.any(axis=_others(a)))[0] for a in range(3)])
    hi = np.array([np.flatnonzero(brain.any(axis=_others(a)))[-1] for a in range(3)])
    centre_ras = affine @ np.append((lo + hi) / 2.0, 1.0)
    return (LPS_TO_RAS @ centre_ras)[:3]


def aligned_grid(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    centre_lps: np.ndarray | tuple[float, float, float],
) -> Grid:
    """A grid centred near ``centre_lps`` whose origin lies on the template's voxel lattice.

    Moving the origin by at most half a template voxel makes a 1 mm grid a
    plain copy of template voxels (exact and fast, no interpolation).
    """
    grid = Grid.centred(shape, spacing, centre_lps)
    _, affine = template_fractions()
    lattice = np.linalg.inv(affine) @ LPS_TO_RAS @ np.append(grid.origin_lps, 1.0)
    snapped = LPS_TO_RAS @ affine @ np.append(np.round(lattice[:3]), 1.0)
    return Grid(grid.shape, grid.spacing, tuple(float(v) for v in snapped[:3]))  # type: ignore[arg-type]


def _others(axis: int) -> tuple[int, ...]:
    return tuple(a for a in range(3) if a != axis)


def sample_anatomy(grid: Grid) -> dict[str, np.ndarray]:
    """Tissue fractions of the template resampled onto ``grid``.

    Parameters
    ----------
    grid : Grid
        The case's voxel grid; voxels outside the template read as air.

    Returns
    -------
    dict of str to ndarray
        One float32 array of ``grid.shape`` per tissue in
        :data:`~neuronova_lib.demo.channels.ANATOMY_TISSUES`, plus ``brain``
        (fraction of the voxel inside the brain mask).
    """
    fractions, template_affine = template_fractions()
    # grid voxel -> LPS -> RAS -> template voxel; diagonal since both grids are axis-aligned.
    to_template = np.linalg.inv(template_affine) @ LPS_TO_RAS @ grid.lps_affine
    scale = np.diag(to_template)[:3]
    offset = to_template[:3, 3]
    if not np.allclose(to_template[:3, :3], np.diag(scale)):
        raise ValueError("the case grid must be axis-aligned with the template")  # pragma: no cover
    exact = np.allclose(np.abs(scale), 1.0) and np.allclose(offset, np.round(offset))
    sigma = tuple(max(0.0, (abs(s) - 1.0) / 2.0) for s in scale)
    out = {}
    for name in (*ANATOMY_TISSUES, "brain"):
        source = fractions[name] if exact else _smoothed(name, sigma)
        out[name] = ndi.affine_transform(
            source,
            np.round(scale) if exact else scale,
            offset=np.round(offset) if exact else offset,
            output_shape=grid.shape,
            order=0 if exact else 1,
            mode="constant",
            cval=0.0,
            prefilter=False,
        ).astype(np.float32, copy=False)
    return out


@functools.lru_cache(maxsize=12)
def _smoothed(name: str, sigma: tuple[float, ...]) -> np.ndarray:
    """Template fraction map low-pass filtered before downsampling (skimage's rule)."""
    source = template_fractions()[0][name]
    if not any(sigma):
        return source
    return ndi.gaussian_filter(source, sigma=sigma, mode="constant").astype(np.float32)
