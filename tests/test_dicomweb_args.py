"""The client's UID arguments are typed: a str holding a UID, else TypeError; checked before any request."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from pydicom.uid import UID

from neuronova_lib.dicomweb import SeriesSummary, StudySummary
from neuronova_lib.dicomweb.cache import FrameCache
from neuronova_lib.dicomweb.client import Client
from neuronova_lib.dicomweb.uid_arguments import require_uid, series_uid_of, study_uid_of

STUDY, SERIES = "1.2.840.99.1", "1.2.840.99.1.2"
NOT_STR = [5, 1.2, b"1.2.3", bytearray(b"1.2"), None, {"1.2.3"}, object()]
NOT_UID = ["", "1..2", "1.2.", "a.b", "1.2.3 ", "1.2/../3", "1" * 65]


class NoNetwork(requests.Session):
    """A real Session that fails loudly if a request is attempted: UID checks come first."""

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # noqa: ARG002
        raise AssertionError(f"a request was sent: {args[:2]}")


@pytest.fixture
def client() -> Iterator[Client]:
    with Client("http://127.0.0.1:9", NoNetwork()) as c:
        yield c


def _calls(client: Client) -> dict[str, Callable[[Any], Any]]:
    """Every public method taking a UID, with the UID in one argument."""
    return {
        "series": lambda uid: client.series(uid),
        "series_metadata(study)": lambda uid: client.series_metadata(uid, SERIES),
        "series_metadata(series)": lambda uid: client.series_metadata(STUDY, uid),
        "load_series(study)": lambda uid: client.load_series(uid, SERIES, progress=False),
        "load_series(series)": lambda uid: client.load_series(STUDY, uid, progress=False),
        "load_study": lambda uid: client.load_study(uid, progress=False),
        "load_study(series=)": lambda uid: client.load_study(STUDY, series={"t1": uid},
                                                             progress=False),
        "sign": lambda uid: client.sign(uid),
        "sign([...])": lambda uid: client.sign([STUDY, uid]),
        "find_studies(study_uid=)": lambda uid: client.find_studies(study_uid=uid),
    }


@pytest.mark.parametrize("value", NOT_STR, ids=lambda v: type(v).__name__)
def test_a_uid_that_is_not_a_str_is_a_type_error(client: Client, value: Any) -> None:
    for name, call in _calls(client).items():
        if value is None and name == "find_studies(study_uid=)":
            continue  # optional there: None means "no filter"
        with pytest.raises(TypeError, match="must be a str"):
            call(value)
            pytest.fail(f"{name} accepted {value!r}")


@pytest.mark.parametrize("value", NOT_UID)
def test_a_str_that_is_not_a_uid_is_a_value_error(client: Client, value: str) -> None:
    for call in _calls(client).values():
        with pytest.raises(ValueError, match="is not a DICOM UID"):
            call(value)


def test_uids_and_records_are_accepted() -> None:
    study = StudySummary(STUDY, "P", "N", "", "", "", (), None, None)
    series = SeriesSummary(STUDY, SERIES, "MR", "T1", 1, 10)
    assert study_uid_of(STUDY) == study_uid_of(study) == study_uid_of(series) == STUDY
    assert series_uid_of(SERIES) == series_uid_of(series) == SERIES
    accepted = require_uid(UID(STUDY), "StudyInstanceUID")  # pydicom's UID is a str
    assert accepted == STUDY and type(accepted) is str
    with pytest.raises(TypeError):
        series_uid_of(study)  # type: ignore[arg-type]  # a study record has no series UID


def test_cache_keys_are_typed_too(tmp_path: Any) -> None:
    cache = FrameCache(tmp_path)
    with pytest.raises(TypeError):
        cache.get_frame(123, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        cache.get_frame("../etc", 1)
