"""Bounded fuzz of the sandboxed ingest gate with mutated real DICOM bytes.

The gate may only accept or refuse cleanly, within its time bound: never crash,
hang or run out of memory on an input, never accept what it cannot parse.
An input that breaks it is written to ``tests/ingest_corpus/`` (by sha256) so
that ``test_ingest.py::test_corpus_regressions_replayed`` replays it forever.
Budget: well under 60 s (``NEURONOVA_FUZZ_EXAMPLES`` raises it for a long run).
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import time
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from neuronova_lib.config import Settings
from neuronova_lib.ingest import Gate
from neuronova_lib.transcode import transcode_to_htj2k

CORPUS = Path(__file__).parent / "ingest_corpus"
EXAMPLES = int(os.environ.get("NEURONOVA_FUZZ_EXAMPLES", "2000"))
TIMEOUT = 10.0
BROKEN = {"checker_crashed", "checker_timeout", "checker_out_of_memory"}
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
             b"UT", b"UV"}


def _write(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _seeds() -> list[bytes]:
    mr = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    seq = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    inner = pydicom.Dataset()
    inner.ReferencedSOPInstanceUID = "1.2.3"
    for _ in range(6):
        outer = pydicom.Dataset()
        outer.ReferencedImageSequence = pydicom.Sequence([inner])
        inner = outer
    seq.ReferencedImageSequence = pydicom.Sequence([inner])
    corpus = [p.read_bytes() for p in sorted(CORPUS.glob("*.dcm"))] if CORPUS.is_dir() else []
    return [_write(mr), ct, _write(transcode_to_htj2k(mr)), _write(seq), *corpus]


SEEDS = _seeds()


def _top_level_lengths(data: bytes) -> list[tuple[int, int]]:
    """(offset, width) of each top-level explicit-VR-LE length field after the meta."""
    found = []
    pos = 132
    while pos + 8 <= len(data):
        vr = data[pos + 4:pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(data):
                break
            found.append((pos + 8, 4))
            length = struct.unpack_from("<I", data, pos + 8)[0]
            pos += 12
        else:
            found.append((pos + 6, 2))
            length = struct.unpack_from("<H", data, pos + 6)[0]
            pos += 8
        if length == 0xFFFFFFFF:
            break
        pos += length
    return found


def _nest(depth: int) -> bytes:
    """``depth`` undefined-length sequences (0008,1140), explicit VR LE, properly closed."""
    opening = b"\x08\x00\x40\x11SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    closing = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    return opening * depth + closing * depth


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    kind = draw(st.sampled_from(["flip", "truncate", "length", "nest", "mixed"]))
    if kind in ("flip", "mixed"):
        for _ in range(draw(st.integers(1, 16))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
    if kind in ("length", "mixed"):
        fields = _top_level_lengths(bytes(data))
        if fields:
            for _ in range(draw(st.integers(1, 3))):
                offset, width = draw(st.sampled_from(fields))
                value = draw(st.one_of(st.sampled_from([0, 1, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF]),
                                       st.integers(0, 2**(8 * width) - 1)))
                value &= (1 << (8 * width)) - 1
                data[offset:offset + width] = value.to_bytes(width, "little")
    if kind == "nest":
        fields = _top_level_lengths(bytes(data))
        offsets = [o - (8 if w == 4 else 6) for o, w in fields]
        at = draw(st.sampled_from(offsets)) if offsets else len(data)
        data[at:at] = _nest(draw(st.integers(1, 80)))
    if kind in ("truncate", "mixed") or draw(st.booleans()) and kind == "flip":
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Gate:
    config = Settings(home=tmp_path_factory.mktemp("fuzz"), ingest_workers=2,
                      ingest_timeout=TIMEOUT, ingest_cpu_seconds=8,
                      ingest_decode_all_frames=True)
    with Gate(config) as g:
        yield g


def _keep(data: bytes, why: str) -> None:
    CORPUS.mkdir(exist_ok=True)
    name = hashlib.sha256(data).hexdigest()[:16]
    (CORPUS / f"fuzz-{name}.dcm").write_bytes(data)
    (CORPUS / f"fuzz-{name}.txt").write_text(why + "\n")


@pytest.mark.e2e  # starts processes
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=mutated())
def test_gate_only_accepts_or_refuses_cleanly(gate: Gate, data: bytes) -> None:
    started = time.monotonic()
    verdict = gate.check(data)
    elapsed = time.monotonic() - started
    problem = None
    if verdict.reason in BROKEN:
        problem = f"{verdict.reason}: {verdict.message}"
    elif elapsed > TIMEOUT + 5:
        problem = f"took {elapsed:.1f} s"
    elif verdict.accepted:
        # Anything accepted must parse fully in-process and be shallow.
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
            assert ds.SOPInstanceUID == verdict.sop_instance_uid
        except Exception as exc:  # noqa: BLE001
            problem = f"accepted but unreadable: {exc!r}"
    if problem:
        _keep(data, problem)
    assert problem is None, problem
