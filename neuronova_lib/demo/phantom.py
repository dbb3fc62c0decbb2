"""One synthetic BraTS-style case: four co-registered MR channels and a label map.

Built deterministically from ``(seed, index)``: the same pair always gives
the same arrays, and case ``index`` does not depend on how many other cases
are made.

Pixel format
------------
Every channel is a ``uint16`` array whose values lie in 0..4095 (12 bits
stored in 16, as many MR scanners write them); the DICOM writer stores
these exact values with BitsStored 12 and PixelRepresentation 0, and the
NIfTI files hold the same ``uint16`` arrays. Cast to float before any maths.

Array layout: ``vol[i, j, k]`` with i → patient left, j → posterior,
k → superior (see :mod:`neuronova_lib.demo.geometry`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from .anatomy import aligned_grid, brain_centre_lps, sample_anatomy
from .channels import ANATOMY_TISSUES, CHANNELS, ChannelSpec
from .fields import bias_field
from .geometry import Grid
from .tumour import LABEL_ENHANCING, LABEL_NECROTIC, LABEL_OEDEMA, Tumour, TumourParams, grow_tumour

logger = logging.getLogger(__name__)

#: BraTS grid: 240 × 240 × 155 voxels of 1 mm.
BRATS_SHAPE: tuple[int, int, int] = (240, 240, 155)
BRATS_SPACING: tuple[float, float, float] = (1.0, 1.0, 1.0)
#: Small grid for fast tests: the same field of view in 64 × 64 × 40 voxels.
SMALL_SHAPE: tuple[int, int, int] = (64, 64, 40)
SMALL_SPACING: tuple[float, float, float] = (3.75, 3.75, 3.875)
#: Named sizes for the command line.
SIZES: Mapping[str, tuple[tuple[int, int, int], tuple[float, float, float]]] = MappingProxyType(
    {"brats": (BRATS_SHAPE, BRATS_SPACING), "small": (SMALL_SHAPE, SMALL_SPACING)}
)

#: Largest stored value (12 bits).
MAX_VALUE = 4095
#: Tumour contrast range: 1 is the nominal contrast of the channel table, 0.25 barely visible.
CONTRAST_RANGE: tuple[float, float] = (0.25, 1.0)
#: Rician noise level (fraction of white matter's signal) and bias field strength.
NOISE_RANGE: tuple[float, float] = (0.012, 0.035)
BIAS_STRENGTH = 0.08


@dataclass(frozen=True)
class Appearance:
    """How a set of cases looks: the knobs that make a harder (or easier) test set.

    A model trained on one appearance and evaluated on another shows how far it
    leans on a shortcut (tumour brightness, a clean background): the training
    set should span a wide contrast range, and a hard set with fainter tumours,
    more noise and a stronger bias field is reported apart.

    Parameters
    ----------
    contrast_range : tuple of float
        Each case draws its tumour contrast uniformly from this range
        (1 = the channel table's nominal contrast, 0 = tumour looks like white matter).
    noise_range : tuple of float
        Each channel draws its Rician noise sigma from this range (relative to
        the nominal signal, white matter on T1 ≈ 0.8).
    bias_strength : float
        Standard deviation of the bias field's polynomial coefficients
        (0.08 ≈ ±15% across the field of view).
    """

    contrast_range: tuple[float, float] = CONTRAST_RANGE
    noise_range: tuple[float, float] = NOISE_RANGE
    bias_strength: float = BIAS_STRENGTH

    def __post_init__(self) -> None:
        for name in ("contrast_range", "noise_range"):
            low, high = getattr(self, name)
            if not 0.0 <= low <= high:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got "
                                 f"{getattr(self, name)!r}")
        if not 0.0 <= self.bias_strength <= 1.0:
            raise ValueError(f"bias_strength must lie in 0..1, got {self.bias_strength!r}")


#: The generator's default look (the ``neuronova demo-data`` studies).
DEFAULT_APPEARANCE = Appearance()


@dataclass(frozen=True)
class SyntheticCase:
    """One synthetic case held in memory.

    Attributes
    ----------
    seed, index : int
        What the case was built from.
    grid : Grid
        Voxel grid and its place in patient space.
    channels : Mapping[str, ndarray]
        ``t1``, ``t1c``, ``t2``, ``flair`` → uint16 arrays (0..4095) of ``grid.shape``.
    labels : ndarray
        uint8 BraTS label map: 0 background, 1 necrotic core, 2 oedema, 4 enhancing.
    tissues : Mapping[str, ndarray]
        float32 fractions of normal tissue after the tumour displaced it
        (``gm``, ``wm``, ``csf``, ``bone``, ``scalp``) and ``brain`` (brain-mask fraction).
    tumour : TumourParams
        Size, place and shape parameters of the tumour.
    tumour_contrast : float
        How far the tumour's signal departs from white matter's (1 = nominal).
    """

    seed: int
    index: int
    grid: Grid
    channels: Mapping[str, np.ndarray]
    labels: np.ndarray
    tissues: Mapping[str, np.ndarray]
    tumour: TumourParams
    tumour_contrast: float

    @property
    def brain_mask(self) -> np.ndarray:
        """Voxels that are mostly brain (bool)."""
        return self.tissues["brain"] >= 0.5

    def label_volumes_ml(self) -> dict[str, float]:
        """Volume of each tumour compartment in millilitres."""
        voxel_ml = float(np.prod(self.grid.spacing)) / 1000.0
        counts = np.bincount(self.labels.ravel(), minlength=5)
        return {
            "necrotic": round(float(counts[LABEL_NECROTIC]) * voxel_ml, 3),
            "oedema": round(float(counts[LABEL_OEDEMA]) * voxel_ml, 3),
            "enhancing": round(float(counts[LABEL_ENHANCING]) * voxel_ml, 3),
        }


def build_case(
    seed: int,
    index: int = 1,
    shape: tuple[int, int, int] = BRATS_SHAPE,
    spacing: tuple[float, float, float] = BRATS_SPACING,
    skull_stripped: bool = False,
    appearance: Appearance = DEFAULT_APPEARANCE,
) -> SyntheticCase:
    """Build one synthetic brain-tumour case.

    Parameters
    ----------
    seed : int
        Non-negative seed of the whole data set.
    index : int
        Case number within the data set (1-based by convention); with ``seed``
        it fixes every random choice of the case: head position (shifted by up
        to 5 mm), tumour, contrasts, bias field and noise.
    shape : tuple of int
        Grid size ``(columns, rows, slices)``; default the BraTS grid.
    spacing : tuple of float
        Voxel size in mm; default 1 mm. Grids with 1 mm voxels copy the
        template exactly; other spacings resample it (anti-aliased, trilinear).
    skull_stripped : bool
        Leave out skull and scalp, as in the BraTS challenge data.
    appearance : Appearance
        Tumour contrast, noise and bias field ranges; the default keeps the
        bytes of earlier releases for the same seed.

    Returns
    -------
    SyntheticCase

    Raises
    ------
    ValueError
        For a negative seed or index, or a malformed shape or spacing.
    RuntimeError
        When the grid is too coarse or too small to hold a brain and a tumour.
    """
    _check_seed(seed, index)
    started = time.perf_counter()
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(6)]
    # Heads are never in exactly the same place: shift by up to 5 mm (2 mm along z,
    # where the BraTS field of view is as tall as the brain).
    jitter = streams[0].integers(-5, 6, size=3) * np.array([1.0, 1.0, 0.4])
    grid = aligned_grid(shape, spacing, brain_centre_lps() + jitter)
    tissues = sample_anatomy(grid)
    if skull_stripped:
        tissues["bone"][:] = 0.0
        tissues["scalp"][:] = 0.0
        # Keep CSF inside the brain mask, drop the CSF shell built outside it.
        tissues["csf"] *= np.minimum(tissues["brain"] * 4.0, 1.0)
    tumour = grow_tumour(streams[1], grid, tissues)
    _displace_normal_tissue(tissues, tumour)
    contrast = float(streams[1].uniform(*appearance.contrast_range))
    channels = {
        spec.key: _render_channel(spec, tissues, tumour, contrast, rng, appearance)
        for spec, rng in zip(CHANNELS, streams[2:], strict=True)
    }
    logger.debug(
        "case seed=%d index=%d built in %.2f s", seed, index, time.perf_counter() - started
    )
    return SyntheticCase(
        seed=seed,
        index=index,
        grid=grid,
        channels=MappingProxyType(channels),
        labels=tumour.labels,
        tissues=MappingProxyType(tissues),
        tumour=tumour.params,
        tumour_contrast=contrast,
    )


def _check_seed(seed: int, index: int) -> None:
    """Seeds end up in PatientID (at most 64 characters): keep them to 64 bits."""
    for name, value in (("seed", seed), ("index", index)):
        valid = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        if not valid or not 0 <= value < 2**64:
            raise ValueError(f"{name} must be an integer in 0 .. 2**64 - 1, got {value!r}")


def _displace_normal_tissue(tissues: dict[str, np.ndarray], tumour: Tumour) -> None:
    """Remove the tumour's volume from the brain tissues it grew in, in place."""
    box = tumour.box
    brain_tissue = tissues["gm"][box] + tissues["wm"][box] + tissues["csf"][box]
    keep = np.clip(1.0 - tumour.whole / np.maximum(brain_tissue, 1e-6), 0.0, 1.0)
    for name in ("gm", "wm", "csf"):
        tissues[name][box] *= keep


def _render_channel(
    spec: ChannelSpec,
    tissues: Mapping[str, np.ndarray],
    tumour: Tumour,
    contrast: float,
    rng: np.random.Generator,
    appearance: Appearance,
) -> np.ndarray:
    """Signal of one channel: tissue mix, tumour, bias field, Rician noise, 12-bit scale."""
    value = {t: spec.intensities[t] * rng.uniform(0.94, 1.06) for t in spec.intensities}
    signal = np.zeros(tumour.labels.shape, np.float32)
    for tissue in ANATOMY_TISSUES:
        signal += np.float32(value[tissue]) * tissues[tissue]
    # Tumour signal departs from white matter's by a case-wide contrast factor.
    texture = 1.0 + 0.08 * tumour.texture
    for name, fraction in (
        ("necrotic", tumour.necrotic),
        ("enhancing", tumour.enhancing),
        ("oedema", tumour.oedema),
    ):
        level = value["wm"] + contrast * (value[name] - value["wm"])
        signal[tumour.box] += (np.float32(level) * fraction) * texture
    signal *= bias_field(rng, signal.shape, strength=appearance.bias_strength)
    scale = rng.uniform(2300.0, 2900.0)
    sigma = np.float32(rng.uniform(*appearance.noise_range))
    real = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    magnitude = np.sqrt(real * real + imag * imag)
    magnitude *= np.float32(scale)
    np.rint(magnitude, out=magnitude)
    np.clip(magnitude, 0, MAX_VALUE, out=magnitude)
    return magnitude.astype(np.uint16)
