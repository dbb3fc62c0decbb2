"""The gateway's edge against the real stack: no token in any log file, per-token
concurrency (429 with Retry-After), bounded work per request, nginx's own 429 and 502
audited, and NEURONOVA_PUBLIC_URL.

One platform for the module, with the default limits except a small study retrieve
bound, and a few made-up studies: one large instance (answers that outgrow nginx's
buffers and a slow reader's socket), a series of many small instances (viewer load).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

import neuronova_lib
from neuronova_lib.orthanc_store import OrthancStore
from neuronova_lib.security.tokens import TokenService, token_service
from neuronova_lib.stack.local import LocalPlatform, local_platform

pytestmark = pytest.mark.e2e

PREFIX = "/api/pacs/dicom-web"
RETRIEVE_MAX_INSTANCES = 3
ANY_SYNTAX = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@dataclass
class Edge:
    local: LocalPlatform
    tokens: TokenService
    study: str  # series "big" (1 large + 2 small instances) and "small" (1): 4 instances
    big_series: str
    big_sop: str
    small_series: str
    load_study: str  # one series of many small instances, for the viewer-speed load
    load_series: str

    @property
    def url(self) -> str:
        return self.local.url

    def bearer(self) -> tuple[str, dict]:
        token, claims = self.tokens.mint("clinician", "clinician", "access", 300)
        return token, claims

    def signed(self, study: str | None = None) -> tuple[str, dict]:
        return self.tokens.mint("clinician", "clinician", "signed", 300,
                                studies=[study or self.study])

    @property
    def big_path(self) -> str:
        return f"{PREFIX}/studies/{self.study}/series/{self.big_series}/instances/{self.big_sop}"


def _instance(folder: Path, study: str, series: str, rows: int = 64, columns: int = 64,
              slice_index: int = 0) -> Path:
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.InstanceNumber = slice_index + 1
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, float(slice_index)]
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = rows, columns
    ds.PixelData = np.random.default_rng(rows).integers(
        0, 4000, (rows, columns), dtype=np.uint16).tobytes()
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    home = tmp_path_factory.mktemp("edge-home")
    files = tmp_path_factory.mktemp("edge-files")
    # The settings' own /api/ rate (tests' platforms are roomier) and a small retrieve bound.
    with local_platform(home, watch=True, mlflow_enabled=False, api_rate="20r/s", api_burst=40,
                        retrieve_max_instances=RETRIEVE_MAX_INSTANCES) as local:
        store = OrthancStore.from_settings(local.settings)
        study, big, small = generate_uid(), generate_uid(), generate_uid()
        big_file = _instance(files, study, big, 2560, 2560)  # 12.5 MiB: more than nginx and the kernel buffer
        for path in [big_file, _instance(files, study, big), _instance(files, study, big),
                     _instance(files, study, small)]:
            store.store_file(str(path))
        load_study, load_series = generate_uid(), generate_uid()
        for index in range(48):
            store.store_file(str(_instance(files, load_study, load_series, slice_index=index)))
        yield Edge(local, token_service(local.settings), study, big,
                   pydicom.dcmread(big_file, stop_before_pixels=True).SOPInstanceUID, small,
                   load_study, load_series)


class SlowReader:
    """A client that asks for a large answer and then stops reading it.

    A tiny receive buffer keeps the answer in nginx (its buffers, then a temporary
    file), so the request stays in flight until :meth:`close`.
    """

    def __init__(self, edge: Edge, path: str, headers: dict[str, str]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((edge.local.settings.host, edge.local.settings.port))
        lines = [f"GET {path} HTTP/1.1", "Host: neuronova", f"Accept: {ANY_SYNTAX}",
                 *(f"{k}: {v}" for k, v in headers.items())]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.sock.settimeout(30)
        self.status_line = self.sock.recv(64).split(b"\r\n")[0].decode()

    def close(self) -> None:
        self.sock.close()


def _get(edge: Edge, path: str, **kwargs) -> requests.Response:
    kwargs.setdefault("timeout", 30)
    return requests.get(f"{edge.url}{path}", **kwargs)


def _audit_row(edge: Edge, request_id: str, timeout: float = 5.0) -> dict:
    """The last audit row of a request (an allowed request refused later has two)."""
    from sqlalchemy import select

    from neuronova_lib.db.engine import get_engine
    from neuronova_lib.db.models import AuditRecord

    engine = get_engine(edge.local.settings.sqlalchemy_url)
    query = select(AuditRecord.__table__).where(AuditRecord.request_id == request_id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            row = conn.execute(query.order_by(AuditRecord.id.desc())).mappings().first()
        if row:
            return dict(row)
        time.sleep(0.05)
    raise AssertionError(f"no audit record for request {request_id}")


def _kill(edge: Edge, name: str) -> int:
    """SIGKILL one service through the fixture's process handle; returns its pid."""
    process = edge.local.supervisor._running[name].process
    process.kill()
    process.wait(10)
    return process.pid


