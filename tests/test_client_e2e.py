"""`neuronova_lib.connect()` against the real stack: sign in, refresh, signed URLs, volumes, cache."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

import neuronova_lib
from neuronova_lib.stack.platform import load_folder
from neuronova_lib.demo import SIZES, CaseInfo, write_demo_cases
from neuronova_lib.dicomweb.auth import TokenExpiredError
from neuronova_lib.dicomweb.client import BRATS_CHANNELS, Client

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def case(platform: Any, tmp_path_factory: pytest.TempPathFactory) -> CaseInfo:
    """One small demo case (64×64×40, four series) stored in the platform's Orthanc as HTJ2K."""
    shape, spacing = SIZES["small"]
    [info] = write_demo_cases(tmp_path_factory.mktemp("demo"), cases=1, seed=7,
                              shape=shape, spacing=spacing)
    # Stored as `make up` stores the demo: transcoded to HTJ2K lossless, verified.
    load_folder(platform.settings, info.directory, htj2k=True)
    return info


def _nifti(case: CaseInfo, channel: str) -> nib.Nifti1Image:
    return nib.load(case.nifti[channel])


def _stored_copy(platform: Any, files: list[Path], study: str, series: str,
                 description: str | None = None, transform: Any = None) -> None:
    """Store ``files`` again under new UIDs (a new series, optionally a new study)."""
    for path in files:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if description:
            ds.SeriesDescription = description
        if transform is not None:
            ds = transform(ds)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        platform.store.store(buffer.getvalue())


@pytest.fixture()
def client(platform: Any) -> Iterator[Client]:
    with neuronova_lib.connect(platform.url, username="clinician",
                               password=platform.password("clinician")) as c:
        yield c


def _count_requests(client: Client) -> list[str]:
    urls: list[str] = []
    client.session.hooks["response"].append(lambda r, **_: urls.append(r.request.url) or r)
    return urls


# -- signing in, finding ------------------------------------------------------------------

def test_password_sign_in_finds_the_study_and_its_series(client: Client, case: CaseInfo) -> None:
    assert client.whoami()["role"] == "clinician"
    [study] = client.find_studies(patient_id=case.patient_id)
    assert study.study_uid == case.study_instance_uid
    assert study.series_count == 4 and study.instance_count == 160
    assert study.patient_name == case.patient_name
    series = client.series(study)
    assert {s.series_uid for s in series} == set(case.series_instance_uids.values())
    assert series[0].description == "T1 MPRAGE 3D"
    assert all(s.instance_count == 40 for s in series)


def test_find_studies_by_description_and_patient_name(client: Client, case: CaseInfo) -> None:
    assert case.study_instance_uid in {s.study_uid for s in client.find_studies(description="tumour")}
    assert case.study_instance_uid in {s.study_uid for s in client.find_studies(
        patient_name=case.patient_name)}


def test_wrong_password_is_an_http_error(platform: Any) -> None:
    with pytest.raises(requests.HTTPError) as caught:
        neuronova_lib.connect(platform.url, username="clinician", password="not-the-password")
    assert caught.value.response.status_code == 401


