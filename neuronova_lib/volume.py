"""A DICOM series as a 3-D (or 4-channel) numpy volume with its geometry.

Conventions (the same as the demo data and NIfTI files NeuroNova writes):

* ``array[i, j, k]`` (shape ``(columns, rows, slices)``): ``i`` runs along a
  DICOM row (the column index, direction ``ImageOrientationPatient[:3]``),
  ``j`` down the columns (the row index, direction ``ImageOrientationPatient[3:]``),
  ``k`` over the slices **sorted by their position along the slice normal**
  ``n = row direction × column direction``. Slice ``k``'s DICOM pixel array
  (Rows × Columns) is ``array[:, :, k].T``. For the usual axial series
  (orientation ``[1, 0, 0, 0, 1, 0]``) ``i`` → patient left, ``j`` →
  posterior, ``k`` → superior, like BraTS' NIfTI files.
* A 4-channel volume (:meth:`Client.load_study <neuronova_lib.dicomweb.client.Client.load_study>`)
  puts the channel first: ``array[c, i, j, k]`` with :attr:`Volume.channels`
  naming ``c`` (MONAI's channel-first layout).
* :attr:`Volume.affine_lps` maps voxel ``(i, j, k, 1)`` to DICOM patient
  coordinates (LPS, mm); :attr:`Volume.affine_ras` (= :attr:`Volume.affine`)
  to RAS mm, as NIfTI, nibabel and MONAI expect. They differ by the sign of
  x and y: ``affine_ras = diag(-1, -1, 1, 1) @ affine_lps``.
* Values are the stored pixel values (no rescale, no windowing, MONOCHROME1
  not inverted); :meth:`Volume.rescaled` applies RescaleSlope/Intercept.

Geometry comes from per-instance metadata in DICOM JSON (WADO-RS metadata,
or ``pydicom.Dataset.to_json_dict()``): ImagePositionPatient,
ImageOrientationPatient, PixelSpacing, Rows, Columns; enhanced multi-frame
instances are placed frame by frame from their functional groups.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: Multiply an LPS point (or affine) by this to get RAS, and back.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Attributes copied into :attr:`Volume.metadata` (from the first slice).
METADATA_KEYWORDS: tuple[str, ...] = (
    "PatientID", "PatientName", "PatientSex", "PatientAge", "PatientBirthDate",
    "StudyDate", "StudyTime", "StudyDescription", "AccessionNumber",
    "Modality", "SeriesNumber", "SeriesDescription", "ProtocolName", "BodyPartExamined",
    "Manufacturer", "ManufacturerModelName", "MagneticFieldStrength",
    "RepetitionTime", "EchoTime", "InversionTime", "FlipAngle", "SequenceName",
    "ContrastBolusAgent", "SliceThickness", "SpacingBetweenSlices", "FrameOfReferenceUID",
    "PhotometricInterpretation", "BitsAllocated", "BitsStored", "PixelRepresentation",
    "RescaleSlope", "RescaleIntercept", "RescaleType", "WindowCenter", "WindowWidth",
)


class GeometryError(ValueError):
    """The instances do not make one regular volume (the message names what is wrong)."""


# -- DICOM JSON -------------------------------------------------------------------

@lru_cache(maxsize=512)
def _tag(keyword: str) -> str:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"{keyword!r} is not a DICOM keyword")
    return f"{tag:08X}"


def dicom_json_values(item: Mapping[str, Any], keyword: str) -> list[Any]:
    """All values of ``keyword`` in one DICOM JSON dataset (``[]`` when absent or empty).

    Person names come back as their Alphabetic string.
    """
    element = item.get(_tag(keyword))
    if not element:
        return []
    values = element.get("Value") or []
    return [v.get("Alphabetic", "") if isinstance(v, dict) and element.get("vr") == "PN" else v
            for v in values]


def dicom_json_value(item: Mapping[str, Any], keyword: str, default: Any = None) -> Any:
    """The first value of ``keyword`` in a DICOM JSON dataset, or ``default``."""
    values = dicom_json_values(item, keyword)
    return values[0] if values else default


def select_metadata(item: Mapping[str, Any], keywords: Iterable[str] = METADATA_KEYWORDS) -> dict[str, Any]:
    """The attributes of :data:`METADATA_KEYWORDS` present in ``item`` (lists kept when multi-valued)."""
    selected: dict[str, Any] = {}
    for keyword in keywords:
        values = dicom_json_values(item, keyword)
        if values:
            selected[keyword] = values[0] if len(values) == 1 else list(values)
    return selected


# -- geometry -----------------------------------------------------------------------

@dataclass(frozen=True)
class SliceRef:
    """One 2-D image of a series: its instance, frame number (1-based) and position (LPS mm)."""

    sop_uid: str
    frame_number: int
    position: tuple[float, float, float]


@dataclass(frozen=True)
class SeriesGeometry:
    """Where each slice goes: :attr:`slices` in ``k`` order and the voxel → LPS affine."""

    slices: tuple[SliceRef, ...]
    affine_lps: np.ndarray
    rows: int
    columns: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(columns, rows, slices)``: the shape of :attr:`Volume.array`."""
        return (self.columns, self.rows, len(self.slices))


