"""The four MR channels of a BraTS-style case: how each tissue looks, how each was "acquired".

The phantom reads the tissue intensities, the DICOM writer reads the sequence
parameters; keeping both in one table means a channel is described once.

Nominal intensities are relative (white matter on T1 ≈ 0.8): the phantom
blends them by tissue fraction, adds bias field and noise, and scales the
result into the 12-bit range. Their order follows real contrasts:

* T1 (MPRAGE): white matter bright, grey matter darker, CSF dark, fat bright.
* T1c: T1 after gadolinium; the enhancing tumour rim becomes the brightest tissue.
* T2: CSF brightest, grey above white matter, oedema and necrosis bright.
* FLAIR: T2 weighting with the CSF signal nulled: CSF dark, oedema brightest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

#: Tissues of normal anatomy, in the order the anatomy module returns them.
ANATOMY_TISSUES: tuple[str, ...] = ("gm", "wm", "csf", "bone", "scalp")
#: Tumour compartments, named for the BraTS labels they carry.
TUMOUR_TISSUES: tuple[str, ...] = ("necrotic", "oedema", "enhancing")


@dataclass(frozen=True)
class MRSequence:
    """Acquisition parameters written to the DICOM MR Image module.

    Values are typical of a 3 T research protocol for brain tumours (3D
    MPRAGE for T1/T1c, 3D turbo spin echo for T2 and FLAIR).
    """

    scanning_sequence: tuple[str, ...]
    sequence_variant: tuple[str, ...]
    scan_options: tuple[str, ...]
    sequence_name: str
    repetition_time_ms: float
    echo_time_ms: float
    inversion_time_ms: float | None
    flip_angle_deg: float
    echo_train_length: int
    pixel_bandwidth_hz: float


@dataclass(frozen=True)
class ChannelSpec:
    """One MR channel: file names, series identity, acquisition and tissue contrast.

    Parameters
    ----------
    key : str
        Short name used for files and folders (``t1`` → ``t1.nii.gz``, ``dicom/t1/``).
    label : str
        Display name (``T1``, ``T1c``, ``T2``, ``FLAIR``).
    series_number : int
        DICOM SeriesNumber; the post-contrast T1 is acquired last, as in a real exam.
    series_description : str
        DICOM SeriesDescription.
    contrast_agent : bool
        Whether the series is acquired after gadolinium (writes the Contrast/Bolus module).
    sequence : MRSequence
        Acquisition parameters.
    intensities : Mapping[str, float]
        Nominal signal of each tissue of :data:`ANATOMY_TISSUES` and :data:`TUMOUR_TISSUES`.
    """

    key: str
    label: str
    series_number: int
    series_description: str
    contrast_agent: bool
    sequence: MRSequence
    intensities: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = set(ANATOMY_TISSUES + TUMOUR_TISSUES) - set(self.intensities)
        if missing:
            raise ValueError(f"channel {self.key!r} lacks intensities for {sorted(missing)}")
        object.__setattr__(self, "intensities", MappingProxyType(dict(self.intensities)))


_MPRAGE = MRSequence(
    scanning_sequence=("GR", "IR"),
    sequence_variant=("SK", "SP", "MP"),
    scan_options=(),
    sequence_name="*tfl3d1",
    repetition_time_ms=2300.0,
    echo_time_ms=2.98,
    inversion_time_ms=900.0,
    flip_angle_deg=9.0,
    echo_train_length=1,
    pixel_bandwidth_hz=240.0,
)

T1 = ChannelSpec(
    key="t1",
    label="T1",
    series_number=2,
    series_description="T1 MPRAGE 3D",
    contrast_agent=False,
    sequence=_MPRAGE,
    intensities={
        "gm": 0.55,
        "wm": 0.80,
        "csf": 0.15,
        "bone": 0.05,
        "scalp": 0.95,
        "necrotic": 0.22,
        "oedema": 0.48,
        "enhancing": 0.52,
    },
)

T1C = ChannelSpec(
    key="t1c",
    label="T1c",
    series_number=5,
    series_description="T1 MPRAGE 3D post-contrast",
    contrast_agent=True,
    sequence=_MPRAGE,
    intensities={
        "gm": 0.57,
        "wm": 0.80,
        "csf": 0.16,
        "bone": 0.05,
        "scalp": 0.95,
        "necrotic": 0.22,
        "oedema": 0.50,
        "enhancing": 1.10,
    },
)

T2 = ChannelSpec(
    key="t2",
    label="T2",
    series_number=3,
    series_description="T2 TSE 3D",
    contrast_agent=False,
    sequence=MRSequence(
        scanning_sequence=("SE",),
        sequence_variant=("SK", "SP"),
        scan_options=(),
        sequence_name="*spc_314ns",
        repetition_time_ms=3200.0,
        echo_time_ms=409.0,
        inversion_time_ms=None,
        flip_angle_deg=120.0,
        echo_train_length=258,
        pixel_bandwidth_hz=751.0,
    ),
    intensities={
        "gm": 0.55,
        "wm": 0.38,
        "csf": 1.00,
        "bone": 0.04,
        "scalp": 0.65,
        "necrotic": 0.92,
        "oedema": 0.82,
        "enhancing": 0.68,
    },
)

FLAIR = ChannelSpec(
    key="flair",
    label="FLAIR",
    series_number=4,
    series_description="T2 FLAIR 3D",
    contrast_agent=False,
    sequence=MRSequence(
        scanning_sequence=("SE", "IR"),
        sequence_variant=("SK", "SP", "MP"),
        scan_options=(),
        sequence_name="*spcir_278ns",
        repetition_time_ms=5000.0,
        echo_time_ms=387.0,
        inversion_time_ms=1800.0,
        flip_angle_deg=120.0,
        echo_train_length=278,
        pixel_bandwidth_hz=781.0,
    ),
    intensities={
        "gm": 0.62,
        "wm": 0.45,
        "csf": 0.08,
        "bone": 0.04,
        "scalp": 0.70,
        "necrotic": 0.40,
        "oedema": 0.98,
        "enhancing": 0.78,
    },
)

#: The channels in BraTS input order (T1, T1c, T2, FLAIR).
CHANNELS: tuple[ChannelSpec, ...] = (T1, T1C, T2, FLAIR)
#: Channel by key.
CHANNELS_BY_KEY: Mapping[str, ChannelSpec] = MappingProxyType({c.key: c for c in CHANNELS})
