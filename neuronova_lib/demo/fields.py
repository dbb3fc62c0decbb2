"""Cheap smooth random fields: tumour shape, texture and the MR bias field.

Cubic zoom of random noise to a large grid is slow (FINDINGS: 7 s to 96³), so
fields are built from things that are cheap to evaluate:

* :func:`smooth_field` samples a Gaussian random field with random Fourier
  features (a sum of cosines with Gaussian-distributed frequencies) on a
  coarse grid a quarter of the correlation length apart, then upsamples it
  linearly: smooth at the scale that matters, ~tens of ms for a whole box.
* :func:`bias_field` is the exponential of a random second-order polynomial
  of the normalised coordinates, built from broadcast 1-D and 2-D terms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi


def smooth_field(
    rng: np.random.Generator,
    axes_mm: Sequence[np.ndarray],
    length_mm: float,
    terms: int = 24,
) -> np.ndarray:
    """Smooth zero-mean, unit-variance random field on a rectilinear grid.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness (the field is a deterministic function of its state).
    axes_mm : sequence of three 1-D arrays
        Increasing coordinates (mm) of the voxel centres along each axis.
    length_mm : float
        Correlation length: the covariance is ``exp(-r² / (2 length²))``.
    terms : int
        Number of random Fourier features; more is closer to Gaussian.

    Returns
    -------
    ndarray
        float32 array of shape ``(len(a) for a in axes_mm)``.
    """
    if length_mm <= 0:
        raise ValueError(f"correlation length must be positive, got {length_mm} mm")
    frequencies = rng.normal(0.0, 1.0 / length_mm, size=(terms, 3))
    phases = rng.uniform(0.0, 2.0 * math.pi, size=terms)
    fine_shape = tuple(len(a) for a in axes_mm)
    coarse_axes = [_coarse_axis(np.asarray(a, dtype=float), length_mm / 4.0) for a in axes_mm]
    x, y, z = (c.astype(np.float64) for c in coarse_axes)
    coarse = np.zeros((len(x), len(y), len(z)))
    for (fx, fy, fz), phase in zip(frequencies, phases, strict=True):
        coarse += np.cos(
            (fx * x)[:, None, None] + (fy * y)[None, :, None] + (fz * z)[None, None, :] + phase
        )
    coarse *= math.sqrt(2.0 / terms)
    zoom = [f / c for f, c in zip(fine_shape, coarse.shape, strict=True)]
    fine = ndi.zoom(coarse.astype(np.float32), zoom, order=1, grid_mode=False, mode="nearest")
    if fine.shape != fine_shape:  # pragma: no cover - zoom rounds shapes; guard anyway
        raise RuntimeError(f"smooth field has shape {fine.shape}, expected {fine_shape}")
    return fine


def _coarse_axis(axis: np.ndarray, step: float) -> np.ndarray:
    """Sample points spanning ``axis`` about ``step`` apart, never denser than ``axis`` itself."""
    if len(axis) < 2:
        return axis
    count = min(len(axis), max(2, math.ceil((axis[-1] - axis[0]) / step) + 1))
    return np.linspace(axis[0], axis[-1], count)


def bias_field(rng: np.random.Generator, shape: tuple[int, ...], strength: float) -> np.ndarray:
    """Smooth multiplicative intensity inhomogeneity, like a receive coil's.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the polynomial coefficients.
    shape : tuple of int
        Grid shape (three axes).
    strength : float
        Standard deviation of each polynomial coefficient; 0.1 gives a field
        varying by roughly ±20% across the field of view.

    Returns
    -------
    ndarray
        float32 array of ``shape``, positive, about 1 on average.
    """
    if len(shape) != 3:
        raise ValueError(f"bias field needs a 3-D shape, got {shape}")
    x, y, z = (np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape)
    c = rng.normal(0.0, strength, size=9).astype(np.float32)
    log_field = (
        (c[0] * x + c[3] * x * x)[:, None, None]
        + (c[1] * y + c[4] * y * y)[None, :, None]
        + (c[2] * z + c[5] * z * z)[None, None, :]
        + (c[6] * np.outer(x, y))[:, :, None]
        + (c[7] * np.outer(x, z))[:, None, :]
        + (c[8] * np.outer(y, z))[None, :, :]
    )
    return np.exp(log_field, dtype=np.float32)
