"""The frame store's bodies, the cached decision's lifetime and the store log's audit rows."""

from __future__ import annotations

from datetime import UTC, datetime

from neuronova_lib import wado
from neuronova_lib.frames import store
from neuronova_lib.frames.access_audit import audit_rows
from neuronova_lib.uids import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN
from services.proxy.app import decision_ttl

HTJ2K = "1.2.840.10008.1.2.4.201"


def test_a_stored_body_is_what_the_plugin_sends_with_the_fixed_boundary() -> None:
    frame = b"\xff\x4f\xff\x51" + bytes(range(256)) * 10
    body = store.frame_body(frame, HTJ2K)
    assert body is not None
    assert wado.split_multipart(body) == [(HTJ2K, frame)]
    assert store.frame_of(body) == frame
    plugin_body, plugin_type = wado.multipart_frames([frame], HTJ2K)
    boundary = plugin_type.rpartition("boundary=")[2]
    assert plugin_body.replace(boundary.encode(), store.BOUNDARY.encode()) == body
    assert plugin_type.replace(boundary, store.BOUNDARY) == store.content_type(HTJ2K)


def test_a_frame_holding_the_boundary_is_not_stored() -> None:
    assert store.frame_body(b"x--" + store.BOUNDARY.encode() + b"y", HTJ2K) is None


def test_labels_and_extensions() -> None:
    assert store.label(IMPLICIT_VR_LITTLE_ENDIAN) == EXPLICIT_VR_LITTLE_ENDIAN
    assert store.label(HTJ2K) == HTJ2K
    assert "." not in store.extension(HTJ2K)  # nginx reads the type after the last dot
    assert len({store.extension(label) for label in store.LABELS}) == len(store.LABELS)


def test_paths_take_uids_only() -> None:
    frames = store.FrameStore("/srv/frames")
    assert str(frames.frame_path("1.2", "1.3", "1.4", 7, HTJ2K)) == (
        "/srv/frames/studies/1.2/series/1.3/instances/1.4/frames/7.ts1_2_840_10008_1_2_4_201")
    for bad in ("..", "1/2", "1..2", ""):
        try:
            frames.instance_dir("1.2", "1.3", bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted as a UID")


def test_a_cached_decision_ends_before_the_token_and_within_the_bound() -> None:
    now = 1_000_000.0
    assert decision_ttl(now + 3600, 5.0, 0.0, now) == 4
    assert decision_ttl(now + 3600, 5.0, 2.4, now) == 1  # an older snapshot: less time
    assert decision_ttl(now + 2.5, 5.0, 0.0, now) == 1  # the token ends first
    assert decision_ttl(now + 1.5, 5.0, 0.0, now) == 0  # not cached at all
    assert decision_ttl(now - 1, 5.0, 0.0, now) == 0
    assert decision_ttl(now + 3600, 5.0, 6.0, now) == 0


def test_store_log_lines_become_one_row_per_reader_and_series() -> None:
    def line(n: int, jti: str, status: int = 200, uri: str = "") -> dict:
        return {"msec": 1_700_000_000 + n, "client": "127.0.0.1", "method": "GET",
                "uri": uri or f"/api/pacs/dicom-web/studies/1.2/series/1.3/instances/1.4/frames/{n}",
                "status": status, "bytes": 100, "request_id": f"r{n}", "user": "ana",
                "role": "clinician", "token_id": jti, "study": "1.2", "decision": "HIT"}

    rows = audit_rows([line(1, "a"), line(2, "a"), line(3, "b"), line(4, "a"),
                       line(5, "a", uri="/api/pacs/dicom-web/studies/1.2/series/1.3/metadata")])
    by = {(r["token_id"], r["path"].rsplit("/", 1)[1]): r for r in rows}
    first = by[("a", "*")]
    assert (first["repeat_count"], first["request_id"], first["username"]) == (3, "r1", "ana")
    assert first["time"] == datetime.fromtimestamp(1_700_000_001, UTC)
    assert first["last_time"] == datetime.fromtimestamp(1_700_000_004, UTC)
    assert (first["service"], first["decision"], first["study"]) == ("nginx", "allow", "1.2")
    assert by[("b", "*")]["repeat_count"] == 1 and by[("b", "*")]["last_time"] is None
    assert by[("a", "metadata")]["repeat_count"] == 1
