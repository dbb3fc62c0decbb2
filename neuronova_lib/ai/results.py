"""DICOM results of a tumour segmentation: a SEG with the three BraTS regions and an SR
TID 1500 with their volumes, both built with highdicom.

What is written, and why:

* **SEG** (Segmentation Storage, ``BINARY``): one segment per region, on the
  grid of one source series (the series the masks are aligned to; the
  inference job uses the T1 series, the channel the others are resampled
  onto). Frames are the source series' slices, so a viewer overlays the SEG
  on that series without resampling; empty slices are left out.
  Codes (all of them in DICOM's segmentation context groups, so a viewer that
  knows DICOM shows the regions by name):

  =====  ==========================================  =====================================
  TC     SCT 108369006 "Neoplasm"                    the tumour itself (necrosis +
                                                     enhancing), CID 7151-family
                                                     morphologic abnormality
  WT     SCT 301766008 "Lesion of Brain"             CID 7199: the whole abnormal
                                                     region, oedema included
  ET     NCIt C113842 "Enhancing Lesion"             CID 7169 (Brain Lesion
                                                     Segmentation Type)
  =====  ==========================================  =====================================

  Category SCT 49755003 "Morphologically Abnormal Structure" (CID 7150),
  anatomic region SCT 12738006 "Brain". BraTS' tumour core and whole tumour
  have no code of their own in DCMR; these are the nearest standard concepts,
  and the segment labels say ``TC``/``WT``/``ET`` plainly.
* **SR** (Comprehensive 3D SR, TID 1500 Measurement Report): one
  TID 1411 volumetric group per region, tracking identifier = the region,
  referencing its SEG segment (and through it the source series), with
  SCT 118565006 "Volume" in UCUM ``ml``. The volume is the segment's voxel
  count × the voxel volume (``|det(affine)|``), rounded to 6 decimals
  (1 nl): what the SR says is exactly :attr:`InferenceResults.volumes_ml`.

Both carry "not for clinical use" in their series descriptions, the SEG in
its content label and description, and the SR in its observer device name:
the demo model is trained on synthetic data.

UIDs are derived from the job id (:func:`result_uids`), and every date and time
from the job's creation time, so a retried job writes byte-identical objects:
the ingest gate sees the same instance again, not a conflict.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from neuronova_lib import __version__
from neuronova_lib.uids import name_based_uid
from neuronova_lib.volume import instances_json, series_geometry

#: The BraTS regions, in the order of the masks' first axis.
REGIONS: tuple[str, ...] = ("TC", "WT", "ET")
#: What every result says about the demo model (README, job results, SR).
NOT_FOR_CLINICAL_USE = ("NeuroNova demo model - trained on synthetic data only, "
                        "NOT FOR CLINICAL USE")
SEG_SERIES_DESCRIPTION = "AI tumour SEG - demo model, synthetic data, NOT FOR CLINICAL USE"
SR_SERIES_DESCRIPTION = "AI tumour volumes - demo model, synthetic data, NOT CLINICAL"
#: ContentLabel is a CS of at most 16 characters.
SEG_CONTENT_LABEL = "NOT_FOR_CLINICAL"
SEG_CONTENT_DESCRIPTION = "Demo model trained on synthetic data - not for clinical use"
MANUFACTURER = "NeuroNova"
MANUFACTURER_MODEL = "NeuroNova inference (demo model)"
SEG_SERIES_NUMBER = 901
SR_SERIES_NUMBER = 902
_UID_NAMESPACE = "urn:neuronova:inference:v1"

_CATEGORY = Code("49755003", "SCT", "Morphologically Abnormal Structure")
_BRAIN = Code("12738006", "SCT", "Brain")
#: Region → (segmented property type, label shown by viewers).
REGION_CODES: Mapping[str, tuple[Code, str]] = {
    "TC": (Code("108369006", "SCT", "Neoplasm"), "TC tumour core"),
    "WT": (Code("301766008", "SCT", "Lesion of Brain"), "WT whole tumour"),
    "ET": (Code("C113842", "NCIt", "Enhancing Lesion"), "ET enhancing tumour"),
}
_VOLUME = Code("118565006", "SCT", "Volume")
_MILLILITRE = Code("ml", "UCUM", "milliliter")
_AI_FAMILY = Code("123110", "DCM", "Artificial Intelligence")
_VOLUME_DECIMALS = 6


@dataclass(frozen=True)
class ModelInfo:
    """The model that made the masks, as recorded in the SEG, the SR and the job."""

    name: str
    version: str | None
    run_id: str | None

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}" if self.version else self.name


@dataclass(frozen=True)
class ResultUids:
    """The UIDs of one job's results, derived from the job id (see :func:`result_uids`)."""

    seg_series: str
    seg_instance: str
    sr_series: str
    sr_instance: str


def result_uids(job_id: str) -> ResultUids:
    """Deterministic UIDs for job ``job_id``: a retry writes the same objects."""
    return ResultUids(*(name_based_uid(_UID_NAMESPACE, job_id, what)
                        for what in ("seg-series", "seg", "sr-series", "sr")))


