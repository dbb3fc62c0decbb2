"""Write one synthetic case as a DICOM study: four MR series, one file per axial slice.

Files are DICOM Part 10 (preamble, ``DICM``, file meta group), Explicit VR
Little Endian, MR Image Storage, 16 bits allocated / 12 stored, unsigned,
MONOCHROME2, with RescaleSlope 1 and RescaleIntercept 0: the stored values
are exactly the phantom's ``uint16`` arrays.

Geometry (see :mod:`neuronova_lib.demo.geometry`): slice ``k`` carries
``vol[:, :, k].T`` (Rows = j, Columns = i), ImageOrientationPatient
``[1, 0, 0, 0, 1, 0]`` and ImagePositionPatient ``origin + k·Δz·(0, 0, 1)``
in LPS, so the NIfTI files written beside it (RAS affine) describe the same
voxels at the same patient points.

Everything written is derived from the case and its identity (no clock),
so the same seed writes byte-identical files.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage
from pydicom.valuerep import format_number_as_ds

from .. import __version__
from .channels import CHANNELS, ChannelSpec
from .geometry import AXIAL_ORIENTATION, Grid
from .identity import CaseIdentity
from .phantom import MAX_VALUE, SyntheticCase

logger = logging.getLogger(__name__)

STUDY_DESCRIPTION = "Brain tumour MRI (synthetic demo)"
MANUFACTURER = "NeuroNova synthetic"
SYNTHETIC_NOTE = (
    "SYNTHETIC DEMO DATA - NOT FOR CLINICAL USE. Computed by NeuroNova from the MNI152 "
    "brain template with a simulated tumour; no patient was scanned."
)
BITS_STORED = 12
_IMPLEMENTATION_VERSION = "NEURONOVA_DEMO"


@dataclass(frozen=True)
class WrittenSeries:
    """Where one channel's series went.

    Attributes
    ----------
    channel : str
        Channel key (``t1``, ``t1c``, ``t2``, ``flair``).
    series_instance_uid : str
    series_number : int
    series_description : str
    directory : Path
        Folder holding the series' files.
    files : tuple of Path
        One file per slice, in slice (InstanceNumber) order.
    """

    channel: str
    series_instance_uid: str
    series_number: int
    series_description: str
    directory: Path
    files: tuple[Path, ...]


def write_case_dicom(
    case: SyntheticCase, identity: CaseIdentity, directory: str | Path
) -> dict[str, WrittenSeries]:
    """Write the four MR series of one case under ``directory/<channel>/``.

    Parameters
    ----------
    case : SyntheticCase
        The images; each channel must be ``uint16`` with values ≤ 4095.
    identity : CaseIdentity
        Patient, study and UIDs of the case.
    directory : str or Path
        Folder for the study; created if missing. Files are named
        ``<channel>/0001.dcm`` … by InstanceNumber.

    Returns
    -------
    dict of str to WrittenSeries
        One entry per channel, in :data:`~neuronova_lib.demo.channels.CHANNELS` order.

    Raises
    ------
    ValueError
        When a channel is not ``uint16`` of the grid's shape or exceeds 12 bits.
    """
    root = Path(directory)
    written = {}
    for spec in CHANNELS:
        volume = _checked_volume(case, spec)
        series_dir = root / spec.key
        series_dir.mkdir(parents=True, exist_ok=True)
        encoder = _SeriesEncoder(_series_dataset(case, identity, spec, volume))
        files = []
        for k in range(case.grid.shape[2]):
            path = series_dir / f"{k + 1:04d}.dcm"
            path.write_bytes(encoder.encode(_slice_elements(case.grid, identity, spec, volume, k)))
            files.append(path)
        written[spec.key] = WrittenSeries(
            channel=spec.key,
            series_instance_uid=identity.series_instance_uid(spec.key),
            series_number=spec.series_number,
            series_description=spec.series_description,
            directory=series_dir,
            files=tuple(files),
        )
        logger.debug("wrote %d instances of %s to %s", len(files), spec.label, series_dir)
    return written


def _checked_volume(case: SyntheticCase, spec: ChannelSpec) -> np.ndarray:
    volume = case.channels[spec.key]
    if volume.dtype != np.uint16 or volume.shape != case.grid.shape:
        raise ValueError(
            f"channel {spec.key!r} must be uint16 of shape {case.grid.shape}, "
            f"got {volume.dtype} {volume.shape}"
        )
    if int(volume.max()) > MAX_VALUE:
        raise ValueError(
            f"channel {spec.key!r} holds {int(volume.max())}, above the 12-bit maximum "
            f"{MAX_VALUE}; clip it before writing"
        )
    return volume


def _ds(value: float) -> str:
    """A DS string without float noise (0.30000000000000004 → 0.3, -0.0 → 0.0)."""
    return format_number_as_ds(round(float(value), 4) + 0.0)


def _window(volume: np.ndarray) -> tuple[int, int]:
    """Window centre and width covering the head's intensities (0.5–99.5th percentile)."""
    sample = volume[::2, ::2, ::2]
    foreground = sample[sample > 0.05 * MAX_VALUE]
    if foreground.size == 0:
        return MAX_VALUE // 2, MAX_VALUE + 1
    lo, hi = np.percentile(foreground, [0.5, 99.5])
    return int(round((lo + hi) / 2.0)), max(int(round(hi - lo)), 1)