def test_connect_reads_the_kernel_environment(platform: Any, case: CaseInfo,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEURONOVA_URL", platform.url)
    monkeypatch.setenv("NEURONOVA_TOKEN", platform.login("scientist"))
    with neuronova_lib.connect() as c:
        assert c.whoami()["role"] == "scientist"
        assert c.find_studies(patient_id=case.patient_id)


# -- volumes --------------------------------------------------------------------------------

def test_load_series_equals_the_nifti_bit_for_bit(client: Client, case: CaseInfo) -> None:
    volume = client.load_series(case.study_instance_uid, case.series_instance_uids["t1"],
                                progress=False)
    image = _nifti(case, "t1")
    expected = np.asanyarray(image.dataobj)
    assert volume.array.dtype == expected.dtype == np.uint16
    assert np.array_equal(volume.array, expected)
    np.testing.assert_allclose(volume.affine_ras, image.affine, atol=1e-4)  # sform is float32
    np.testing.assert_allclose(volume.affine_ras, np.asarray(case.ras_affine), atol=1e-4)
    assert volume.orientation == "LPS" and volume.spacing == pytest.approx(case.spacing)
    files = sorted(case.dicom_dirs["t1"].glob("*.dcm"))  # 0001.dcm … = slice k order
    assert volume.sop_uids == tuple(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
                                    for f in files)
    assert volume.metadata["SeriesDescription"] == "T1 MPRAGE 3D"
    assert volume.metadata["TransferSyntaxUIDs"] == ["1.2.840.10008.1.2.4.201"]  # as `make up` stores
    assert (volume.study_uid, volume.series_uid) == (case.study_instance_uid,
                                                     case.series_instance_uids["t1"])


def test_whole_series_transport_gives_the_same_volume(client: Client, case: CaseInfo) -> None:
    """transport="series": one streamed WADO-RS request, instances as stored."""
    frames = client.load_series(case.study_instance_uid, case.series_instance_uids["t2"],
                                progress=False)
    urls = _count_requests(client)
    whole = client.load_series(case.study_instance_uid, case.series_instance_uids["t2"],
                               progress=False, transport="series")
    assert len(urls) == 1 and "/frames/" not in urls[0]
    assert np.array_equal(whole.array, frames.array)
    np.testing.assert_array_equal(whole.affine_lps, frames.affine_lps)
    assert whole.sop_uids == frames.sop_uids
    assert whole.metadata["SeriesDescription"] == frames.metadata["SeriesDescription"]


def test_load_study_gives_the_four_channels_in_brats_order(client: Client, case: CaseInfo) -> None:
    volume = client.load_study(case.study_instance_uid, progress=False)
    assert volume.channels == BRATS_CHANNELS == ("t1", "t1c", "t2", "flair")
    assert volume.array.shape == (4, *case.shape) and volume.array.dtype == np.uint16
    for index, channel in enumerate(volume.channels):
        assert np.array_equal(volume.array[index], np.asanyarray(_nifti(case, channel).dataobj)), channel
        assert volume.channel_series[channel] == case.series_instance_uids[channel]
    assert volume.metadata["resampled_channels"] == []
    np.testing.assert_allclose(volume.affine_ras, _nifti(case, "t1").affine, atol=1e-4)


def test_load_study_resamples_a_channel_on_another_grid(client: Client, platform: Any,
                                                        case: CaseInfo) -> None:
    """A copy of the study whose FLAIR lacks its first slice: it is put back on the T1 grid."""
    study = generate_uid()
    series = {ch: generate_uid() for ch in BRATS_CHANNELS}
    for channel in BRATS_CHANNELS:
        files = sorted(case.dicom_dirs[channel].glob("*.dcm"))
        _stored_copy(platform, files[1:] if channel == "flair" else files, study, series[channel])
    volume = client.load_study(study, progress=False)
    assert volume.metadata["resampled_channels"] == ["flair"]
    assert volume.array.dtype == np.float32
    flair = np.asanyarray(_nifti(case, "flair").dataobj).astype(np.float32)
    # Whole-voxel shift: trilinear weights are 0 or 1 up to float rounding.
    np.testing.assert_allclose(volume.array[3][:, :, 1:], flair[:, :, 1:], atol=1e-6)
    np.testing.assert_array_equal(volume.array[3][:, :, 0], 0)  # outside the FLAIR stack
    t1 = np.asanyarray(_nifti(case, "t1").dataobj)
    np.testing.assert_array_equal(volume.array[0], t1)


def test_htj2k_series_is_decoded_by_the_platform_codec(client: Client, platform: Any,
                                                       case: CaseInfo) -> None:
    """Stored HTJ2K frames come back as stored, labelled, and decode bit-exact here."""
    from neuronova_lib import transcode
    study, series = generate_uid(), generate_uid()
    _stored_copy(platform, sorted(case.dicom_dirs["t2"].glob("*.dcm")), study, series,
                 transform=transcode.transcode_to_htj2k)
    volume = client.load_series(study, series, progress=False)
    assert volume.metadata["TransferSyntaxUIDs"] == ["1.2.840.10008.1.2.4.201"]
    assert np.array_equal(volume.array, np.asanyarray(_nifti(case, "t2").dataobj))


def test_reduced_htj2k_load_decodes_the_lower_resolution_on_the_same_space(
        client: Client, case: CaseInfo) -> None:
    """reduce=1: each HTJ2K frame decoded at half size (its LL band, not a subsample),
    spacing doubled, the first voxel's centre where it was."""
    from neuronova_lib import htj2k
    study, series = case.study_instance_uid, case.series_instance_uids["flair"]
    full = client.load_series(study, series, progress=False)
    half = client.load_series(study, series, progress=False, reduce=1)
    columns, rows, slices = full.array.shape
    assert half.array.shape == (-(-columns // 2), -(-rows // 2), slices)
    assert half.array.dtype == full.array.dtype
    assert half.metadata["ReducedResolutionLevels"] == 1
    assert half.sop_uids == full.sop_uids
    np.testing.assert_allclose(half.affine_lps[:3, :2], full.affine_lps[:3, :2] * 2)
    np.testing.assert_allclose(half.affine_lps[:, 2:], full.affine_lps[:, 2:])
    k = slices // 2
    [(syntax, data)] = client._fetch_frames(study, series, full.sop_uids[k], [full.frame_numbers[k]])
    assert syntax == "1.2.840.10008.1.2.4.201"
    assert np.array_equal(half.array[:, :, k], htj2k.decode(data, reduce=1).T)
    # The low-pass band is the image at half size, sampled where every other pixel sits.
    sampled = full.array[::2, ::2].ravel().astype(float)
    assert np.corrcoef(sampled, half.array.ravel().astype(float))[0, 1] > 0.97
    assert int(half.array.max()) <= int(full.array.max()) * 1.5  # nothing wrapped around


def test_reduced_load_of_uncompressed_frames_subsamples_them(client: Client, platform: Any,
                                                            case: CaseInfo) -> None:
    study, series = generate_uid(), generate_uid()
    _stored_copy(platform, sorted(case.dicom_dirs["t1"].glob("*.dcm")), study, series)
    full = client.load_series(study, series, progress=False)
    assert "1.2.840.10008.1.2.4.201" not in full.metadata["TransferSyntaxUIDs"]
    quarter = client.load_series(study, series, progress=False, reduce=2)
    assert np.array_equal(quarter.array, full.array[::4, ::4, :])
    np.testing.assert_allclose(quarter.affine_lps[:3, :2], full.affine_lps[:3, :2] * 4)
    # Every third slice: a third of the frame requests, the slice spacing three times.
    urls = _count_requests(client)
    thin = client.load_series(study, series, progress=False, reduce=1, slice_step=3,
                              use_cache=False)
    assert sum("/frames/" in u for u in urls) == len(full.sop_uids[::3])
    assert np.array_equal(thin.array, full.array[::2, ::2, ::3])
    assert thin.sop_uids == full.sop_uids[::3] and thin.metadata["SliceStep"] == 3
    np.testing.assert_allclose(thin.affine_lps[:3, 2], full.affine_lps[:3, 2] * 3)
    np.testing.assert_allclose(thin.affine_lps[:3, 3], full.affine_lps[:3, 3])
    with pytest.raises(ValueError, match="reduce must be an integer from 0 to 5"):
        client.load_series(study, series, progress=False, reduce=6)
    with pytest.raises(ValueError, match="transport='frames'"):
        client.load_series(study, series, progress=False, reduce=1, transport="series")
    with pytest.raises(ValueError, match="slice_step must be a positive integer"):
        client.load_series(study, series, progress=False, slice_step=0)


def test_one_slice_is_one_frame_request_placed_where_it_lies(client: Client, platform: Any,
                                                             case: CaseInfo) -> None:
    study, series = generate_uid(), generate_uid()
    _stored_copy(platform, sorted(case.dicom_dirs["t1"].glob("*.dcm")), study, series)
    full = client.load_series(study, series, progress=False)
    last = full.array.shape[2] - 1
    for fraction, k in ((0.0, 0), (0.5, round(0.5 * last)), (1.0, last)):
        urls = _count_requests(client)
        one = client.load_series(study, series, progress=False, slice_at=fraction,
                                 use_cache=False)
        assert sum("/frames/" in u for u in urls) == 1
        assert one.array.shape == (*full.array.shape[:2], 1)
        assert np.array_equal(one.array[:, :, 0], full.array[:, :, k])
        assert one.sop_uids == (full.sop_uids[k],) and one.metadata["SliceAt"] == fraction
        # Voxel (i, j, 0) of the slice is voxel (i, j, k) of the series.
        np.testing.assert_allclose(one.affine_lps @ (3, 5, 0, 1), full.affine_lps @ (3, 5, k, 1))
    # The metadata read once serves every later load: frame requests only.
    metadata = client.series_metadata(study, series)
    urls = _count_requests(client)
    again = client.load_series(study, series, progress=False, slice_at=1.0, use_cache=False,
                               instances=metadata)
    assert len(urls) == 1 and "/frames/" in urls[0]
    assert np.array_equal(again.array[:, :, 0], full.array[:, :, last])
    with pytest.raises(ValueError, match="slice_at must be a fraction from 0 to 1"):
        client.load_series(study, series, progress=False, slice_at=1.5)


def test_a_reduced_load_of_rpcl_frames_fetches_them_cut(client: Client, platform: Any,
                                                        case: CaseInfo) -> None:
    """The platform cuts RPCL frames to the resolution asked (``?reduce=``): the same volume
    as whole frames decoded at that level, in a fraction of the bytes."""
    from neuronova_lib import transcode
    from neuronova_lib.htj2k import HTJ2K_LOSSLESS_RPCL

    study, series = generate_uid(), generate_uid()
    _stored_copy(platform, sorted(case.dicom_dirs["flair"].glob("*.dcm")), study, series,
                 transform=lambda ds: transcode.transcode_to_htj2k(ds, syntax=HTJ2K_LOSSLESS_RPCL))
    frames: list[tuple[str, int]] = []
    client.session.hooks["response"].append(
        lambda r, **_: frames.append((r.request.url, len(r.content)))
        if "/frames/" in r.request.url else None)
    cut = client.load_series(study, series, progress=False, reduce=2)
    asked, frames[:] = list(frames), []
    assert asked and all(url.endswith("?reduce=2") for url, _ in asked)
    client._asks_reduced = False  # as against a server that refuses ?reduce=
    whole = client.load_series(study, series, progress=False, reduce=2)
    assert frames and not any("reduce=" in url for url, _ in frames)
    assert np.array_equal(cut.array, whole.array) and cut.affine_lps.tolist() == whole.affine_lps.tolist()
    assert sum(n for _, n in asked) < sum(n for _, n in frames) / 4


# -- errors are errors -----------------------------------------------------------------------

def test_a_study_outside_a_signed_clients_scope_is_a_403_not_an_empty_list(
        client: Client, platform: Any, case: CaseInfo) -> None:
    signed = client.sign(case.study_instance_uid, ttl=120)
    assert signed.studies == (case.study_instance_uid,)
    assert "token=" in signed.url and signed.token not in repr(signed)
    with neuronova_lib.connect_signed(signed.url) as scoped:
        assert [s.study_uid for s in scoped.find_studies()] == [case.study_instance_uid]
        other = platform.study_b
        with pytest.raises(requests.HTTPError) as caught:
            scoped.series(other.study)
        assert caught.value.response.status_code == 403
        assert "token=***" in str(caught.value) and signed.token not in str(caught.value)
        with pytest.raises(requests.HTTPError) as caught:
            scoped.load_series(other.study, other.series, progress=False)
        assert caught.value.response.status_code == 403
        with pytest.raises(requests.HTTPError) as caught:
            scoped.find_studies(study_uid=other.study)
        assert caught.value.response.status_code == 403


def test_signed_client_appends_its_token_to_every_request(client: Client, case: CaseInfo) -> None:
    signed = client.sign(case.study_instance_uid, ttl=120)
    scoped = signed.connect()
    urls = _count_requests(scoped)
    volume = scoped.load_series(case.study_instance_uid, case.series_instance_uids["flair"],
                                progress=False)
    assert np.array_equal(volume.array, np.asanyarray(_nifti(case, "flair").dataobj))
    assert len(urls) == 41  # metadata + 40 frames
    assert all(f"token={signed.token}" in url for url in urls)
    assert sum("/frames/" in url for url in urls) == 40
    with pytest.raises(RuntimeError, match="cannot mint"):
        scoped.sign(case.study_instance_uid)
    scoped.auth.clock = lambda: time.time() + 3600
    started = time.monotonic()
    with pytest.raises(TokenExpiredError, match="signed URL expired"):
        scoped.series(case.study_instance_uid)
    assert time.monotonic() - started < 2, "an expired token must fail at once, not be retried"


# -- token lifetime -------------------------------------------------------------------------

def _login_pair(platform: Any, username: str = "clinician") -> dict[str, Any]:
    response = requests.post(f"{platform.url}/api/auth/token", timeout=10, data={
        "username": username, "password": platform.password(username)})
    response.raise_for_status()
    return dict(response.json())


def test_token_is_refreshed_before_it_expires_and_the_new_one_works(platform: Any,
                                                                    case: CaseInfo) -> None:
    short = platform.access_token("clinician", ttl=40)
    refresh = _login_pair(platform)["refresh_token"]
    with neuronova_lib.connect(platform.url, short, refresh_token=refresh) as c:
        assert c.find_studies(patient_id=case.patient_id)
        assert c.auth.refreshes == 0
        c.auth.clock = lambda: time.time() + 25  # 15 s before exp: inside the margin
        assert c.find_studies(patient_id=case.patient_id)
        assert c.auth.refreshes == 1
        renewed = c.auth.token()
        assert renewed != short
        assert platform.tokens.verify(renewed, "access").sub == "clinician"
        c.auth.renew()  # the rotated refresh token is the one used now (reuse would revoke all)
        assert c.auth.refreshes == 2 and c.whoami()["username"] == "clinician"


def test_without_refresh_token_the_password_signs_in_again(platform: Any, case: CaseInfo) -> None:
    short = platform.access_token("clinician", ttl=40)
    with neuronova_lib.connect(platform.url, short, username="clinician",
                               password=platform.password("clinician")) as c:
        c.auth.clock = lambda: time.time() + 25
        assert c.find_studies(patient_id=case.patient_id)
        assert (c.auth.refreshes, c.auth.logins) == (0, 1)


def test_an_expired_token_with_no_way_to_renew_says_where_to_get_one(platform: Any) -> None:
    expired = platform.access_token("clinician", ttl=-60)
    with neuronova_lib.connect(platform.url, expired) as c:
        started = time.monotonic()
        with pytest.raises(TokenExpiredError, match="token expired.*get a new one from"):
            c.find_studies()
        assert time.monotonic() - started < 2


def test_a_401_triggers_one_renewal_and_one_retry(platform: Any, case: CaseInfo) -> None:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    forged = ".".join([b64({"alg": "EdDSA", "kid": "nope"}),
                       b64({"exp": time.time() + 3600, "iat": time.time()}), "c2ln"])
    with neuronova_lib.connect(platform.url, forged, username="clinician",
                               password=platform.password("clinician")) as c:
        urls = _count_requests(c)
        assert c.find_studies(patient_id=case.patient_id)
        assert c.auth.logins == 1
        assert len(urls) == 1  # the hook saw the final (retried) answer


# -- cache ---------------------------------------------------------------------------------

def test_cache_serves_a_second_load_without_frame_requests(platform: Any, case: CaseInfo,
                                                           tmp_path: Path) -> None:
    series = case.series_instance_uids["t1c"]
    expected = np.asanyarray(_nifti(case, "t1c").dataobj)
    with neuronova_lib.connect(platform.url, username="clinician",
                               password=platform.password("clinician"), cache_dir=tmp_path) as c:
        urls = _count_requests(c)
        first = c.load_series(case.study_instance_uid, series, progress=False)
        assert len(urls) == 41 and c.cache is not None and c.cache.writes == 40
        second = c.load_series(case.study_instance_uid, series, progress=False)
        assert len(urls) == 42, "only the metadata (which re-checks access) goes out"
        assert c.cache.hits == 40
        third = c.load_series(case.study_instance_uid, series, progress=False, offline=True)
        assert len(urls) == 42, "offline: nothing goes out"
    for volume in (first, second, third):
        assert np.array_equal(volume.array, expected)
    # A new kernel with the same cache folder and no network at all:
    offline = Client("http://127.0.0.1:9", requests.Session(), cache_dir=tmp_path)
    assert np.array_equal(offline.load_series(case.study_instance_uid, series, progress=False,
                                              offline=True).array, expected)
