"""Frames and series metadata from the frame store, decided by nginx's cached guard decisions.

Through the real nginx, guard, API and Orthanc (the session ``platform``): the
store is written when Orthanc stores an instance, a viewer's request is
answered from it with the guard's Content-Type, a miss falls back to Orthanc
and fills it, a deleted instance is dropped; cached decisions never outlive a
token's expiry, a revocation or a disabled account by more than the bound, and
never serve another study; every answer from the store is audited.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from test_revocation_e2e import admin, new_user, patch_user, tokens_of
from test_stow_e2e import stow
from test_wado_plugin_e2e import HTJ2K, _htj2k_copy

from neuronova_lib import wado
from neuronova_lib.config import REPO_ROOT
from neuronova_lib.frames import store as frame_store
from neuronova_lib.stack.services import settings_env

pytestmark = pytest.mark.e2e

VIEWER = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
RPCL = "1.2.840.10008.1.2.4.202"


def _fresh_htj2k(frames: int) -> tuple[bytes, Any, list[bytes], Any]:
    """An HTJ2K instance in a study of its own (the shared studies A and B stay as they are)."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.StudyInstanceUID = generate_uid()
    with tempfile.NamedTemporaryFile(suffix=".dcm") as handle:
        ds.save_as(handle.name, enforce_file_format=True)
        return _htj2k_copy(handle.name, frames=frames)


def _wait(check: Any, what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def series(platform: Any) -> dict[str, Any]:
    """A new HTJ2K instance (3 frames) stored straight into Orthanc, as any way in does."""
    data, ds, codestreams, _ = _fresh_htj2k(3)
    answer = platform.store.store(data)
    store = frame_store.FrameStore(platform.settings.frames_dir)
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    paths = [store.frame_path(*uids, n, HTJ2K) for n in (1, 2, 3)]
    _wait(lambda: all(p.exists() for p in paths), "the plugin to write the frame store")
    return {
        "uids": uids, "orthanc_id": answer["ID"], "paths": paths, "store": store,
        "frames": [cs + b"\x00" * (len(cs) % 2) for cs in codestreams],
        "base": (f"/api/pacs/dicom-web/studies/{uids[0]}/series/{uids[1]}"
                 f"/instances/{uids[2]}"),
        "metadata": f"/api/pacs/dicom-web/studies/{uids[0]}/series/{uids[1]}/metadata",
    }


def _get(platform: Any, path: str, token: str | None = None, accept: str = VIEWER,
         signed: str | None = None, cookie: str | None = None) -> requests.Response:
    headers = {"Accept": accept, **({"Cookie": cookie} if cookie else {})}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url = platform.url + path + (f"?{signed}" if signed else "")
    return requests.get(url, headers=headers, timeout=20)


def _store_log(platform: Any, request_id: str) -> dict[str, Any] | None:
    path = platform.settings.log_dir / "nginx-frames.log"
    for line in path.read_text().splitlines() if path.exists() else []:
        entry = json.loads(line)
        if entry["request_id"] == request_id:
            return dict(entry)
    return None


def _served_from_store(platform: Any, answer: requests.Response) -> dict[str, Any]:
    request_id = answer.headers["X-Request-ID"]
    return dict(_wait(lambda: _store_log(platform, request_id), "the frame store log line"))


def test_frames_come_from_the_store_labelled_and_the_decision_is_cached(
        platform: Any, series: dict) -> None:
    token = platform.access_token()
    first = _get(platform, series["base"] + "/frames/2", token)
    assert first.status_code == 200, first.text[:300]
    assert first.headers["Content-Type"] == frame_store.content_type(HTJ2K)
    assert wado.split_multipart(first.content) == [(HTJ2K, series["frames"][1])]
    # A browser viewer sends the sign-in's cookie too: the decision is cached all the same.
    again = _get(platform, series["base"] + "/frames/3", token, cookie="neuronova_session=x")
    assert wado.split_multipart(again.content) == [(HTJ2K, series["frames"][2])]
    entry = _served_from_store(platform, again)
    claims = platform.tokens.verify(token, "access")
    assert (entry["token_id"], entry["user"], entry["study"]) == (claims.jti, claims.sub,
                                                                  series["uids"][0])
    assert entry["decision"] == "HIT"
    # Bit for bit what the Orthanc plugin answers (another Accept goes there).
    plugin = _get(platform, series["base"] + "/frames/3", token,
                  accept=f'multipart/related; type="application/octet-stream"; '
                         f"transfer-syntax={HTJ2K}")
    assert wado.split_multipart(plugin.content) == wado.split_multipart(again.content)
    assert _store_log(platform, plugin.headers["X-Request-ID"]) is None


def test_a_miss_falls_back_to_orthanc_and_fills_the_store(platform: Any, series: dict) -> None:
    path = series["paths"][0]
    path.unlink()
    answer = _get(platform, series["base"] + "/frames/1", platform.access_token())
    assert answer.status_code == 200
    assert wado.split_multipart(answer.content) == [(HTJ2K, series["frames"][0])]
    assert platform.wait_for_audit(answer.headers["X-Request-ID"], service="proxy")["status"] == 200
    assert path.read_bytes() == frame_store.frame_body(series["frames"][0], HTJ2K)


def _rpcl_instance() -> tuple[bytes, Any, bytes]:
    """A new instance stored as HTJ2K RPCL (a tile-part per resolution), 13 bits of 16."""
    from pydicom.encaps import generate_fragmented_frames

    from neuronova_lib.transcode import transcode_to_htj2k

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))  # 64 × 64, values 127 to 2145
    ds.BitsStored, ds.HighBit = 13, 12
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = (generate_uid()
                                                                     for _ in range(3))
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = transcode_to_htj2k(ds, syntax=RPCL)
    buffer = tempfile.SpooledTemporaryFile()
    out.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    [frame] = [b"".join(f) for f in generate_fragmented_frames(out.PixelData)]
    return buffer.read(), out, frame


