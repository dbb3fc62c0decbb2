"""Frames on a pipe: an 8-byte big-endian length, then that many bytes.

The ingest gate and its checker program (:mod:`.checker`) talk in these over
the checker's stdin and stdout. A module of its own so that the caller side
(:mod:`.sandbox`) need not import the checker program.
"""

from __future__ import annotations

import struct
from typing import IO

#: Frame header: the payload's length, 8 bytes big-endian.
HEADER = struct.Struct(">Q")


def read_exact(stream: IO[bytes], size: int) -> bytes | None:
    """``size`` bytes from ``stream``; ``None`` at end of stream.

    A buffered reader's ``read(n)`` waits for all ``n`` bytes (or the end) and reads
    them straight into one ``bytes`` object: no copy of a large file.
    """
    data = stream.read(size)
    return data if len(data) == size else None


def read_frame(stream: IO[bytes]) -> bytes | None:
    header = read_exact(stream, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    if size == 0:
        return b""
    return read_exact(stream, size)


def write_frame(stream: IO[bytes], payload: bytes) -> None:
    stream.write(HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()
