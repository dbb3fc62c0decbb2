"""WADO-RS frame answers done right: content negotiation and multipart bodies.

Debian's Orthanc (DCMTK 3.6.7) predates HTJ2K: its DICOMweb plugin answers
``transfer-syntax=*`` with HTTP 500 and labels HTJ2K codestreams as
uncompressed. The Orthanc plugin in ``orthanc/plugins/`` serves frames with
these helpers instead; they are plain functions so that the rules (PS3.18
§8.7.3 media types, the multipart framing OHIF's loader expects) are tested
without an Orthanc.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

# The transfer syntaxes live in the one UID module; re-exported for the plugin and client.
from .uids import (  # noqa: F401
    EXPLICIT_VR_LITTLE_ENDIAN,
    HTJ2K_SYNTAXES,
    IMPLICIT_VR_LITTLE_ENDIAN,
    NATIVE_LITTLE_ENDIAN,
)

_PARAM = re.compile(r';\s*([A-Za-z-]+)\s*=\s*("([^"]*)"|[^;,\s]*)')


class NotAcceptable(ValueError):
    """No media type the client accepts can be produced (HTTP 406)."""


@dataclass(frozen=True)
class MediaRange:
    media_type: str
    type_param: str | None
    transfer_syntax: str | None
    q: float


def parse_accept(header: str | None) -> list[MediaRange]:
    """Split an Accept header, keeping quoted parameters whole (OHIF quotes ``type``)."""
    if not header or not header.strip():
        return [MediaRange("*/*", None, None, 1.0)]
    ranges: list[MediaRange] = []
    for item in split_outside_quotes(header, ","):
        media, _, rest = item.partition(";")
        params = {m.group(1).lower(): (m.group(3) if m.group(3) is not None else m.group(2))
                  for m in _PARAM.finditer(";" + rest)}
        try:
            q = float(params.get("q", "1") or 1)
        except ValueError:
            q = 1.0
        ranges.append(MediaRange(media.strip().lower(), params.get("type"),
                                 params.get("transfer-syntax"), q))
    return sorted(ranges, key=lambda r: -r.q)


def split_outside_quotes(header: str, separator: str) -> list[str]:
    """Split a header value at ``separator`` where it is not inside double quotes."""
    items, current, quoted = [], [], False
    for char in header:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return [i.strip() for i in items if i.strip()]


def choose_syntax(accept: str | None, stored: str,
                  part_type: str = "application/octet-stream") -> str:
    """The transfer syntax to answer in, per PS3.18 (default: explicit VR little endian).

    ``part_type`` is ``application/octet-stream`` for frames and
    ``application/dicom`` for instances. ``transfer-syntax=*`` means "as stored":
    the server's choice, no transcoding.
    """
    for media in parse_accept(accept):
        if media.q <= 0:
            continue
        wanted = media.media_type in ("multipart/related", "*/*", "multipart/*") and (
            media.type_param in (None, part_type))
        if media.media_type == part_type:
            wanted = True
        if not wanted:
            continue
        syntax = media.transfer_syntax
        if syntax == "*" or syntax == stored:
            return stored
        if syntax in (None, EXPLICIT_VR_LITTLE_ENDIAN):
            return EXPLICIT_VR_LITTLE_ENDIAN
    raise NotAcceptable(
        f"stored as {stored}; ask for transfer-syntax=* or "
        f"{EXPLICIT_VR_LITTLE_ENDIAN} with type {part_type}"
    )


def choose_frame_syntax(accept: str | None, stored: str) -> str:
    """:func:`choose_syntax` for frames (``application/octet-stream`` parts)."""
    return choose_syntax(accept, stored)


def multipart_frames(frames: list[bytes], transfer_syntax: str) -> tuple[bytes, str]:
    """A ``multipart/related`` body of frames and its Content-Type header value."""
    return multipart_body([(f, transfer_syntax) for f in frames], "application/octet-stream")


def multipart_body(parts: list[tuple[bytes, str | None]], part_type: str) -> tuple[bytes, str]:
    """A ``multipart/related`` body and its Content-Type header value.

    Each part says its transfer syntax when given (the only place OHIF looks;
    STOW-RS parts need none), the body ends with the closing delimiter, and
    every part's data is followed by CRLF.
    """
    boundary = "neuronova-" + secrets.token_hex(16)
    chunks: list[bytes] = []
    for data, syntax in parts:
        param = f"; transfer-syntax={syntax}" if syntax else ""
        chunks.append(f"--{boundary}\r\nContent-Type: {part_type}{param}\r\n"
                      f"Content-Length: {len(data)}\r\n\r\n".encode())
        chunks.append(data)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    syntaxes = {syntax for _, syntax in parts}
    only = syntaxes.pop() if len(syntaxes) == 1 else None
    label = f"; transfer-syntax={only}" if only else ""
    content_type = f'multipart/related; type="{part_type}"{label}; boundary={boundary}'
    return b"".join(chunks), content_type


def parse_frame_list(text: str, available: int) -> list[int]:
    """1-based frame numbers from ``1,3,5``; each must exist in the instance."""
    numbers = [int(part) for part in text.split(",") if part]
    if not numbers or any(n < 1 or n > available for n in numbers):
        raise LookupError(f"frames {text} out of range: the instance has {available} frame(s)")
    return numbers


def split_multipart(body: bytes) -> list[tuple[str | None, bytes]] | None:
    """Parts of a ``multipart/related`` body as (transfer-syntax label, data); None if malformed.

    The boundary is read from the body's first line, as OHIF's loader does.
    """
    if not body.startswith(b"--"):
        return None
    first_line, _, _ = body.partition(b"\r\n")
    delimiter = b"\r\n" + first_line
    parts: list[tuple[str | None, bytes]] = []
    for chunk in (b"\r\n" + body).split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            return parts
        headers, separator, data = chunk.partition(b"\r\n\r\n")
        if not separator:
            return None
        label = None
        for line in headers.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-type":
                match = re.search(r"transfer-syntax=\"?([0-9.]+)", value)
                label = match.group(1) if match else None
        parts.append((label, data))
    return None  # no closing delimiter
