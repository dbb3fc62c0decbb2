"""Every reason code the platform gives for a refused, skipped or failed instance, once.

The ingest gate, the store step (STOW-RS, uploads, bulk transcoding, the DICOM
listener), the transcoder and the bulk runner all report what became of an
instance with one of these codes. The string values are stable: they are in
bulk manifests and reports, quarantine records, STOW-RS ``Warning`` headers,
audit rows and tests. Add a code here; never rename one.

Each member carries its :class:`Kind` and a one-line description for people
(the quarantine listing and the API show it next to the code)::

    >>> Reason.NESTING_TOO_DEEP.description
    'sequences nested deeper than the configured cap'
    >>> Reason("already_htj2k").kind
    <Kind.SKIP: 'skip'>
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Kind(StrEnum):
    """What a reason means for the instance.

    ``refusal`` — the file was judged and refused (kept in quarantine);
    ``skip`` — nothing to do with it (reported, not an error);
    ``failure`` — something went wrong on the way; sending it again may work.
    """

    REFUSAL = "refusal"
    SKIP = "skip"
    FAILURE = "failure"


class Reason(StrEnum):
    """A reason code with its :class:`Kind` and a description (``.kind``, ``.description``)."""

    kind: Kind
    description: str

    def __new__(cls, value: str, kind: Kind, description: str) -> "Reason":
        member = str.__new__(cls, value)
        member._value_ = value
        member.kind = kind
        member.description = description
        return member

    # -- the ingest gate's checks (neuronova_lib.ingest.checks)
    NOT_DICOM = ("not_dicom", Kind.REFUSAL,
                 "not a DICOM Part 10 file (a bulk run over a folder skips it instead)")
    NO_PREAMBLE = ("no_preamble", Kind.REFUSAL,
                   "DICOM without the Part 10 preamble and 'DICM' prefix")
    TOO_LARGE = ("too_large", Kind.REFUSAL, "file larger than the configured cap")
    MALFORMED = ("malformed", Kind.REFUSAL,
                 "element structure pydicom or the raw walk cannot follow")
    NESTING_TOO_DEEP = ("nesting_too_deep", Kind.REFUSAL,
                        "sequences nested deeper than the configured cap")
    TOO_MANY_ELEMENTS = ("too_many_elements", Kind.REFUSAL,
                         "more data elements than the configured cap")
    LENGTH_EXCEEDS_DATA = ("length_exceeds_data", Kind.REFUSAL,
                           "a declared length runs past the bytes present")
    UNSUPPORTED_SYNTAX = ("unsupported_syntax", Kind.REFUSAL,
                          "transfer syntax unknown or not decodable here")
    SOP_CLASS_NOT_ALLOWED = ("sop_class_not_allowed", Kind.REFUSAL,
                             "SOP Class not in the allow-list")
    BAD_UID = ("bad_uid", Kind.REFUSAL,
               "SOP/Study/Series Instance UID missing, malformed or over 64 chars")
    NO_PATIENT_ID = ("no_patient_id", Kind.REFUSAL, "Patient ID missing or empty")
    NO_PIXEL_DATA = ("no_pixel_data", Kind.REFUSAL,
                     "no Pixel Data: the gate refuses an image SOP class without it; "
                     "transcoding skips an object that has none (SR, RT plan)")
    MISSING_ATTRIBUTE = ("missing_attribute", Kind.REFUSAL,
                         "a required Image Pixel module attribute is missing or invalid")
    BAD_DIMENSIONS = ("bad_dimensions", Kind.REFUSAL,
                      "Rows, Columns or Number of Frames zero or negative")
    BAD_BITS = ("bad_bits", Kind.REFUSAL, "BitsAllocated/BitsStored/HighBit inconsistent")
    PHOTOMETRIC_MISMATCH = ("photometric_mismatch", Kind.REFUSAL,
                            "photometric interpretation does not fit SamplesPerPixel/LUTs")
    IMAGE_TOO_LARGE = ("image_too_large", Kind.REFUSAL,
                       "Rows x Columns x Frames x Samples over the configured cap")
    PIXEL_LENGTH_MISMATCH = ("pixel_length_mismatch", Kind.REFUSAL,
                             "pixel data length does not match the declared image")
    SYNTAX_MISMATCH = ("syntax_mismatch", Kind.REFUSAL,
                       "native syntax with encapsulated pixel data, or the reverse")
    CODESTREAM_INVALID = ("codestream_invalid", Kind.REFUSAL,
                          "a compressed frame does not decode to the declared image")

    # -- the gate's sandbox (neuronova_lib.ingest.sandbox)
    CHECKER_CRASHED = ("checker_crashed", Kind.REFUSAL, "the checker process died on this file")
    CHECKER_TIMEOUT = ("checker_timeout", Kind.REFUSAL,
                       "the checker ran past its time limit on this file")
    CHECKER_OUT_OF_MEMORY = ("checker_out_of_memory", Kind.REFUSAL,
                             "the checker ran out of memory on this file")

    # -- storing an accepted file (neuronova_lib.ingest.store, every way in)
    STUDY_MISMATCH = ("study_mismatch", Kind.REFUSAL,
                      "STOW-RS to /studies/{uid}: the instance belongs to another study")
    SOP_INSTANCE_CONFLICT = ("sop_instance_conflict", Kind.REFUSAL,
                             "the archive holds another object under this SOP Instance UID")
    SERIES_INSTANCE_CONFLICT = ("series_instance_conflict", Kind.REFUSAL,
                                "the archive holds this Series Instance UID under another "
                                "patient or study")
    STUDY_INSTANCE_CONFLICT = ("study_instance_conflict", Kind.REFUSAL,
                               "the archive holds this Study Instance UID under another patient")
    ORTHANC_REFUSED = ("orthanc_refused", Kind.REFUSAL, "Orthanc refused a file the gate accepted")
    ORTHANC_UNAVAILABLE = ("orthanc_unavailable", Kind.FAILURE,
                           "Orthanc could not be reached within the wait (not quarantined)")

    # -- the transcoder (neuronova_lib.transcode)
    ALREADY_HTJ2K = ("already_htj2k", Kind.SKIP, "already HTJ2K: nothing to transcode")
    UNSUPPORTED_TARGET_SYNTAX = ("unsupported_target_syntax", Kind.FAILURE,
                                 "the requested target is not an HTJ2K transfer syntax")
    NO_TRANSFER_SYNTAX = ("no_transfer_syntax", Kind.FAILURE,
                          "the file meta has no Transfer Syntax UID")
    UNSUPPORTED_PHOTOMETRIC = ("unsupported_photometric_interpretation", Kind.FAILURE,
                               "a photometric interpretation the transcoder does not code "
                               "(colour, palette)")
    UNSUPPORTED_PIXEL_FORMAT = ("unsupported_pixel_format", Kind.FAILURE,
                                "a bit depth or sample format the transcoder does not code")
    TRUNCATED_PIXEL_DATA = ("truncated_pixel_data", Kind.FAILURE,
                            "pixel data shorter than the declared image")
    DECODE_FAILED = ("decode_failed", Kind.FAILURE, "the source pixels could not be decoded")
    ENCODE_FAILED = ("encode_failed", Kind.FAILURE, "the HTJ2K encoder failed")
    VERIFICATION_MISMATCH = ("verification_mismatch", Kind.FAILURE,
                             "the HTJ2K copy does not decode to the original pixels")
    READ_FAILED = ("read_failed", Kind.FAILURE, "the file or instance could not be read or parsed")

    # -- around the transcoder in a bulk run (neuronova_lib.bulk)
    GATE_UNAVAILABLE = ("gate_unavailable", Kind.FAILURE,
                        "this worker cannot run the ingest gate's checker process")
    STORE_FAILED = ("store_failed", Kind.FAILURE, "Orthanc did not store or delete the instance")
    REREAD_MISMATCH = ("reread_mismatch", Kind.FAILURE,
                       "what Orthanc holds after storing is not the file sent")
    ORTHANC_INSTANCE_MISSING = ("orthanc_instance_missing", Kind.FAILURE,
                                "the Orthanc instance is gone and no backup of it exists")
    BACKUP_FAILED = ("backup_failed", Kind.FAILURE,
                     "the original could not be backed up before it was replaced")
    BACKUP_CONFLICT = ("backup_conflict", Kind.FAILURE,
                       "Orthanc holds another file than the backup an interrupted run left")
    WORKER_LOST = ("worker_lost", Kind.FAILURE, "the Dask worker died while holding the batch")
    ERROR = ("error", Kind.FAILURE, "an unexpected error (the message names it)")


#: Code → description, for listings (the quarantine, the API, the CLI).
REASONS: Final[dict[str, str]] = {r.value: r.description for r in Reason}

#: Outcomes of a bulk run that mean "not an image to transcode" rather than "an image that
#: went wrong": not DICOM at all (a README beside a series), already HTJ2K, no pixels.
SKIP_REASONS: Final = frozenset({Reason.ALREADY_HTJ2K, Reason.NO_PIXEL_DATA, Reason.NOT_DICOM})


def describe(code: str | None) -> str | None:
    """The description of ``code``; ``None`` for an unknown or missing code."""
    return REASONS.get(code or "")
