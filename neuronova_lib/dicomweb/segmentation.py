"""The platform's AI results as a notebook reads them: a DICOM SEG back onto a study's volume.

An inference job (``POST /api/inference``, see :meth:`.client.Client.segment`) writes a
DICOM SEG into the study, on the grid of the series the masks were computed on (T1).
:func:`seg_masks` turns that SEG into boolean masks on a :class:`~neuronova_lib.volume.Volume`
of the same series (``client.load_study(...)``, whose reference channel is T1), so the
regions overlay the images voxel for voxel without any resampling. It needs nothing but
the SEG and the volume: the same function reads a SEG from a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..volume import Volume


@dataclass(frozen=True)
class Segmentation:
    """The segments of one DICOM SEG on a volume's grid.

    Attributes
    ----------
    masks : numpy.ndarray
        bool ``(segments, X, Y, Z)``, on the grid of :attr:`reference`'s slices.
    regions : tuple of str
        Each segment's tracking identifier (``TC``, ``WT``, ``ET`` for the platform's
        model), else its label.
    labels : tuple of str
        Each segment's label as a viewer shows it.
    voxel_ml : float
        Volume of one voxel in millilitres.
    dataset : pydicom.Dataset
        The SEG itself (algorithm, model version, content label ...).
    """

    masks: np.ndarray
    regions: tuple[str, ...]
    labels: tuple[str, ...]
    voxel_ml: float
    dataset: Any

    @property
    def volumes_ml(self) -> dict[str, float]:
        """Region → volume in ml (voxel count × voxel volume, rounded to 1 nl as the SR)."""
        return {region: round(int(mask.sum()) * self.voxel_ml, 6)
                for region, mask in zip(self.regions, self.masks, strict=True)}

    def __getitem__(self, region: str) -> np.ndarray:
        """The mask of one region (``seg["WT"]``)."""
        try:
            return self.masks[self.regions.index(region)]
        except ValueError:
            raise KeyError(f"no segment {region!r}; segments: {', '.join(self.regions)}") from None


def seg_masks(seg: Any, reference: Volume) -> Segmentation:
    """The segments of ``seg`` (a pydicom Dataset of a DICOM SEG) on ``reference``'s grid.

    ``reference`` must be a volume of the series the SEG was made on (its
    ``ReferencedSeriesSequence``), as loaded, not resampled: its ``sop_uids`` and
    ``frame_numbers`` name the source image of every slice. Slices the SEG leaves out
    (empty ones) are all ``False``.

    Raises
    ------
    ValueError
        ``seg`` is not a SEG, or ``reference`` is another series than the SEG's.
    """
    import highdicom as hd

    if getattr(seg, "Modality", None) != "SEG":
        raise ValueError(f"not a DICOM SEG (Modality {getattr(seg, 'Modality', None)!r})")
    referenced = [str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])]
    if not reference.sop_uids:
        raise ValueError("the reference volume has no SOP Instance UIDs (a resampled volume?); "
                         "pass the volume of the SEG's source series as loaded")
    if reference.series_uid not in referenced:
        raise ValueError(
            f"the SEG was made on series {', '.join(referenced) or '(none named)'}, the "
            f"reference volume is series {reference.series_uid}: load the study with that "
            "series as its reference channel")
    segmentation = seg if isinstance(seg, hd.seg.Segmentation) else \
        hd.seg.Segmentation.from_dataset(seg, copy=True)
    numbers = [int(item.SegmentNumber) for item in segmentation.SegmentSequence]
    if len(set(reference.sop_uids)) == 1 and len(reference.sop_uids) > 1:  # one multi-frame image
        pixels = segmentation.get_pixels_by_source_frame(
            source_sop_instance_uid=reference.sop_uids[0],
            source_frame_numbers=list(reference.frame_numbers), segment_numbers=numbers)
    else:
        pixels = segmentation.get_pixels_by_source_instance(
            source_sop_instance_uids=list(reference.sop_uids), segment_numbers=numbers,
            ignore_spatial_locations=True)
    # highdicom: (slices, rows, columns, segments); volumes: (X = column, Y = row, Z = slice).
    masks = np.ascontiguousarray(pixels.transpose(3, 2, 1, 0)).astype(bool)
    if masks.shape[1:] != reference.array.shape[-3:]:
        raise ValueError(f"SEG frames of {masks.shape[1:]} voxels on a reference of "
                         f"{reference.array.shape[-3:]}")
    items = list(segmentation.SegmentSequence)
    regions = tuple(str(item.get("TrackingID") or item.SegmentLabel) for item in items)
    labels = tuple(str(item.SegmentLabel) for item in items)
    voxel_ml = float(abs(np.linalg.det(reference.affine_lps[:3, :3]))) / 1000.0
    return Segmentation(masks=masks, regions=regions, labels=labels, voxel_ml=voxel_ml,
                        dataset=segmentation)


__all__ = ["Segmentation", "seg_masks"]
