"""The platform's DICOM listener with the real stack: modalities store through the ingest gate.

pynetdicom and dcmtk's ``storescu`` play the modalities, with good and bad files
mixed: good ones are stored and read back through nginx (WADO-RS) as stored,
bad ones are refused with the C-STORE status their reason calls for and
quarantined, and the listener and Orthanc stay up. Unknown AE titles are
rejected at association; Orthanc's own DICOM listener is never open.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pydicom
import pytest
import requests
from bad_inputs import bad_inputs, dicom_bytes, good_mr, mr
from orthanc_checks import retrieve_instance
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import MRImageStorage, Verification
from sqlalchemy import select

from neuronova_lib.db.engine import get_engine
from neuronova_lib.db.models import AuditRecord
from neuronova_lib.db.users import demo_password
from neuronova_lib.dimse.listener import TRANSFER_SYNTAXES
from neuronova_lib.dimse.probe import echo
from neuronova_lib.ingest import Quarantine
from neuronova_lib.orthanc_store import OrthancStore
from neuronova_lib.stack.local import LocalPlatform, local_platform
from neuronova_lib.transcode import transcode_to_htj2k

pytestmark = pytest.mark.e2e

CORPUS = Path(__file__).parent / "ingest_corpus"
MODALITY = "MODALITY1"
STORESCU = "STORESCU"
SUCCESS, OUT_OF_RESOURCES, MISMATCH, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xA900, 0xC000

#: The C-STORE status each FINDINGS bad-input class is refused with (PS3.4 B.2.3).
EXPECTED_STATUS = {
    "image_too_large": OUT_OF_RESOURCES,
    "bad_bits": MISMATCH,
    "pixel_length_mismatch": MISMATCH,
    "photometric_mismatch": MISMATCH,
    "syntax_mismatch": CANNOT_UNDERSTAND,
    "codestream_invalid": CANNOT_UNDERSTAND,
    "nesting_too_deep": CANNOT_UNDERSTAND,
}


@pytest.fixture(scope="module")
def dicom_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    for binary, package in (("Orthanc", "orthanc"), ("nginx", "nginx"), ("storescu", "dcmtk")):
        if shutil.which(binary) is None and not Path(f"/usr/sbin/{binary}").exists():
            pytest.fail(f"{binary} is missing: run `make test` (it installs Debian {package})")
    home = tmp_path_factory.mktemp("neuronova-dicom")
    modalities = {"MR1": [MODALITY, "127.0.0.1", 104], "SCU": [STORESCU, "localhost", 105],
                  "FAR": ["FARAWAY", "192.0.2.7", 104]}
    with local_platform(home, mlflow_enabled=False, dicom_enabled=True, dicom_host="127.0.0.1",
                        dicom_modalities=modalities, ingest_orthanc_wait=2.0) as local:
        yield local


def _write(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.dcm"
    path.write_bytes(data)
    return path


@pytest.fixture(autouse=True)
def _send_files_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    # pynetdicom then sends a file's data set from disk, never decoded (a modality that
    # sends hostile bytes must not need to parse them) and never re-encoded.
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)


def _send(platform: LocalPlatform, files: list[Path], aet: str = MODALITY
          ) -> list[tuple[int, str]]:
    """C-STORE each file, its data set byte for byte as on disk."""
    ae = AE(ae_title=aet)
    for syntax in TRANSFER_SYNTAXES:  # one context per syntax: the files use many
        ae.add_requested_context(MRImageStorage, syntax)
    assoc = ae.associate("127.0.0.1", platform.settings.dicom_port,
                         ae_title=platform.settings.dicom_aet)
    assert assoc.is_established
    answers = []
    try:
        for path in files:
            status = assoc.send_c_store(path)
            answers.append((int(status.Status), str(status.get("ErrorComment", ""))))
    finally:
        assoc.release()
    return answers


def _dataset_bytes(data: bytes) -> bytes:
    """A Part 10 file without its preamble and file meta: the data set the modality sent."""
    meta_end = 144 + int.from_bytes(data[140:144], "little")
    return data[meta_end:]


def _audit(platform: LocalPlatform, **where: Any) -> list[dict[str, Any]]:
    query = select(AuditRecord.__table__).where(AuditRecord.service == "dicom")
    for name, value in where.items():
        query = query.where(getattr(AuditRecord, name) == value)
    with get_engine(platform.settings.sqlalchemy_url).connect() as conn:
        return [dict(r) for r in conn.execute(query.order_by(AuditRecord.id)).mappings()]


def _login(platform: LocalPlatform, username: str) -> str:
    response = requests.post(f"{platform.url}/api/auth/token", timeout=10, data={
        "username": username, "password": demo_password(platform.settings, username)})
    response.raise_for_status()
    return str(response.json()["access_token"])


def _alive(platform: LocalPlatform) -> None:
    settings = platform.settings
    assert echo("127.0.0.1", settings.dicom_port, settings.dicom_aet)
    assert OrthancStore.from_settings(settings).get_json("/system")["Version"]


def _without_trailing_padding(data: bytes) -> bytes:
    """dcmtk drops Data Set Trailing Padding (FFFC,FFFC), which MR_small has, when it sends."""
    ds = pydicom.dcmread(io.BytesIO(data))
    del ds[0xFFFCFFFC]
    return dicom_bytes(ds)


def _good_htj2k() -> bytes:
    ds = pydicom.dcmread(io.BytesIO(good_mr(40)))
    return dicom_bytes(transcode_to_htj2k(ds))


def test_pynetdicom_modality_good_and_bad_files_mixed(dicom_platform: LocalPlatform,
                                                      tmp_path: Path) -> None:
    good = {f"good{i}": good_mr(20 + i) for i in range(3)}
    good["good_htj2k"] = _good_htj2k()
    ds = pydicom.dcmread(io.BytesIO(good_mr(30)))
    good["good_implicit"] = dicom_bytes(ds, implicit=True)
    bad = {name: data for name, (data, _) in bad_inputs().items()}
    reasons = {name: reason for name, (_, reason) in bad_inputs().items()}
    for path in sorted(CORPUS.glob("nested-48-*.dcm")):
        bad[path.stem] = path.read_bytes()
        reasons[path.stem] = "nesting_too_deep"
    names = sorted({**good, **bad}, key=lambda n: hashlib.sha1(n.encode()).hexdigest())
    files = [_write(tmp_path, n, {**good, **bad}[n]) for n in names]

    answers = dict(zip(names, _send(dicom_platform, files)))

    for name in good:
        assert answers[name] == (SUCCESS, ""), (name, answers[name])
    for name in bad:
        status, comment = answers[name]
        assert comment.startswith(reasons[name] + ":"), (name, answers[name])
        assert status == EXPECTED_STATUS[reasons[name]], (name, hex(status))
    _alive(dicom_platform)
    # Stored as sent: Orthanc holds the data set the modality sent, byte for byte (the file
    # meta is the listener's, as for any C-STORE); read back through nginx and the guard it
    # is that file, except implicit VR, which DICOMweb never labels: it comes back in
    # explicit VR little endian with the same attributes and pixels.
    token = _login(dicom_platform, "clinician")
    store = OrthancStore.from_settings(dicom_platform.settings)
    for name, data in good.items():
        held = store.instance_file(store.find_instance(
            str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)))
        assert held is not None and _dataset_bytes(held) == _dataset_bytes(data), name
        fetched = retrieve_instance(dicom_platform.url, token, data)
        if name == "good_implicit":
            sent, got = pydicom.dcmread(io.BytesIO(data)), pydicom.dcmread(io.BytesIO(fetched))
            assert got.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
            assert list(got) == list(sent), name
        else:
            assert fetched == held, name
    # Every bad file is in quarantine, sent by this modality through the listener.
    entries = [e for e in Quarantine(dicom_platform.settings).list()
               if any(s.get("route") == "dicom" and s.get("sender") == MODALITY
                      for s in e.submissions)]
    held_sets = {_dataset_bytes(e.read_bytes()) for e in entries}
    for name, data in bad.items():
        assert _dataset_bytes(data) in held_sets, name
    # One audit record per C-STORE (refusals of one kind may share a record with a count).
    rows = _audit(dicom_platform, username=MODALITY)
    assert sum(r["repeat_count"] for r in rows if r["decision"] == "allow") == len(good)
    assert sum(r["repeat_count"] for r in rows if r["decision"] == "deny") == len(bad)
    assert {r["reason"] for r in rows if r["decision"] == "deny"} == set(reasons.values())
    stored_studies = {str(pydicom.dcmread(io.BytesIO(d), stop_before_pixels=True)
                          .StudyInstanceUID) for d in good.values()}
    assert {r["study"] for r in rows if r["decision"] == "allow"} == stored_studies


def test_storescu_good_and_bad_files_mixed(dicom_platform: LocalPlatform,
                                           tmp_path: Path) -> None:
    good = [_without_trailing_padding(good_mr(50 + i)) for i in range(2)]
    bad = {name: bad_inputs()[name] for name in ("nested_48", "bits_allocated_0",
                                                 "claims_65535x65535")}
    files = [_write(tmp_path, f"good{i}", d) for i, d in enumerate(good)]
    files += [_write(tmp_path, name, data) for name, (data, _) in bad.items()]
    before = len(Quarantine(dicom_platform.settings).list())

    result = subprocess.run(
        ["storescu", "-v", "--no-halt", "-aet", STORESCU,
         "-aec", dicom_platform.settings.dicom_aet,
         "127.0.0.1", str(dicom_platform.settings.dicom_port), *map(str, files)],
        capture_output=True, text=True, timeout=120)

    log = result.stdout + result.stderr
    answers = re.findall(r"Received Store Response \(([^)]*)\)", log)
    assert answers == ["Success", "Success", "Error: CannotUnderstand",
                       "Error: DataSetDoesNotMatchSOPClass", "Refused: OutOfResources"], log
    token = _login(dicom_platform, "clinician")
    for data in good:
        assert _dataset_bytes(retrieve_instance(dicom_platform.url, token, data)) == \
            _dataset_bytes(data)
    assert len(Quarantine(dicom_platform.settings).list()) == before + len(bad)
    rows = _audit(dicom_platform, username=STORESCU)
    assert sum(r["repeat_count"] for r in rows) == len(files)
    assert {r["client"] for r in rows} == {"127.0.0.1"}
    _alive(dicom_platform)


def test_unknown_or_misplaced_callers_are_rejected_at_association(
        dicom_platform: LocalPlatform) -> None:
    settings = dicom_platform.settings
    cases = [("INTRUDER", settings.dicom_aet, "unknown_aet"),
             ("FARAWAY", settings.dicom_aet, "aet_wrong_host"),  # known, but not from here
             (MODALITY, "ORTHANC", "called_aet")]
    for calling, called, reason in cases:
        ae = AE(ae_title=calling)
        ae.add_requested_context(MRImageStorage)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", settings.dicom_port, ae_title=called)
        assert assoc.is_rejected, (calling, called)
        assert assoc.acceptor.primitive.result == 0x01  # rejected permanent
        rows = _audit(dicom_platform, username=calling, reason=reason)
        assert rows and rows[-1]["decision"] == "deny" and rows[-1]["method"] == "A-ASSOCIATE"
    # The health probe's AE title may echo, but never store.
    ae = AE(ae_title="NEURONOVA-PROBE")
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate("127.0.0.1", settings.dicom_port, ae_title=settings.dicom_aet)
    assert assoc.is_established
    ds = mr()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    status = assoc.send_c_store(ds)
    assoc.release()
    assert int(status.Status) == 0x0124
    assert OrthancStore.from_settings(settings).find_instance(str(ds.SOPInstanceUID)) is None
    _alive(dicom_platform)


def _listening_ports(pid: int) -> set[int]:
    process = psutil.Process(pid)
    return {c.laddr.port for c in process.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN}


def test_orthanc_listens_for_http_only(dicom_platform: LocalPlatform) -> None:
    pids = dicom_platform.supervisor.pids()
    assert _listening_ports(pids["orthanc"]) == {dicom_platform.settings.orthanc_port}
    assert dicom_platform.settings.dicom_port in _listening_ports(pids["dicom"])
    config = (dicom_platform.settings.run_dir / "orthanc.json").read_text()
    assert '"DicomServerEnabled": false' in config


def test_orthanc_down_is_out_of_resources_and_the_listener_is_restarted(
        dicom_platform: LocalPlatform, tmp_path: Path) -> None:
    supervisor = dicom_platform.supervisor
    data = good_mr(60)
    path = _write(tmp_path, "later", data)
    os.killpg(supervisor.pids()["orthanc"], signal.SIGKILL)
    time.sleep(0.5)

    ((status, comment),) = _send(dicom_platform, [path])

    assert status == OUT_OF_RESOURCES and comment.startswith("orthanc_unavailable:")
    assert supervisor.check() == ["orthanc"]
    assert _send(dicom_platform, [path]) == [(SUCCESS, "")]  # the modality's retry
    # A listener that dies is restarted like any service.
    os.killpg(supervisor.pids()["dicom"], signal.SIGKILL)
    time.sleep(0.5)
    assert supervisor.check() == ["dicom"]
    _alive(dicom_platform)
    log = (dicom_platform.settings.log_dir / "dicom.log").read_text()
    assert "C-STORE" in log and "orthanc_unavailable" in log