@dataclass
class InferenceResults:
    """The SEG and SR of one job, and the figures they hold."""

    seg: Dataset
    sr: Dataset
    voxel_counts: dict[str, int]
    volumes_ml: dict[str, float]
    voxel_ml: float
    uids: ResultUids
    notes: list[str] = field(default_factory=list)


def order_source_images(source_images: Sequence[Dataset]) -> tuple[list[Dataset], list[int]]:
    """The source images in the masks' slice order ``k`` (sorted along the slice normal).

    Returns the datasets for highdicom and, for a multi-frame source, the
    frame number of each ``k``. Single-frame series give one dataset per slice.
    """
    geometry = series_geometry(instances_json(source_images))
    by_uid = {str(ds.SOPInstanceUID): ds for ds in source_images}
    if len(by_uid) == 1 and len(geometry.slices) > 1:  # one multi-frame instance
        return [next(iter(by_uid.values()))], [s.frame_number for s in geometry.slices]
    if len(by_uid) != len(geometry.slices):
        raise ValueError("the source series mixes multi-frame and single-frame instances; "
                         "give the masks' reference series as single-frame images or one "
                         "multi-frame instance")
    return [by_uid[s.sop_uid] for s in geometry.slices], [1] * len(geometry.slices)


def voxel_volume_ml(source_images: Sequence[Dataset]) -> float:
    """Volume of one voxel of the source series' grid, in millilitres."""
    geometry = series_geometry(instances_json(source_images))
    return float(abs(np.linalg.det(geometry.affine_lps[:3, :3]))) / 1000.0


def region_volumes(masks: np.ndarray, voxel_ml: float) -> tuple[dict[str, int], dict[str, float]]:
    """Voxel count and volume (ml, 6 decimals) of each region of ``masks`` (3, X, Y, Z)."""
    counts = {region: int(np.count_nonzero(masks[i])) for i, region in enumerate(REGIONS)}
    volumes = {region: round(count * voxel_ml, _VOLUME_DECIMALS)
               for region, count in counts.items()}
    return counts, volumes


def _check_masks(masks: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.shape != (len(REGIONS), *shape):
        raise ValueError(f"masks must be ({len(REGIONS)}, X, Y, Z) = "
                         f"{(len(REGIONS), *shape)} on the source series' grid, got {masks.shape}")
    if masks.dtype != np.bool_:
        raise ValueError(f"masks must be bool, got {masks.dtype}")
    return masks


def _when(created: dt.datetime) -> dict[str, Any]:
    created = created.astimezone(dt.UTC) if created.tzinfo else created
    return {"content_date": created.date(), "content_time": created.time().replace(microsecond=0),
            "series_date": created.date(), "series_time": created.time().replace(microsecond=0)}


def _stamp(ds: Dataset, created: dt.datetime, uids: ResultUids) -> None:
    """Replace what highdicom takes from the clock or a random source with the job's own.

    InstanceCreationDate/Time and ContributionDateTime (the clock) become the
    job's creation time, DimensionOrganizationUID (random) a UID derived from the
    job: a retried job then writes the same bytes.
    """
    when = _when(created)
    ds.InstanceCreationDate = when["content_date"].strftime("%Y%m%d")
    ds.InstanceCreationTime = when["content_time"].strftime("%H%M%S")
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = (when["content_date"].strftime("%Y%m%d")
                                         + when["content_time"].strftime("%H%M%S"))
    if "DimensionOrganizationSequence" in ds:
        organization = name_based_uid(_UID_NAMESPACE, uids.seg_instance, "dimensions")
        for item in ds.DimensionOrganizationSequence:
            item.DimensionOrganizationUID = organization
        for item in ds.get("DimensionIndexSequence", []):
            item.DimensionOrganizationUID = organization


def build_seg(source_images: Sequence[Dataset], masks: np.ndarray, *, model: ModelInfo,
              uids: ResultUids, created: dt.datetime) -> Dataset:
    """A BINARY DICOM SEG of ``masks`` (bool (3, X, Y, Z): TC, WT, ET) over the source series.

    ``source_images`` are the datasets of every instance of the series the
    masks are aligned to (pixel data not needed); ``masks[:, i, j, k]`` is
    column ``i``, row ``j`` of slice ``k`` sorted along the normal
    (:mod:`neuronova_lib.volume`'s convention).
    """
    import highdicom as hd

    ordered, frames = order_source_images(source_images)
    shape = (int(ordered[0].Columns), int(ordered[0].Rows), len(frames))
    masks = _check_masks(masks, shape)
    # highdicom wants (frames, rows, columns, segments) in source frame order.
    stack = masks.transpose(3, 2, 1, 0)
    if len(ordered) == 1 and len(frames) > 1:
        by_frame = np.empty_like(stack)
        by_frame[np.asarray(frames) - 1] = stack
        stack = by_frame
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model.name[:64], family=_AI_FAMILY, version=str(model.version or "unregistered")[:64],
        source=f"mlflow run {model.run_id}"[:64] if model.run_id else None)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=REGION_CODES[region][1],
            segmented_property_category=_CATEGORY,
            segmented_property_type=REGION_CODES[region][0],
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=name_based_uid(_UID_NAMESPACE, uids.seg_instance, region),
            tracking_id=region,
            anatomic_regions=[_BRAIN],
        )
        for n, region in enumerate(REGIONS, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=ordered, pixel_array=stack,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=uids.seg_series, series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=uids.seg_instance, instance_number=1,
        manufacturer=MANUFACTURER, manufacturer_model_name=MANUFACTURER_MODEL,
        software_versions=__version__, device_serial_number=model.label[:64],
        series_description=SEG_SERIES_DESCRIPTION, content_label=SEG_CONTENT_LABEL,
        content_description=SEG_CONTENT_DESCRIPTION, content_creator_name="NeuroNova^AI",
        omit_empty_frames=True, **_when(created),
    )
    _stamp(seg, created, uids)
    return seg