def reduced_geometry(geometry: SeriesGeometry, reduce: int, slice_step: int = 1
                     ) -> SeriesGeometry:
    """``geometry`` with ``reduce`` in-plane resolution levels skipped and every
    ``slice_step``-th slice kept: rows and columns ``ceil(n / 2**reduce)``, their spacing
    ``2**reduce`` times larger, the slice spacing ``slice_step`` times larger, the first
    voxel's centre where it was (reduced sample ``n`` sits on full sample ``n * 2**reduce``,
    as in JPEG 2000's resolution levels)."""
    if reduce == 0 and slice_step == 1:
        return geometry
    step = 1 << reduce
    affine = geometry.affine_lps.copy()
    affine[:3, :2] *= step  # columns i, rows j
    affine[:3, 2] *= slice_step  # slices k
    return replace(geometry, affine_lps=affine, rows=-(-geometry.rows // step),
                   columns=-(-geometry.columns // step),
                   slices=geometry.slices[::slice_step])


def one_slice(geometry: SeriesGeometry, k: int) -> SeriesGeometry:
    """``geometry`` with slice ``k`` alone: its voxel ``(i, j, 0)`` is where ``(i, j, k)``
    was, so one frame is a volume placed where it belongs (a viewer's first image)."""
    if not 0 <= k < len(geometry.slices):
        raise IndexError(f"slice {k} of a series of {len(geometry.slices)}")
    affine = geometry.affine_lps.copy()
    affine[:3, 3] = geometry.affine_lps[:3, :3] @ (0.0, 0.0, float(k)) + geometry.affine_lps[:3, 3]
    return replace(geometry, affine_lps=affine, slices=(geometry.slices[k],))


@dataclass(frozen=True)
class _Plane:
    sop_uid: str
    frame_number: int
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: np.ndarray  # (row spacing, column spacing)
    rows: int
    columns: int


def _floats(values: list[Any], n: int, what: str, sop: str) -> np.ndarray:
    if len(values) != n:
        raise GeometryError(
            f"instance {sop}: {what} must have {n} values, got {values!r}; a volume needs "
            "the position, orientation and pixel spacing of every slice"
        )
    try:
        return np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise GeometryError(f"instance {sop}: {what} is not numeric: {values!r}") from None


def _sequence_item(item: Mapping[str, Any], keyword: str) -> Mapping[str, Any] | None:
    values = dicom_json_values(item, keyword)
    return values[0] if values and isinstance(values[0], Mapping) else None


def _functional(groups: Sequence[Mapping[str, Any] | None], macro: str, keyword: str) -> list[Any]:
    """A value from the first functional group (per-frame, then shared) that has it."""
    for group in groups:
        if group is None:
            continue
        macro_item = _sequence_item(group, macro)
        if macro_item is not None:
            values = dicom_json_values(macro_item, keyword)
            if values:
                return values
    return []


def _planes(instance: Mapping[str, Any]) -> list[_Plane]:
    sop = str(dicom_json_value(instance, "SOPInstanceUID", "?"))
    rows = int(dicom_json_value(instance, "Rows", 0) or 0)
    columns = int(dicom_json_value(instance, "Columns", 0) or 0)
    if rows < 1 or columns < 1:
        raise GeometryError(f"instance {sop} has no Rows/Columns: it is not an image")
    frames = int(dicom_json_value(instance, "NumberOfFrames", 1) or 1)
    per_frame = dicom_json_values(instance, "PerFrameFunctionalGroupsSequence")
    if frames == 1 and not per_frame:
        return [_Plane(
            sop, 1,
            _floats(dicom_json_values(instance, "ImagePositionPatient"), 3, "ImagePositionPatient", sop),
            _floats(dicom_json_values(instance, "ImageOrientationPatient"), 6, "ImageOrientationPatient", sop),
            _floats(dicom_json_values(instance, "PixelSpacing"), 2, "PixelSpacing", sop),
            rows, columns,
        )]
    if len(per_frame) != frames:
        raise GeometryError(
            f"instance {sop} has {frames} frames but {len(per_frame)} per-frame functional "
            "groups: its frames cannot be placed in space"
        )
    shared = _sequence_item(instance, "SharedFunctionalGroupsSequence")
    planes = []
    for number, group in enumerate(per_frame, start=1):
        groups = (group, shared)
        planes.append(_Plane(
            sop, number,
            _floats(_functional(groups, "PlanePositionSequence", "ImagePositionPatient")
                    or dicom_json_values(instance, "ImagePositionPatient"), 3,
                    f"frame {number} ImagePositionPatient", sop),
            _floats(_functional(groups, "PlaneOrientationSequence", "ImageOrientationPatient")
                    or dicom_json_values(instance, "ImageOrientationPatient"), 6,
                    f"frame {number} ImageOrientationPatient", sop),
            _floats(_functional(groups, "PixelMeasuresSequence", "PixelSpacing")
                    or dicom_json_values(instance, "PixelSpacing"), 2,
                    f"frame {number} PixelSpacing", sop),
            rows, columns,
        ))
    return planes


def series_geometry(
    instances: Sequence[Mapping[str, Any]], *, spacing_tolerance: float = 0.01
) -> SeriesGeometry:
    """Order the slices of a series and compute its voxel → LPS affine.

    Parameters
    ----------
    instances : sequence of dict
        DICOM JSON metadata of every instance of the series, in any order.
    spacing_tolerance : float
        Largest accepted deviation of a slice step from the mean step, as a
        fraction of it (also bounds how far a slice may lie off the line).

    Returns
    -------
    SeriesGeometry

    Raises
    ------
    GeometryError
        Missing position/orientation/spacing, different sizes or orientations
        (a localiser in the series), two slices at one position (echoes, time
        points), or a gap (non-uniform spacing). The message names the slices.
    """
    planes = [plane for instance in instances for plane in _planes(instance)]
    if not planes:
        raise GeometryError("the series has no instances")
    first = planes[0]
    for plane in planes[1:]:
        if (plane.rows, plane.columns) != (first.rows, first.columns):
            raise GeometryError(
                f"instances differ in size: {first.sop_uid} is {first.rows}×{first.columns}, "
                f"{plane.sop_uid} is {plane.rows}×{plane.columns} (Rows×Columns); "
                "a volume needs one size"
            )
        if not np.allclose(plane.orientation, first.orientation, atol=1e-4):
            raise GeometryError(
                f"instances differ in ImageOrientationPatient: {first.sop_uid} "
                f"{first.orientation.tolist()} vs {plane.sop_uid} {plane.orientation.tolist()} "
                "(a localiser or a second stack in the series?)"
            )
        if not np.allclose(plane.pixel_spacing, first.pixel_spacing, rtol=1e-4, atol=1e-6):
            raise GeometryError(
                f"instances differ in PixelSpacing: {first.sop_uid} {first.pixel_spacing.tolist()} "
                f"vs {plane.sop_uid} {plane.pixel_spacing.tolist()}"
            )
    along_row = first.orientation[:3]
    along_column = first.orientation[3:]
    norms = np.linalg.norm(along_row), np.linalg.norm(along_column)
    if min(norms) < 1e-6 or abs(float(np.dot(along_row, along_column))) > 1e-3 * norms[0] * norms[1]:
        raise GeometryError(
            f"ImageOrientationPatient {first.orientation.tolist()} is not two orthogonal directions"
        )
    along_row = along_row / norms[0]
    along_column = along_column / norms[1]
    normal = np.cross(along_row, along_column)
    positions = np.stack([plane.position for plane in planes])
    along_normal = positions @ normal
    order = np.argsort(along_normal, kind="stable")
    planes = [planes[i] for i in order]
    positions = positions[order]
    along_normal = along_normal[order]
    n = len(planes)
    if n > 1:
        steps = np.diff(along_normal)
        mean_step = float(along_normal[-1] - along_normal[0]) / (n - 1)
        tiny = max(1e-3, 1e-6 * abs(mean_step))
        same = np.flatnonzero(steps < tiny)
        if same.size:
            a, b = planes[same[0]], planes[same[0] + 1]
            raise GeometryError(
                f"slices share a position ({same.size} repeated position(s), e.g. {a.sop_uid} "
                f"frame {a.frame_number} and {b.sop_uid} frame {b.frame_number} "
                f"at {along_normal[same[0]]:.3f} mm along the normal): several echoes, time "
                "points or stacks in one series; pick one with QIDO filters first"
            )
        deviation = np.abs(steps - mean_step)
        worst = int(np.argmax(deviation))
        if deviation[worst] > spacing_tolerance * mean_step:
            raise GeometryError(
                f"slice spacing is not uniform: steps range {steps.min():.4g}–{steps.max():.4g} mm "
                f"(mean {mean_step:.4g} mm); the largest deviation is between "
                f"{planes[worst].sop_uid} and {planes[worst + 1].sop_uid} (a missing slice?). "
                "Pass a larger spacing_tolerance to accept it"
            )
        step_vector = (positions[-1] - positions[0]) / (n - 1)
        expected = positions[0] + np.arange(n)[:, None] * step_vector
        off_line = np.linalg.norm(positions - expected, axis=1)
        if off_line.max() > max(1e-3, spacing_tolerance * float(np.linalg.norm(step_vector))):
            bad = planes[int(np.argmax(off_line))]
            raise GeometryError(
                f"slice {bad.sop_uid} lies {off_line.max():.3g} mm off the line through the "
                "first and last slice: the stack is not a regular grid"
            )
    else:
        thickness = 1.0
        for instance in instances:
            value = dicom_json_value(instance, "SpacingBetweenSlices") or dicom_json_value(
                instance, "SliceThickness")
            if value:
                thickness = float(value)
                break
        step_vector = normal * thickness
    row_spacing, column_spacing = (float(v) for v in first.pixel_spacing)
    affine = np.eye(4)
    affine[:3, 0] = along_row * column_spacing
    affine[:3, 1] = along_column * row_spacing
    affine[:3, 2] = step_vector
    affine[:3, 3] = positions[0]
    return SeriesGeometry(
        slices=tuple(SliceRef(p.sop_uid, p.frame_number,
                              (float(p.position[0]), float(p.position[1]), float(p.position[2])))
                     for p in planes),
        affine_lps=affine,
        rows=first.rows,
        columns=first.columns,
    )


# -- the volume -------------------------------------------------------------------------

@dataclass(eq=False)
class Volume:
    """A series (or a study's channels) as a numpy array placed in patient space.

    Parameters
    ----------
    array : numpy.ndarray
        ``(X, Y, Z)`` — ``array[i, j, k]``, see the module docstring — or
        ``(C, X, Y, Z)`` with :attr:`channels` naming ``C``.
    affine_lps : numpy.ndarray
        4×4, voxel ``(i, j, k, 1)`` → DICOM patient LPS (mm).
    study_uid, series_uid : str
        Source UIDs (for a 4-channel volume, ``series_uid`` is the reference channel's).
    sop_uids : tuple of str
        SOP Instance UID of each slice ``k`` (empty after resampling: slices no longer match).
    frame_numbers : tuple of int
        Frame number (1-based) of each slice within its instance.
    metadata : dict
        Selected attributes (:data:`METADATA_KEYWORDS`) and ``TransferSyntaxUIDs``;
        a 4-channel volume has one dict per channel under ``"channels"``.
    channels : tuple of str
        Names of the leading axis of a 4-D array (e.g. ``("t1", "t1c", "t2", "flair")``).
    channel_series : dict
        Channel name → SeriesInstanceUID.

    Attributes
    ----------
    affine : numpy.ndarray
        Same as :attr:`affine_ras` (NIfTI's convention).
    """

    array: np.ndarray
    affine_lps: np.ndarray
    study_uid: str = ""
    series_uid: str = ""
    sop_uids: tuple[str, ...] = ()
    frame_numbers: tuple[int, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    channels: tuple[str, ...] = ()
    channel_series: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine_lps = np.asarray(self.affine_lps, dtype=np.float64)
        if self.affine_lps.shape != (4, 4) or not np.allclose(self.affine_lps[3], [0, 0, 0, 1]):
            raise ValueError(f"affine_lps must be a 4×4 affine, got {self.affine_lps!r}")
        expected_ndim = 4 if self.channels else 3
        if self.array.ndim != expected_ndim:
            raise ValueError(
                f"array must be {expected_ndim}-D ({'C, ' if self.channels else ''}X, Y, Z), "
                f"got shape {self.array.shape}"
            )
        if self.channels and len(self.channels) != self.array.shape[0]:
            raise ValueError(f"{len(self.channels)} channel names for {self.array.shape[0]} channels")
        if self.sop_uids and len(self.sop_uids) != self.array.shape[-1]:
            raise ValueError(f"{len(self.sop_uids)} SOP UIDs for {self.array.shape[-1]} slices")

    def __repr__(self) -> str:
        channels = f", channels={self.channels}" if self.channels else ""
        spacing = ", ".join(f"{s:.4g}" for s in self.spacing)
        return (f"Volume(shape={self.array.shape}, dtype={self.array.dtype}, spacing=({spacing}) mm, "
                f"orientation={self.orientation!r}{channels}, series={self.series_uid!r})")

    # -- geometry ---------------------------------------------------------------
    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape[-3:])  # type: ignore[return-value]

    @property
    def affine_ras(self) -> np.ndarray:
        """4×4, voxel → RAS mm (NIfTI / nibabel / MONAI)."""
        return LPS_TO_RAS @ self.affine_lps

    @property
    def affine(self) -> np.ndarray:
        """The RAS affine (:attr:`affine_ras`); use :attr:`affine_lps` for DICOM coordinates."""
        return self.affine_ras

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) along i, j, k."""
        return tuple(float(v) for v in np.linalg.norm(self.affine_lps[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def origin_lps(self) -> tuple[float, float, float]:
        """LPS position (mm) of voxel (0, 0, 0)'s centre: ImagePositionPatient of slice 0."""
        return tuple(float(v) for v in self.affine_lps[:3, 3])  # type: ignore[return-value]

    @property
    def direction_lps(self) -> np.ndarray:
        """3×3; column ``a`` is the unit LPS direction of array axis ``a``."""
        return self.affine_lps[:3, :3] / np.asarray(self.spacing)

    @property
    def orientation(self) -> str:
        """Where each array axis points, one letter per axis: ``"LPS"`` means i → left,
        j → posterior, k → superior (the nearest anatomical direction for oblique
        axes; the same letters as ``nibabel.aff2axcodes(volume.affine_ras)``)."""
        letters = (("R", "L"), ("A", "P"), ("I", "S"))  # LPS axes: negative, positive end
        codes = []
        for column in self.direction_lps.T:
            axis = int(np.argmax(np.abs(column)))
            codes.append(letters[axis][int(column[axis] > 0)])
        return "".join(codes)

    def voxel_to_lps(self, ijk: Any) -> np.ndarray:
        """LPS mm of voxel indices ``(..., 3)``."""
        points = np.asarray(ijk, dtype=np.float64)
        return points @ self.affine_lps[:3, :3].T + self.affine_lps[:3, 3]

    # -- values ---------------------------------------------------------------------
    def rescaled(self, dtype: Any = np.float32) -> np.ndarray:
        """``array × RescaleSlope + RescaleIntercept`` (for CT: Hounsfield units)."""
        slope = float(self.metadata.get("RescaleSlope", 1) or 1)
        intercept = float(self.metadata.get("RescaleIntercept", 0) or 0)
        out = self.array.astype(dtype)
        if slope != 1:
            out *= slope
        if intercept != 0:
            out += intercept
        return out

    # -- conversions ------------------------------------------------------------------
    def to_nifti(self, path: str | Path | None = None) -> Any:
        """A NIfTI-1 image (nibabel) with the RAS affine as qform and sform; saved if ``path``.

        The array is kept unscaled in its own dtype; a 4-channel volume becomes
        ``(X, Y, Z, C)``, as NIfTI wants. Returns the ``nibabel.Nifti1Image``.
        """
        import nibabel as nib

        data = np.moveaxis(self.array, 0, -1) if self.channels else self.array
        image = nib.Nifti1Image(data, self.affine_ras)
        header = image.header
        header.set_data_dtype(data.dtype)
        header.set_xyzt_units("mm")
        description = str(self.metadata.get("SeriesDescription", "") or "")
        header["descrip"] = description.encode("ascii", "replace")[:79]
        image.set_qform(self.affine_ras, code=1)  # scanner anatomical
        image.set_sform(self.affine_ras, code=1)
        if path is not None:
            nib.save(image, str(path))
        return image

    def to_metatensor(self, *, channel_first: bool = True, dtype: Any = None) -> Any:
        """A MONAI ``MetaTensor`` with the RAS affine and the source UIDs in its meta.

        Parameters
        ----------
        channel_first : bool
            Add a leading channel axis to a 3-D volume (MONAI's layout), so
            the tensor is ``(1, X, Y, Z)``; a 4-channel volume is ``(C, X, Y, Z)``.
        dtype : torch.dtype, optional
            Default: unsigned 16/32-bit become int32/int64 (torch handles those
            widely; the values are kept), others stay.

        Raises
        ------
        ImportError
            When MONAI (and PyTorch) are not installed: ``pip install monai``.
        """
        try:
            import torch
            from monai.data import MetaTensor
        except ImportError as exc:
            raise ImportError(
                "Volume.to_metatensor needs MONAI and PyTorch: pip install monai "
                f"(missing: {exc.name or exc})"
            ) from exc
        array = self.array
        if not self.channels and channel_first:
            array = array[np.newaxis]
        widen = {np.dtype(np.uint16): np.int32, np.dtype(np.uint32): np.int64}
        if dtype is None and array.dtype in widen:
            array = array.astype(widen[array.dtype])
        tensor = torch.as_tensor(np.ascontiguousarray(array))
        if dtype is not None:
            tensor = tensor.to(dtype)
        affine = torch.as_tensor(self.affine_ras, dtype=torch.float64)
        meta = {
            "original_affine": affine.clone(),
            "spatial_shape": np.asarray(self.spatial_shape),
            "space": "RAS",
            "original_channel_dim": 0 if (self.channels or channel_first) else "no_channel",
            "filename_or_obj": f"dicomweb:{self.study_uid}/{self.series_uid}",
            "StudyInstanceUID": self.study_uid,
            "SeriesInstanceUID": self.series_uid,
        }
        if self.channels:
            meta["channels"] = list(self.channels)
        for key, value in self.metadata.items():
            if isinstance(value, (str, int, float)):
                meta.setdefault(key, value)
        return MetaTensor(tensor, affine=affine, meta=meta)

    def resample_to(self, reference: Volume, *, order: int = 1, cval: float = 0.0) -> Volume:
        """This volume on ``reference``'s grid (shape and affine), by trilinear interpolation.

        When the grids already agree (same shape, voxel → voxel map the
        identity within 1e-4 voxel) this volume itself is returned: the same
        array object, not a copy, bit for bit. Otherwise the result is
        ``float32`` (scipy.ndimage.affine_transform, ``order``; outside → ``cval``),
        and :attr:`sop_uids` is empty, since slices no longer match instances.
        Both volumes must be in one frame of reference (patient coordinates
        are compared, nothing is registered).
        """
        target = reference.spatial_shape
        voxel_map = np.linalg.inv(self.affine_lps) @ reference.affine_lps
        if target == self.spatial_shape and np.allclose(voxel_map, np.eye(4), atol=1e-4):
            return self
        from scipy import ndimage

        def one(array: np.ndarray) -> np.ndarray:
            return ndimage.affine_transform(
                array, voxel_map[:3, :3], offset=voxel_map[:3, 3], output_shape=target,
                order=order, mode="constant", cval=cval, output=np.float32,
            )

        if self.channels:
            resampled = np.stack([one(channel) for channel in self.array])
        else:
            resampled = one(self.array)
        metadata = dict(self.metadata)
        metadata["ResampledTo"] = reference.series_uid
        return Volume(
            array=resampled, affine_lps=reference.affine_lps.copy(), study_uid=self.study_uid,
            series_uid=self.series_uid, metadata=metadata, channels=self.channels,
            channel_series=dict(self.channel_series),
        )

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_slice_stack(
        cls,
        stack: np.ndarray,
        geometry: SeriesGeometry,
        instances: Sequence[Mapping[str, Any]],
        *,
        study_uid: str | None = None,
        series_uid: str | None = None,
        transfer_syntaxes: Iterable[str] = (),
    ) -> Volume:
        """Wrap decoded slices ``stack[k] = pixel array (rows, columns)`` in ``geometry``'s order.

        No copy: :attr:`array` is the ``(columns, rows, slices)`` transposed view of ``stack``.
        """
        if stack.shape != (len(geometry.slices), geometry.rows, geometry.columns):
            raise ValueError(
                f"stack shape {stack.shape} does not match the geometry "
                f"({len(geometry.slices)}, {geometry.rows}, {geometry.columns})"
            )
        by_uid = {dicom_json_value(i, "SOPInstanceUID"): i for i in instances}
        first = by_uid.get(geometry.slices[0].sop_uid, instances[0])
        metadata = select_metadata(first)
        syntaxes = sorted(set(transfer_syntaxes))
        if syntaxes:
            metadata["TransferSyntaxUIDs"] = syntaxes
        return cls(
            array=stack.transpose(2, 1, 0),
            affine_lps=geometry.affine_lps,
            study_uid=study_uid or str(dicom_json_value(first, "StudyInstanceUID", "")),
            series_uid=series_uid or str(dicom_json_value(first, "SeriesInstanceUID", "")),
            sop_uids=tuple(s.sop_uid for s in geometry.slices),
            frame_numbers=tuple(s.frame_number for s in geometry.slices),
            metadata=metadata,
        )


#: What :func:`load_dicom_files` converts to DICOM JSON (all of a dataset costs 10× more).
_FILE_KEYWORDS: tuple[str, ...] = METADATA_KEYWORDS + (
    "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "ImagePositionPatient",
    "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns", "SamplesPerPixel",
    "PlanarConfiguration", "NumberOfFrames", "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
)


def _json_subset(ds: Any, keywords: Iterable[str]) -> dict[str, Any]:
    from pydicom.dataset import Dataset

    subset = Dataset()
    for keyword in keywords:
        if keyword in ds:
            subset[keyword] = ds[keyword]
    return subset.to_json_dict()


def load_dicom_files(
    paths: Iterable[str | Path], *, spacing_tolerance: float = 0.01, max_workers: int = 1
) -> Volume:
    """Read a series from local files into a :class:`Volume`, with the DICOMweb client's decoders.

    Frames go through :func:`neuronova_lib.dicomweb.frames.decode_frame`, the
    table :meth:`Client.load_series <neuronova_lib.dicomweb.client.Client.load_series>`
    uses, so a local and a remote load of the same files give the same array.
    """
    import pydicom

    return volume_from_datasets([pydicom.dcmread(str(p)) for p in paths],
                                spacing_tolerance=spacing_tolerance, max_workers=max_workers)


FrameSink = Callable[[str, int, str, "bytes | memoryview"], None]


def volume_from_datasets(
    datasets: Sequence[Any],
    *,
    spacing_tolerance: float = 0.01,
    max_workers: int = 1,
    on_frame: FrameSink | None = None,
) -> Volume:
    """A :class:`Volume` from whole pydicom datasets (local files, or a WADO-RS series answer).

    Parameters
    ----------
    datasets : sequence of pydicom.Dataset
        Every instance of one series, any order, pixel data included.
    spacing_tolerance : float
        See :func:`series_geometry`.
    max_workers : int
        Threads decoding frames (compressed syntaxes release the GIL; native ones need none).
    on_frame : callable, optional
        Called ``(sop_uid, frame_number, transfer_syntax, bytes)`` for every
        frame as stored (the client's cache uses it).
    """
    from pydicom.encaps import generate_frames

    from .dicomweb.frames import common_pixel_format, decode_frame

    if not datasets:
        raise GeometryError("no instances")
    instances = instances_json(datasets)
    geometry = series_geometry(instances, spacing_tolerance=spacing_tolerance)
    fmt = common_pixel_format(instances)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
    stack = np.empty((len(geometry.slices), fmt.rows, fmt.columns), dtype=fmt.dtype)
    frames_of: dict[str, list[bytes]] = {}
    work = []
    for k, ref in enumerate(geometry.slices):
        ds = by_uid[ref.sop_uid]
        if "PixelData" not in ds:
            raise GeometryError(f"instance {ref.sop_uid} has no Pixel Data")
        syntax = str(ds.file_meta.TransferSyntaxUID)
        if ds.file_meta.TransferSyntaxUID.is_encapsulated:
            if ref.sop_uid not in frames_of:
                frames_of[ref.sop_uid] = list(generate_frames(
                    ds.PixelData, number_of_frames=int(getattr(ds, "NumberOfFrames", 1) or 1)))
            data: bytes | memoryview = frames_of[ref.sop_uid][ref.frame_number - 1]
        else:
            size = fmt.frame_bytes
            data = memoryview(ds.PixelData)[(ref.frame_number - 1) * size: ref.frame_number * size]
        work.append((k, ref, syntax, data))

    def decode(item: tuple[int, SliceRef, str, bytes | memoryview]) -> None:
        k, ref, syntax, data = item
        stack[k] = decode_frame(data, syntax, fmt)
        if on_frame is not None:
            on_frame(ref.sop_uid, ref.frame_number, syntax, data)

    if max_workers > 1 and len(work) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max_workers) as pool:
            list(pool.map(decode, work))
    else:
        for item in work:
            decode(item)
    return Volume.from_slice_stack(stack, geometry, instances,
                                   transfer_syntaxes={w[2] for w in work})


def instances_json(datasets: Sequence[Any]) -> list[dict[str, Any]]:
    """DICOM JSON of what a volume needs from each dataset (geometry, pixel format, metadata)."""
    return [_json_subset(ds, _FILE_KEYWORDS) for ds in datasets]