def _series_dataset(
    case: SyntheticCase, identity: CaseIdentity, spec: ChannelSpec, volume: np.ndarray
) -> Dataset:
    """Attributes shared by every slice of one series."""
    grid = case.grid
    order = sorted(c.series_number for c in CHANNELS).index(spec.series_number)
    series_time = identity.series_time(order)
    ds = Dataset()
    # SOP Common
    ds.SOPClassUID = MRImageStorage
    ds.InstanceCreationDate = identity.study_date
    ds.InstanceCreationTime = series_time
    # Patient, Patient Study
    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id
    ds.IssuerOfPatientID = "NeuroNova demo"
    ds.PatientBirthDate = identity.patient_birth_date
    ds.PatientSex = identity.patient_sex
    ds.PatientAge = identity.patient_age
    # General Study
    ds.StudyInstanceUID = identity.study_instance_uid
    ds.StudyDate = identity.study_date
    ds.StudyTime = identity.study_time
    ds.ReferringPhysicianName = ""
    ds.StudyID = identity.study_id
    ds.AccessionNumber = identity.accession_number
    ds.StudyDescription = STUDY_DESCRIPTION
    # General Series
    ds.Modality = "MR"
    ds.SeriesInstanceUID = identity.series_instance_uid(spec.key)
    ds.SeriesNumber = spec.series_number
    ds.SeriesDescription = spec.series_description
    ds.ProtocolName = f"NeuroNova demo brain tumour - {spec.label}"
    ds.SeriesDate = identity.study_date
    ds.SeriesTime = series_time
    ds.BodyPartExamined = "BRAIN"
    ds.PatientPosition = "HFS"
    # Frame of Reference: shared by the four series (co-registered)
    ds.FrameOfReferenceUID = identity.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    # General Equipment
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = "NeuroNova synthetic data"
    ds.StationName = "NNDEMO"
    ds.ManufacturerModelName = "MNI152 phantom"
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = f"neuronova {__version__}"
    # General Acquisition, General Image
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = identity.study_date
    ds.AcquisitionTime = series_time
    ds.ContentDate = identity.study_date
    ds.ContentTime = series_time
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    ds.DerivationDescription = "Synthetic image computed from the MNI152 template"
    ds.PatientOrientation = ["L", "P"]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.ImageComments = f"{SYNTHETIC_NOTE} Seed {identity.seed}, case {identity.index}."
    # Image Plane (per-slice position added later)
    ds.PixelSpacing = [_ds(grid.spacing[1]), _ds(grid.spacing[0])]
    ds.ImageOrientationPatient = [_ds(v) for v in AXIAL_ORIENTATION]
    ds.SliceThickness = _ds(grid.spacing[2])
    # Image Pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = grid.shape[1]
    ds.Columns = grid.shape[0]
    ds.BitsAllocated = 16
    ds.BitsStored = BITS_STORED
    ds.HighBit = BITS_STORED - 1
    ds.PixelRepresentation = 0
    # Modality and VOI LUT
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    centre, width = _window(volume)
    ds.WindowCenter = str(centre)
    ds.WindowWidth = str(width)
    ds.WindowCenterWidthExplanation = "HEAD"
    _add_mr_attributes(ds, spec, grid)
    if spec.contrast_agent:
        _add_contrast_bolus(ds, identity, order)
    return ds