def _wait_restarted(edge: Edge, name: str, old_pid: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = edge.local.supervisor._running.get(name)
        if running is not None and running.process.pid != old_pid:
            try:
                if running.service.health():
                    return
            except requests.RequestException:
                pass
        time.sleep(0.2)
    raise AssertionError(f"{name} was not restarted within {timeout:.0f} s")


def _token_material(token: str, claims: dict) -> list[str]:
    header, payload, signature = token.split(".")
    return [token, payload, signature, claims["jti"]]


# -- no token in any log file ------------------------------------------------------

def test_no_token_in_any_log_file(edge: Edge) -> None:
    """Slow readers, an upstream killed mid-answer and services down, with a bearer token
    and a signed URL: nginx logs all of it, and no file under logs/ holds the tokens."""
    bearer, bearer_claims = edge.bearer()
    signed, signed_claims = edge.signed()
    as_bearer = {"Authorization": f"Bearer {bearer}"}
    series_path = f"{PREFIX}/studies/{edge.study}/series/{edge.big_series}"
    log_dir = edge.local.settings.log_dir

    # 1. Large answers to slow readers: nginx spools them to a temporary file (a warning
    #    that carries the request line).
    readers = [SlowReader(edge, edge.big_path, as_bearer),
               SlowReader(edge, f"{edge.big_path}?token={signed}", {})]
    assert all(r.status_line.endswith("200 OK") for r in readers), [r.status_line for r in readers]

    # 2. Orthanc killed while series retrieves are being answered, then asked while down.
    def retrieve(path: str, headers: dict[str, str]) -> None:
        try:
            requests.get(f"{edge.url}{path}", headers={"Accept": ANY_SYNTAX, **headers},
                         timeout=30)
        except requests.RequestException:
            pass

    threads = [threading.Thread(target=retrieve, args=(series_path, as_bearer)),
               threading.Thread(target=retrieve, args=(f"{series_path}?token={signed}", {}))]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    pid = _kill(edge, "orthanc")
    # At once: the supervisor restarts Orthanc within about a second.
    down = [_get(edge, edge.big_path, headers=as_bearer),
            _get(edge, f"{edge.big_path}?token={signed}")]
    for thread in threads:
        thread.join(30)
    assert [r.status_code for r in down] == [502, 502]
    row = _audit_row(edge, down[1].headers["X-Request-ID"])
    assert (row["service"], row["status"], row["reason"]) == ("proxy", 502, "upstream_unavailable")
    assert "orthanc unreachable" in row["detail"] and "token" not in row["path"]
    _wait_restarted(edge, "orthanc", pid)

    # 3. The guard killed: nginx cannot reach it; the API audits the 502 instead.
    pid = _kill(edge, "proxy")
    down = [_get(edge, edge.big_path, headers=as_bearer),
            _get(edge, f"{edge.big_path}?token={signed}")]
    assert [r.status_code for r in down] == [502, 502]
    row = _audit_row(edge, down[1].headers["X-Request-ID"])
    assert (row["service"], row["status"], row["reason"]) == ("api", 502, "upstream_unavailable")
    assert "guard unreachable" in row["detail"] and row["path"] == edge.big_path
    _wait_restarted(edge, "proxy", pid)
    for reader in readers:
        reader.close()

    # nginx wrote what happened (redacted), so the search below looks at real lines.
    deadline = time.monotonic() + 10
    error_log = log_dir / "nginx-error.log"
    while time.monotonic() < deadline:
        text = error_log.read_text() if error_log.exists() else ""
        if "buffered to a temporary file" in text and "connect() failed" in text:
            break
        time.sleep(0.2)
    assert "buffered to a temporary file" in text and "connect() failed" in text, text[-2000:]
    assert "token=[redacted]" in text
    time.sleep(1.2)  # the access log is flushed every second

    material = (_token_material(bearer, bearer_claims)
                + _token_material(signed, signed_claims))
    files = [p for p in log_dir.rglob("*") if p.is_file()]
    assert {"nginx-error.log", "nginx-access.log", "orthanc.log", "proxy.log",
            "api.log"} <= {p.name for p in files}
    for path in files:
        content = path.read_bytes().decode("utf-8", "replace")
        found = [m[:12] for m in material if m in content]
        assert not found, f"{path} holds token material {found}"


# -- bounded concurrent requests per token -----------------------------------------

def test_one_token_over_its_concurrency_gets_429_and_others_do_not(edge: Edge) -> None:
    limit = edge.local.settings.token_concurrency
    bearer, _ = edge.bearer()
    other, _ = edge.signed()
    readers = [SlowReader(edge, edge.big_path, {"Authorization": f"Bearer {bearer}"})
               for _ in range(limit)]
    try:
        assert all(r.status_line.endswith("200 OK") for r in readers)
        # Another spelling of the same token counts against the same limit.
        over = _get(edge, edge.big_path, headers={"Authorization": f"bearer  {bearer} ",
                                                  "Accept": ANY_SYNTAX})
        assert over.status_code == 429, over.text
        assert int(over.headers["Retry-After"]) >= 1
        assert over.json()["reason"] == "token_concurrency"
        assert "X-Neuronova-Limit" not in over.headers
        row = _audit_row(edge, over.headers["X-Request-ID"])
        assert (row["status"], row["reason"]) == (429, "token_concurrency")
        assert str(limit) in row["detail"]

        fine = _get(edge, f"{edge.big_path}?token={other}", headers={"Accept": ANY_SYNTAX})
        assert fine.status_code == 200 and len(fine.content) > 4 * 1024**2
        assert not any(name.lower().startswith("x-neuronova") for name in fine.headers)
    finally:
        for reader in readers:
            reader.close()
    deadline = time.monotonic() + 10
    while _get(edge, edge.big_path, headers={"Authorization": f"Bearer {bearer}",
                                             "Accept": ANY_SYNTAX}).status_code == 429:
        assert time.monotonic() < deadline, "the token's slots were not given back"
        time.sleep(0.2)


def test_viewer_speed_load_sees_no_429(edge: Edge) -> None:
    """The platform client at its default workers, on a 48-instance series."""
    token, _ = edge.signed(edge.load_study)
    statuses: list[int] = []
    url = f"{edge.url}{PREFIX}/studies/{edge.load_study}?token={token}"
    with neuronova_lib.connect_signed(url) as client:
        client.session.hooks["response"].append(lambda r, **_: statuses.append(r.status_code))
        start = time.time()
        volume = client.load_series(edge.load_study, edge.load_series, progress=False,
                                    use_cache=False)
    assert volume is not None and len(statuses) >= 48
    assert 429 not in statuses and set(statuses) == {200}
    time.sleep(1.2)  # access log flush: nginx saw no 429 either (the client retries them)
    lines = [json.loads(line) for line in
             (edge.local.settings.log_dir / "nginx-access.log").read_text().splitlines()]
    assert not [e for e in lines if e["status"] == 429 and edge.load_series in e["uri"]
                and e["time"] >= time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start))]


