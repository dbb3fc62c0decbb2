"""One UID rule and one table of reason codes, shared by every part that needs them."""

from __future__ import annotations

import pytest


def test_one_uid_rule_everywhere() -> None:
    """The guard, the gate, the client and the bulk sources agree on what a UID is."""
    from services.proxy.paths import Refusal, check_uid

    from neuronova_lib.bulk.sources import SourceError, parse_source
    from neuronova_lib.dicomweb.uid_arguments import require_uid as client_uid
    from neuronova_lib.uids import require_uid, valid_uid

    for good in ("1.2.840.10008.1.2.4.201", "0", "1.0.3", "9" * 64):
        assert valid_uid(good) and check_uid(good, "uid") == good and client_uid(good, "x") == good
    for bad in ("1.02.3", "01.2", "1..2", "1.2.", "", "1.a", "9" * 65, " 1.2"):
        assert not valid_uid(bad), bad
        with pytest.raises(Refusal):
            check_uid(bad, "uid")
        with pytest.raises(ValueError):
            client_uid(bad, "StudyInstanceUID")
    with pytest.raises(SourceError):
        parse_source("orthanc:1.02.3")
    with pytest.raises(TypeError):
        require_uid(1.2)


def test_one_table_of_reasons() -> None:
    from neuronova_lib import transcode
    from neuronova_lib.bulk import results
    from neuronova_lib.ingest import REASONS
    from neuronova_lib.reasons import Kind, Reason

    assert transcode.Reason is Reason and not hasattr(results, "BulkReason")
    assert REASONS == {r.value: r.description for r in Reason}
    assert all(r.description and isinstance(r.kind, Kind) for r in Reason)
    assert Reason("sop_instance_conflict").kind is Kind.REFUSAL
