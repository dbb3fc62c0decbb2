"""The DICOM listener's rules without a network: who may associate, which status answers what."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from neuronova_lib.config import Settings
from neuronova_lib.dimse.modalities import PROBE_AET, KnownModalities
from neuronova_lib.dimse.status import error_comment, store_status
from neuronova_lib.reasons import REASONS

#: C-STORE failure statuses PS3.4 B.2.3 / PS3.7 9.1.1.1.9 allow (ranges and codes).
ALLOWED = [range(0xA700, 0xA800), range(0xA900, 0xAA00), range(0xC000, 0xD000),
           [0x0122, 0x0124]]


def _resolve(host: str) -> list[str]:
    return {"ct.example": ["10.0.0.5", "fd00::5"], "gone.example": []}.get(host, [host])


def test_known_aet_only_from_its_own_host() -> None:
    known = KnownModalities({"CT1": ["CT1", "ct.example", 104], "MR1": ["MR1", "10.0.0.7", 104],
                             "OLD": ["OLD", "gone.example", 104]}, resolve=_resolve)
    assert known.admit("CT1", "10.0.0.5").may_store
    assert known.admit("CT1  ", "::ffff:10.0.0.5").may_store  # padded AET, mapped address
    assert known.admit("CT1", "fd00::5").may_store
    assert known.admit("CT1", "10.0.0.7").reason == "aet_wrong_host"
    assert known.admit("MR1", "10.0.0.7").modality == "MR1"
    assert known.admit("OLD", "10.0.0.9").reason == "aet_wrong_host"  # unresolvable: nobody
    assert known.admit("ct1", "10.0.0.5").reason == "unknown_aet"  # AE titles are exact
    probe = known.admit(PROBE_AET, "127.0.0.1")
    assert probe.accepted and not probe.may_store
    assert not known.admit(PROBE_AET, "10.0.0.5").accepted


def test_every_gate_reason_has_a_c_store_status_the_standard_allows() -> None:
    assert store_status(True, None) == 0x0000
    for reason in [*REASONS, None, "listener_error"]:
        status = store_status(False, reason)
        assert any(status in allowed for allowed in ALLOWED), (reason, hex(status))
    assert store_status(False, "orthanc_unavailable") == 0xA700  # the modality sends again
    assert store_status(False, "nesting_too_deep") == 0xC000
    assert store_status(False, "bad_bits") == 0xA900
    assert store_status(False, "sop_instance_conflict") == 0xA900
    assert store_status(False, "sop_class_not_allowed") == 0x0122


def test_error_comment_is_a_valid_lo() -> None:
    text = error_comment("malformed", "bad \\ value\n" + "x" * 200)
    assert text.startswith("malformed: bad   value")
    assert len(text) <= 64 and "\\" not in text and all(0x20 <= ord(c) < 0x7F for c in text)


@pytest.mark.parametrize("entry", [["CT1", "host"], ["", "host", 104], ["A" * 17, "h", 104],
                                   ["CT1", "host", "104x"]])
def test_malformed_modalities_are_refused_with_the_variable_named(entry: list) -> None:
    with pytest.raises(ValidationError, match="NEURONOVA_DICOM_MODALITIES"):
        Settings(dicom_modalities={"X": entry})