# -- bounded work per request ------------------------------------------------------

def test_a_repeated_frame_list_is_refused(edge: Edge) -> None:
    bearer, _ = edge.bearer()
    headers = {"Authorization": f"Bearer {bearer}"}
    answer = _get(edge, f"{edge.big_path}/frames/1,1", headers=headers)
    assert answer.status_code == 400 and answer.json()["reason"] == "repeated_frames"
    assert _get(edge, f"{edge.big_path}/frames/1", headers=headers).status_code == 200


def test_an_oversize_study_retrieve_is_refused_with_a_hint(edge: Edge) -> None:
    signed, _ = edge.signed()
    study = _get(edge, f"{PREFIX}/studies/{edge.study}?token={signed}",
                 headers={"Accept": ANY_SYNTAX})
    assert study.status_code == 413
    assert "4 instances" in study.text and "one series at a time" in study.text
    assert f"at most {RETRIEVE_MAX_INSTANCES} instances" in study.text
    series = _get(edge, f"{PREFIX}/studies/{edge.study}/series/{edge.big_series}?token={signed}",
                  headers={"Accept": ANY_SYNTAX})
    assert series.status_code == 200
    assert series.content.count(b"Content-Type: application/dicom") == 3


# -- nginx's own 429 on /api/ ------------------------------------------------------