def test_a_frame_levels_down_is_cut_once_and_served_from_the_store(platform: Any,
                                                                  series: dict) -> None:
    """``?reduce=k``: an RPCL frame cut to k levels down, kept in the store (and cut by the
    plugin on a miss); a frame whose codestream does not allow it answered whole."""
    from neuronova_lib import htj2k
    from neuronova_lib.htj2k.codestream import reduce_resolution

    data, ds, frame = _rpcl_instance()
    oid = platform.store.store(data)["ID"]
    store = frame_store.FrameStore(platform.settings.frames_dir)
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    kept = [store.frame_path(*uids, 1, RPCL, levels) for levels in (1, 2, 3, 4)]
    _wait(lambda: all(p.exists() for p in kept), "the plugin to write the reduced frames")
    # A miss (neither the frame nor its cut kept): the Orthanc plugin cuts it and fills both.
    kept[3].unlink()
    store.frame_path(*uids, 1, RPCL).unlink()
    base = f"/api/pacs/dicom-web/studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}"
    token = platform.access_token()
    sizes = [len(frame)]
    for levels in (1, 2, 3, 4):
        answer = _get(platform, base + "/frames/1", token, signed=f"reduce={levels}")
        assert answer.status_code == 200, answer.text[:300]
        [(label, cut)] = wado.split_multipart(answer.content)
        assert label == RPCL and cut == reduce_resolution(frame, levels)
        assert (htj2k.decode(cut) == htj2k.decode(frame, reduce=levels)).all()
        if levels <= 3:
            assert _served_from_store(platform, answer)["status"] == 200
        else:
            time.sleep(1.5)  # nginx flushes its frame log every second
            assert _store_log(platform, answer.headers["X-Request-ID"]) is None
            _wait(lambda: kept[3].exists() and store.frame_path(*uids, 1, RPCL).exists(),
                  "the plugin to fill the store")
        sizes.append(len(cut))
    assert sizes == sorted(sizes, reverse=True) and sizes[2] < sizes[0] / 4
    # An HTJ2K frame in one tile-part cannot be cut: it comes whole.
    whole = _get(platform, series["base"] + "/frames/1", token, signed="reduce=2")
    assert wado.split_multipart(whole.content) == [(HTJ2K, series["frames"][0])]
    # Nothing but reduce=1 to 5 is taken.
    refused = _get(platform, base + "/frames/1", token, signed="reduce=9")
    assert refused.status_code == 400 and refused.json()["reason"] == "bad_reduce"
    # `neuronova frames verify` checks the reduced answers against Orthanc's frame too.
    def orthanc(uri: str) -> bytes:
        reply = platform.store.session.get(platform.store.base_url + uri, timeout=10)
        reply.raise_for_status()
        return reply.content

    def problems() -> list[str]:  # of this instance (the store holds others)
        return [p for p in store.verify(orthanc, [oid])["problems"] if not p.startswith("stray")]

    assert problems() == []
    right = kept[1].read_bytes()
    kept[1].write_bytes(kept[0].read_bytes())
    assert [p for p in problems()
            if p.startswith("differs from Orthanc") and p.endswith(kept[1].name)]
    kept[1].write_bytes(right)


