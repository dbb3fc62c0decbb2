"""Voxel grid of a synthetic case and its mapping to patient space.

One convention everywhere (phantom, DICOM, NIfTI, tests), so that the same
voxel lands on the same patient point in every file:

* A volume is a numpy array indexed ``vol[i, j, k]`` with shape
  ``(columns, rows, slices)``, like BraTS' NIfTI files.
* ``i`` grows towards the patient's **left**, ``j`` towards **posterior**,
  ``k`` towards **superior**: the array axes follow DICOM's LPS patient axes.
* DICOM: slice ``k`` is one axial instance whose pixel array (``Rows`` ×
  ``Columns``) is ``vol[:, :, k].T``; ``ImageOrientationPatient`` is
  ``[1, 0, 0, 0, 1, 0]``, ``ImagePositionPatient`` of slice ``k`` is
  ``origin_lps + k * slice_spacing * (0, 0, 1)``, and
  ``PixelSpacing = [row spacing (j), column spacing (i)]``.
* NIfTI stores the same array with a RAS affine: RAS and LPS differ by the
  sign of x and y, so ``ras_affine = diag(-1, -1, 1, 1) @ lps_affine``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: DICOM ImageOrientationPatient of every slice: rows run towards L, columns towards P.
AXIAL_ORIENTATION: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

#: Multiply an LPS point (or affine) by this to get RAS, and vice versa.
LPS_TO_RAS: np.ndarray = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Grid:
    """A regular axial voxel grid placed in patient (LPS) space.

    Parameters
    ----------
    shape : tuple of int
        ``(columns, rows, slices)``: voxels along i (→ L), j (→ P), k (→ S).
    spacing : tuple of float
        Voxel size in mm along i, j and k.
    origin_lps : tuple of float
        Patient LPS position (mm) of the centre of voxel ``(0, 0, 0)``.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin_lps: tuple[float, float, float]

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or any(int(n) < 1 for n in self.shape):
            raise ValueError(f"grid shape must be three positive integers, got {self.shape!r}")
        if len(self.spacing) != 3 or any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise ValueError(
                f"grid spacing must be three positive finite mm values, got {self.spacing!r}"
            )

    @property
    def lps_affine(self) -> np.ndarray:
        """4×4 matrix taking voxel ``(i, j, k, 1)`` to patient LPS mm."""
        affine = np.diag([*map(float, self.spacing), 1.0])
        affine[:3, 3] = self.origin_lps
        return affine

    @property
    def ras_affine(self) -> np.ndarray:
        """4×4 NIfTI affine (RAS mm) describing the same voxels as :attr:`lps_affine`."""
        return LPS_TO_RAS @ self.lps_affine

    def slice_position(self, k: int) -> tuple[float, float, float]:
        """DICOM ImagePositionPatient (LPS mm) of the first pixel of slice ``k``."""
        x, y, z = self.origin_lps
        return (float(x), float(y), float(z + k * self.spacing[2]))

    def centre_lps(self) -> np.ndarray:
        """LPS position of the centre of the grid (mm)."""
        half = (np.asarray(self.shape, dtype=float) - 1.0) / 2.0
        return np.asarray(self.origin_lps) + half * np.asarray(self.spacing)

    def axis_mm(self, axis: int) -> np.ndarray:
        """LPS coordinate (mm) of every voxel centre along one axis."""
        n = self.shape[axis]
        return self.origin_lps[axis] + np.arange(n, dtype=np.float64) * self.spacing[axis]

    @classmethod
    def centred(
        cls,
        shape: tuple[int, int, int],
        spacing: tuple[float, float, float],
        centre_lps: np.ndarray | tuple[float, float, float],
    ) -> Grid:
        """A grid of the given size whose centre lies at ``centre_lps``."""
        shape_t = tuple(int(n) for n in shape)
        spacing_t = tuple(float(s) for s in spacing)
        half = (np.asarray(shape_t, dtype=float) - 1.0) / 2.0
        origin = np.asarray(centre_lps, dtype=float) - half * np.asarray(spacing_t)
        return cls(shape_t, spacing_t, tuple(float(v) for v in origin))  # type: ignore[arg-type]


def dicom_patient_point(
    position: tuple[float, float, float] | np.ndarray,
    orientation: tuple[float, ...] | np.ndarray,
    pixel_spacing: tuple[float, float] | np.ndarray,
    row: int,
    column: int,
) -> np.ndarray:
    """Patient LPS point (mm) of pixel ``(row, column)`` of one DICOM image.

    Written from the DICOM standard's equation (PS3.3 C.7.6.2.1.1), so tests
    can check the writer against the standard rather than against itself.
    """
    ipp = np.asarray(position, dtype=float)
    iop = np.asarray(orientation, dtype=float)
    row_spacing, column_spacing = (float(v) for v in pixel_spacing)
    along_row, along_column = iop[:3], iop[3:]
    return ipp + column * column_spacing * along_row + row * row_spacing * along_column