def test_api_rate_limit_answers_429_with_retry_after_and_is_audited(edge: Edge) -> None:
    settings = edge.local.settings
    burst = settings.api_burst + 60
    with requests.Session() as session:
        answers = [session.get(f"{edge.url}/api/health", timeout=10) for _ in range(burst)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited, "no request was rate limited"
    assert int(limited[0].headers["Retry-After"]) >= 1
    row = _audit_row(edge, limited[0].headers["X-Request-ID"])
    assert (row["status"], row["reason"], row["path"]) == (429, "rate_limited", "/api/health")


def test_the_refusal_routes_are_not_reachable_from_outside(edge: Edge) -> None:
    for path in ("/api/pacs/_refused", "/api/pacs/_stow_auth"):
        answer = requests.get(f"{edge.url}{path}", headers={"X-Refused-Status": "502"},
                              timeout=10)
        assert answer.status_code == 404
        assert _audit_row(edge, answer.headers["X-Request-ID"])["reason"] == "internal_or_unknown"


# -- NEURONOVA_PUBLIC_URL ----------------------------------------------------------

def test_public_url_starts_signed_urls_and_stow_retrieve_urls(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Behind TLS or another proxy: what users get starts with the public URL; the
    platform's own probes keep using the local address (it starts at all)."""
    from bad_inputs import good_mr

    from neuronova_lib.wado import multipart_body

    public = "https://pacs.example.org/neuronova"
    monkeypatch.setenv("NEURONOVA_PUBLIC_URL", public + "/")
    with local_platform(tmp_path / "home", mlflow_enabled=False) as local:
        assert local.settings.public_url == public
        tokens = token_service(local.settings)
        admin, _ = tokens.mint("admin", "admin", "access", 300)
        body, content_type = multipart_body([(good_mr(901), None)], "application/dicom")
        stored = requests.post(f"{local.url}{PREFIX}/studies", data=body, timeout=120, headers={
            "Authorization": f"Bearer {admin}", "Content-Type": content_type,
            "Accept": "application/dicom+json"})
        assert stored.status_code == 200, stored.text
        answer = stored.json()
        study_url = answer["00081190"]["Value"][0]
        instance_url = answer["00081199"]["Value"][0]["00081190"]["Value"][0]
        assert study_url.startswith(f"{public}{PREFIX}/studies/")
        assert instance_url.startswith(f"{public}{PREFIX}/studies/")
        study = study_url.rsplit("/", 1)[1]

        signed = requests.post(f"{local.url}/api/pacs/sign", json={"study_uid": study},
                               headers={"Authorization": f"Bearer {admin}"}, timeout=10)
        assert signed.status_code == 200, signed.text
        assert signed.json()["url"].startswith(f"{public}{PREFIX}/studies/{study}?token=")
        # The signed URL works once its public part is swapped for the local address.
        local_twin = signed.json()["url"].replace(public, local.url)
        assert requests.get(local_twin.replace("?", "/metadata?"), timeout=30).status_code == 200