def build_sr(source_images: Sequence[Dataset], seg: Dataset, volumes_ml: Mapping[str, float], *,
             model: ModelInfo, uids: ResultUids, created: dt.datetime) -> Dataset:
    """A TID 1500 measurement report: the volume of each SEG segment, in ml."""
    import highdicom as hd

    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=name_based_uid(_UID_NAMESPACE, "device", model.name, model.version or "",
                           model.run_id or ""),
        name=f"{model.label} - NOT FOR CLINICAL USE"[:64],
        manufacturer_name=MANUFACTURER, model_name=model.name[:64],
        serial_number=(model.run_id or "")[:64] or None)
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.cid270.Device,
            observer_identifying_attributes=device))
    algorithm = hd.sr.AlgorithmIdentification(
        name=model.name[:64], version=str(model.version or "unregistered")[:64])
    groups = []
    for number, region in enumerate(REGIONS, start=1):
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=name_based_uid(_UID_NAMESPACE, uids.sr_instance, region),
                identifier=f"{region} {REGION_CODES[region][1].split(' ', 1)[1]}"),
            referenced_segment=hd.sr.ReferencedSegment.from_segmentation(seg, number)
            if _segment_has_frames(seg, number) else _empty_segment_reference(seg, number),
            finding_type=REGION_CODES[region][0],
            finding_category=_CATEGORY,
            finding_sites=[hd.sr.FindingSite(_BRAIN)],
            algorithm_id=algorithm,
            measurements=[hd.sr.Measurement(
                name=_VOLUME, value=float(volumes_ml[region]), unit=_MILLILITRE,
                algorithm_id=algorithm)],
        ))
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=Code("241615005", "SCT", "Magnetic resonance imaging of brain"),
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*source_images, seg], content=report[0],
        series_instance_uid=uids.sr_series, series_number=SR_SERIES_NUMBER,
        sop_instance_uid=uids.sr_instance, instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        series_description=SR_SERIES_DESCRIPTION, **_when(created),
    )
    _stamp(sr, created, uids)
    return sr


def _segment_has_frames(seg: Dataset, number: int) -> bool:
    return any(int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber) == number
               for f in getattr(seg, "PerFrameFunctionalGroupsSequence", []))


def _empty_segment_reference(seg: Dataset, number: int) -> Any:
    """A reference to a segment with no voxels (no frames to name): the SEG and its source
    series."""
    import highdicom as hd

    source_series = str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
    return hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
        segment_number=number,
        source_series=hd.sr.SourceSeriesForSegmentation(source_series))


def build_results(source_images: Sequence[Dataset], masks: np.ndarray, *, model: ModelInfo,
                  job_id: str, created: dt.datetime) -> InferenceResults:
    """The SEG and the SR of one job, and the voxel counts and volumes they hold."""
    uids = result_uids(job_id)
    voxel_ml = voxel_volume_ml(source_images)
    counts, volumes = region_volumes(masks, voxel_ml)
    seg = build_seg(source_images, masks, model=model, uids=uids, created=created)
    sr = build_sr(source_images, seg, volumes, model=model, uids=uids, created=created)
    notes = [NOT_FOR_CLINICAL_USE]
    notes += [f"{region}: no voxels found" for region, n in counts.items() if n == 0]
    return InferenceResults(seg=seg, sr=sr, voxel_counts=counts, volumes_ml=volumes,
                            voxel_ml=voxel_ml, uids=uids, notes=notes)


def to_bytes(ds: Dataset) -> bytes:
    """A highdicom object as a DICOM Part 10 file (preamble, file meta, little endian)."""
    from pydicom.filebase import DicomBytesIO

    buffer = DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


__all__ = [
    "InferenceResults", "ModelInfo", "NOT_FOR_CLINICAL_USE", "REGIONS", "REGION_CODES",
    "ResultUids", "build_results", "build_seg", "build_sr", "region_volumes", "result_uids",
    "to_bytes", "voxel_volume_ml",
]