def test_series_metadata_is_stored_once_fetched_then_served_from_the_store(
        platform: Any, series: dict) -> None:
    token = platform.access_token()
    stored = series["store"].metadata_path(*series["uids"][:2])
    first = _get(platform, series["metadata"], token, accept="application/dicom+json")
    assert first.status_code == 200, first.text[:300]
    _wait(stored.exists, "nginx to store the metadata")
    second = _get(platform, series["metadata"], token, accept="application/dicom+json")
    assert second.status_code == 200 and second.content == first.content
    assert second.headers["Content-Type"] == "application/dicom+json"
    assert _served_from_store(platform, second)["study"] == series["uids"][0]


def test_study_b_refused_on_a_study_a_token_after_a_is_cached(platform: Any,
                                                              series: dict) -> None:
    token = platform.access_token(studies=[series["uids"][0]])
    for _ in range(2):
        assert _get(platform, series["base"] + "/frames/1", token).status_code == 200
    b = platform.study_b
    for path in (b.frame_path(), f"/api/pacs/dicom-web/studies/{b.study}/series/{b.series}/metadata"):
        answer = _get(platform, path, token, accept=VIEWER if "frames" in path
                      else "application/dicom+json")
        assert answer.status_code == 403, answer.text[:200]
        assert answer.json()["reason"] == "scope"
    # The same frame path under study B's UID: not in the store under B, refused anyway.
    forged = series["base"].replace(series["uids"][0], b.study)
    assert _get(platform, forged + "/frames/1", token).status_code == 403


def test_an_expired_token_is_not_served_past_its_expiry(platform: Any, series: dict) -> None:
    token = platform.access_token(ttl=3)
    exp = platform.tokens.verify(token, "access").exp
    while time.time() < exp - 0.3:
        answer = _get(platform, series["base"] + "/frames/1", token)
        assert answer.status_code == 200
        time.sleep(0.1)
    while time.time() < exp:
        time.sleep(0.02)
    # From the expiry on, no cached decision answers and the guard refuses: no leeway on exp.
    answer = _get(platform, series["base"] + "/frames/1", token)
    assert answer.status_code == 401 and answer.json()["reason"] == "expired"


def _refused_within_bound(platform: Any, request: Any, since: float) -> float:
    """Seconds from ``since`` to the first 401; the bound (+ network slack) is the limit."""
    bound = platform.settings.revocation_bound
    while True:
        answer = request()
        if answer.status_code == 401:
            return time.monotonic() - since
        assert answer.status_code == 200, answer.text[:200]
        assert time.monotonic() - since < bound + 0.5, "a cached decision outlived the bound"
        time.sleep(0.05)


def test_revoked_token_and_disabled_user_refused_within_the_bound(platform: Any,
                                                                  series: dict) -> None:
    name = new_user(platform)
    access = tokens_of(platform, name)["access_token"]
    other = tokens_of(platform, new_user(platform))["access_token"]
    frame = series["base"] + "/frames/2"
    for token in (access, other):
        for _ in range(3):
            assert _get(platform, frame, token).status_code == 200
    jti = platform.tokens.verify(access, "access").jti
    revoked = requests.post(f"{platform.url}/api/tokens/revoke", headers=admin(platform),
                            json={"jti": jti}, timeout=10)
    assert revoked.status_code in (200, 201), revoked.text
    _refused_within_bound(platform, lambda: _get(platform, frame, access), time.monotonic())
    other_name = platform.tokens.verify(other, "access").sub
    start = time.monotonic()
    patch_user(platform, other_name, is_active=False)
    _refused_within_bound(platform, lambda: _get(platform, frame, other), start)