def _add_mr_attributes(ds: Dataset, spec: ChannelSpec, grid: Grid) -> None:
    """MR Image module: the sequence that would have produced this contrast at 3 T."""
    seq = spec.sequence
    ds.ScanningSequence = list(seq.scanning_sequence)
    ds.SequenceVariant = list(seq.sequence_variant)
    ds.ScanOptions = list(seq.scan_options) or ""  # type 2: present, may be empty
    ds.MRAcquisitionType = "3D"
    ds.SequenceName = seq.sequence_name
    ds.AngioFlag = "N"
    ds.RepetitionTime = _ds(seq.repetition_time_ms)
    ds.EchoTime = _ds(seq.echo_time_ms)
    if seq.inversion_time_ms is not None:
        ds.InversionTime = _ds(seq.inversion_time_ms)
    ds.NumberOfAverages = "1"
    ds.ImagingFrequency = "123.25"
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = "1"
    ds.MagneticFieldStrength = "3"
    ds.SpacingBetweenSlices = _ds(grid.spacing[2])
    ds.EchoTrainLength = seq.echo_train_length
    ds.PercentSampling = "100"
    ds.PercentPhaseFieldOfView = "100"
    ds.PixelBandwidth = _ds(seq.pixel_bandwidth_hz)
    ds.ReceiveCoilName = "Head_32"
    ds.TransmitCoilName = "Body"
    ds.AcquisitionMatrix = [0, grid.shape[0], grid.shape[1], 0]
    ds.InPlanePhaseEncodingDirection = "ROW"
    ds.FlipAngle = _ds(seq.flip_angle_deg)
    ds.VariableFlipAngleFlag = "N"


def _add_contrast_bolus(ds: Dataset, identity: CaseIdentity, order: int) -> None:
    """Contrast/Bolus module of the post-gadolinium series (injected one series earlier)."""
    ds.ContrastBolusAgent = "Gadobutrol 1.0 mmol/mL"
    ds.ContrastBolusRoute = "IV"
    ds.ContrastBolusVolume = "7.5"
    ds.ContrastBolusTotalDose = "7.5"
    ds.ContrastBolusStartTime = identity.series_time(order - 1)
    ds.ContrastBolusIngredient = "GADOLINIUM"
    ds.ContrastBolusIngredientConcentration = "604.72"


def _slice_elements(
    grid: Grid, identity: CaseIdentity, spec: ChannelSpec, volume: np.ndarray, k: int
) -> Dataset:
    """The elements that differ from slice to slice: identity, position, pixels."""
    ds = Dataset()
    ds.SOPInstanceUID = identity.sop_instance_uid(spec.key, k)
    ds.InstanceNumber = k + 1
    position = grid.slice_position(k)
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.SliceLocation = _ds(position[2])
    pixels = np.ascontiguousarray(volume[:, :, k].T, dtype="<u2")
    ds.add(DataElement(0x7FE00010, "OW", pixels.tobytes()))
    return ds


class _SeriesEncoder:
    """Encodes the series' shared elements once, then each slice's few own elements.

    pydicom spends ~3 ms re-encoding ~100 identical elements per file; a
    full-size case has 620 files. The bytes are the same as
    ``Dataset.save_as(..., enforce_file_format=True)`` writes for the merged
    dataset (Explicit VR Little Endian elements are encoded independently,
    in ascending tag order) — the tests check that against pydicom itself.
    """

    _PREFIX = b"\x00" * 128 + b"DICM"

    def __init__(self, shared: Dataset) -> None:
        self._shared = _encode_each(shared)

    def encode(self, own: Dataset) -> bytes:
        """Complete Part 10 file of one slice."""
        own_elements = _encode_each(own)
        clash = {t for t, _ in own_elements} & {t for t, _ in self._shared}
        if clash:
            raise ValueError(f"slice elements repeat shared tags {sorted(clash)}")
        body = b"".join(b for _, b in heapq.merge(self._shared, own_elements))
        return self._PREFIX + _encode_meta(str(own.SOPInstanceUID)) + body


def _explicit_le() -> DicomBytesIO:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    return fp


def _encode_each(ds: Dataset) -> list[tuple[int, bytes]]:
    """Each element of ``ds`` encoded alone, in tag order: ``[(tag, bytes), ...]``."""
    encoded = []
    for element in ds:
        single = Dataset()
        single.add(element)
        fp = _explicit_le()
        write_dataset(fp, single)
        encoded.append((int(element.tag), fp.getvalue()))
    return encoded


def _encode_meta(sop_instance_uid: str) -> bytes:
    fp = _explicit_le()
    write_file_meta_info(fp, _file_meta(sop_instance_uid), enforce_standard=True)
    return fp.getvalue()


def _file_meta(sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = _IMPLEMENTATION_VERSION
    return meta
