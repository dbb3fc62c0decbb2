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


#: Compressed frame media types by transfer syntax (PS3.18 Table 8.7.3-5).
FRAME_MEDIA_TYPES = {
    **dict.fromkeys(("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
                     "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"), "image/jpeg"),
    **dict.fromkeys(("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"), "image/jls"),
    **dict.fromkeys(("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"), "image/jp2"),
    **dict.fromkeys(("1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93"), "image/jpx"),
    **dict.fromkeys(HTJ2K_SYNTAXES, "image/jphc"),
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
#: The syntax a compressed media type means when the request names none (Table 8.7.3-5, "D").
_MEDIA_DEFAULT_SYNTAX = {
    "image/jpeg": "1.2.840.10008.1.2.4.70", "image/jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90", "image/jpx": "1.2.840.10008.1.2.4.92",
    "image/jphc": "1.2.840.10008.1.2.4.201", "image/dicom-rle": "1.2.840.10008.1.2.5",
}
OCTET_STREAM = "application/octet-stream"
_WILDCARDS = frozenset({"*/*", "*", "application/*", "image/*"})


def _part_type(media: MediaRange, default: str) -> str:
    """The media type a range asks for in each part (``type=`` of ``multipart/related``)."""
    if media.media_type == "multipart/related":
        return (media.type_param or default).strip().lower()
    if media.media_type == "multipart/*":
        return "*/*"
    return media.media_type


_NOT_ON_THE_WEB = frozenset({IMPLICIT_VR_LITTLE_ENDIAN, "1.2.840.10008.1.2.2"})


def _web_syntax(stored: str) -> str:
    """``stored`` as the web may label it: PS3.18 §8.7.3 forbids implicit VR and big endian."""
    return stored if stored not in _NOT_ON_THE_WEB else EXPLICIT_VR_LITTLE_ENDIAN


def choose_syntax(accept: str | None, stored: str,
                  part_type: str = "application/octet-stream") -> str:
    """The transfer syntax to answer instances in, per PS3.18 (default: explicit VR little endian).

    ``part_type`` is ``application/dicom`` for instances (frames use
    :func:`choose_frame_media`). ``transfer-syntax=*`` means "as stored": the
    server's choice, no transcoding; a wildcard part type (``type="*/*"``)
    stands for ``part_type``.
    """
    for media in parse_accept(accept):
        if media.q <= 0:
            continue
        part = _part_type(media, part_type)
        if part != part_type and part not in ("*/*", "*", part_type.split("/")[0] + "/*"):
            continue
        syntax = media.transfer_syntax
        if syntax == "*" or syntax == stored:
            return _web_syntax(stored)
        if syntax in (None, EXPLICIT_VR_LITTLE_ENDIAN):
            return EXPLICIT_VR_LITTLE_ENDIAN
    raise NotAcceptable(
        f"stored as {stored}; ask for transfer-syntax=* or "
        f"{EXPLICIT_VR_LITTLE_ENDIAN} with type {part_type}"
    )


def choose_frame_media(accept: str | None, stored: str) -> tuple[str, str]:
    """(part media type, transfer syntax) for frames, per PS3.18 §8.7.3 and §8.7.8.

    * ``application/octet-stream``: explicit VR little endian unless the request
      names the stored syntax or ``transfer-syntax=*`` (then the stored bytes,
      labelled with their syntax: what OHIF and Cornerstone ask for).
    * A wildcard (``type="*/*"``, dicomweb-client's default; ``image/*``) without
      a syntax, or with ``*``: the server chooses, and sends what it stores:
      compressed frames as stored under their own media type (``image/jphc``
      for HTJ2K), uncompressed ones as ``application/octet-stream``.
    * A compressed media type (``image/jphc``): the stored bytes when they are
      in that type's named (or default) syntax; frames are never re-compressed.
    * No Accept header: explicit VR little endian, the category's default.
    """
    native = stored not in FRAME_MEDIA_TYPES
    stored_media = OCTET_STREAM if native else FRAME_MEDIA_TYPES[stored]
    if not accept or not accept.strip():
        return OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN
    for media in parse_accept(accept):
        if media.q <= 0:
            continue
        part, syntax = _part_type(media, OCTET_STREAM), media.transfer_syntax
        if part == OCTET_STREAM:
            if syntax == "*" or syntax == stored:
                return OCTET_STREAM, _web_syntax(stored)
            if syntax in (None, EXPLICIT_VR_LITTLE_ENDIAN):
                return OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN
        elif part in _WILDCARDS:
            fits = part in ("*/*", "*") or stored_media.startswith(part[:-1])
            if syntax in (None, "*") and fits:
                return stored_media, _web_syntax(stored)
            if syntax == stored and fits:
                return stored_media, stored
            if syntax in (None, EXPLICIT_VR_LITTLE_ENDIAN) and part != "image/*":
                return OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN
        elif part == stored_media and not native:
            if syntax in ("*", stored) or (syntax is None and _MEDIA_DEFAULT_SYNTAX.get(part) == stored):
                return stored_media, stored
    raise NotAcceptable(
        f"frames stored as {stored}; ask for type=\"{OCTET_STREAM}\" (explicit VR little endian), "
        f"transfer-syntax=* (as stored) or type=\"*/*\""
    )


def choose_frame_syntax(accept: str | None, stored: str) -> str:
    """The transfer syntax of :func:`choose_frame_media`."""
    return choose_frame_media(accept, stored)[1]


def multipart_frames(frames: list[bytes], transfer_syntax: str,
                     media_type: str = "application/octet-stream") -> tuple[bytes, str]:
    """A ``multipart/related`` body of frames and its Content-Type header value."""
    return multipart_body([(f, transfer_syntax) for f in frames], media_type)


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


#: ``…/frames/{n}?reduce=k``, the platform's one extension to WADO-RS frames: the frame
#: ``k`` resolution levels down, cut from an HTJ2K codestream that allows it (RPCL, a
#: tile-part per resolution: :func:`neuronova_lib.htj2k.codestream.reduce_resolution`),
#: in a fraction of the bytes; any other frame is answered whole (the codestream tells a
#: client which it got). The frame store keeps every level a frame allows ready.
STORED_REDUCE_LEVELS = (1, 2, 3, 4, 5)
#: The same levels as a query spells them.
FRAME_REDUCE_LEVELS = tuple(str(levels) for levels in STORED_REDUCE_LEVELS)


def reduced_frame(frame: bytes, syntax: str, levels: int) -> bytes | None:
    """``frame`` (stored in ``syntax``) cut ``levels`` resolution levels down, or None when
    its codestream does not allow it."""
    if syntax not in HTJ2K_SYNTAXES:
        return None
    from .htj2k.codestream import reduce_resolution
    from .htj2k.errors import CodestreamError

    try:
        return reduce_resolution(frame, levels)
    except CodestreamError:
        return None


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