def test_every_answer_from_the_store_is_in_the_audit(platform: Any, series: dict) -> None:
    token = platform.access_token()
    jti = platform.tokens.verify(token, "access").jti
    answers = [_get(platform, series["base"] + f"/frames/{n}", token) for n in (1, 2, 3, 1, 2)]
    served = [a for a in answers if _store_log(platform, a.headers["X-Request-ID"]) or
              _served_from_store(platform, a)]
    assert len(served) == 5

    def audited() -> int:
        rows = requests.get(f"{platform.url}/api/audit", headers=admin(platform), timeout=10,
                            params={"study": series["uids"][0], "limit": 500}).json()
        items = rows["items"] if isinstance(rows, dict) else rows
        return sum(r.get("repeat_count") or 1 for r in items
                   if r["service"] == "nginx" and r["token_id"] == jti)

    _wait(lambda: audited() == 5, "five audited answers", timeout=10)


def test_frames_cli_verifies_rebuilds_and_the_store_drops_deleted_instances(
        platform: Any, series: dict) -> None:
    env = {**os.environ, **settings_env(platform.settings), "PYTHONPATH": str(REPO_ROOT)}
    cli = [sys.executable, "-m", "neuronova_lib.cli", "frames"]
    data, ds, _, _ = _fresh_htj2k(2)
    oid = platform.store.store(data)["ID"]
    store = series["store"]
    paths = [store.frame_path(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                              n, HTJ2K) for n in (1, 2)]
    _wait(lambda: all(p.exists() for p in paths), "the frame store")
    paths[1].write_bytes(frame_store.frame_body(b"\xff\x4f not the frame", HTJ2K) or b"")
    bad = subprocess.run([*cli, "verify", "--json"], check=False, env=env, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert any("differs from Orthanc" in p and ds.SOPInstanceUID in p
               for p in json.loads(bad.stdout)["problems"])
    rebuilt = subprocess.run([*cli, "rebuild", "--json"], check=False, env=env, capture_output=True,
                             text=True, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr
    good = subprocess.run([*cli, "verify"], check=False, env=env, capture_output=True, text=True, timeout=120)
    assert good.returncode == 0, good.stdout + good.stderr
    deleted = platform.store.session.delete(f"{platform.store.base_url}/instances/{oid}",
                                            timeout=10)
    assert deleted.status_code == 200
    _wait(lambda: not paths[0].parent.parent.exists(), "the deleted instance to be dropped")


def test_an_instance_stored_through_the_ingest_gate_is_served_from_the_store(
        platform: Any) -> None:
    data, ds, codestreams, _ = _fresh_htj2k(1)
    stored = stow(platform, [data])
    assert stored.status_code == 200, stored.text[:300]
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    path = frame_store.FrameStore(platform.settings.frames_dir).frame_path(*uids, 1, HTJ2K)
    _wait(path.exists, "the frame store after STOW-RS")
    answer = _get(platform, f"/api/pacs/dicom-web/studies/{uids[0]}/series/{uids[1]}"
                            f"/instances/{uids[2]}/frames/1", platform.access_token())
    assert wado.split_multipart(answer.content) == [
        (HTJ2K, codestreams[0] + b"\x00" * (len(codestreams[0]) % 2))]
    assert _served_from_store(platform, answer)["token_id"]



def test_frames_filled_on_a_miss_are_dropped_with_their_instance(platform: Any) -> None:
    """An instance stored before the frame store existed: its frames enter on a miss, and
    deleting the instance in Orthanc still drops them."""
    data, ds, _, _ = _fresh_htj2k(1)
    oid = platform.store.store(data)["ID"]
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    store = frame_store.FrameStore(platform.settings.frames_dir)
    path = store.frame_path(*uids, 1, HTJ2K)
    _wait(path.exists, "the frame store")
    shutil.rmtree(store.instance_dir(*uids))
    (platform.settings.frames_dir / "by-id" / oid).unlink()
    base = f"/api/pacs/dicom-web/studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}"
    assert _get(platform, base + "/frames/1", platform.access_token()).status_code == 200
    # The plugin writes the frame once it has answered (a miss never waits for the cache).
    _wait(path.exists, "the frame store filled on a miss")
    deleted = platform.store.session.delete(f"{platform.store.base_url}/instances/{oid}",
                                            timeout=10)
    assert deleted.status_code == 200
    _wait(lambda: not store.instance_dir(*uids).exists(), "the instance to be dropped")
