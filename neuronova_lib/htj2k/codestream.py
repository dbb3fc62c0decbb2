"""Read (and minimally rewrite) the headers of a JPEG 2000 / HTJ2K codestream.

Why this exists
---------------
* To check what an encoder wrote against what DICOM requires (precision equal
  to Bits Stored, signedness equal to Pixel Representation, RPCL and TLM for
  ``…4.202``, a reversible transform for lossless) without trusting the encoder.
* To tell how many resolution levels a decoder may skip (thumbnails).
* To correct the sample precision: imagecodecs' OpenJPH encoder has no
  bits-stored option and always declares the container size (16 for uint16).
  :func:`set_precision` turns such a codestream into the one an encoder told
  the true precision would have written: see its docstring for why the
  compressed data are unchanged by it.

Only the main header and the tile-part headers are read; the entropy-coded
data are never touched. Marker codes and field layouts are those of
ITU-T T.800 | ISO/IEC 15444-1 Annex A and ISO/IEC 15444-15 (CAP).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import CodestreamError

SOC = 0xFF4F
SIZ = 0xFF51
CAP = 0xFF50
COD = 0xFF52
COC = 0xFF53
QCD = 0xFF5C
QCC = 0xFF5D
TLM = 0xFF55
SOT = 0xFF90
SOD = 0xFF93
EOC = 0xFFD9
COM = 0xFF64
#: The comment :func:`reduce_resolution` leaves in a codestream it cut (Rcom 1: Latin text),
#: followed by the number of levels.
REDUCED_COMMENT = b"NeuroNova: resolution levels cut: "

#: Rsiz bit that says the codestream uses Part 15 (HTJ2K) capabilities.
RSIZ_PART15 = 0x4000
#: Code-block style bit (SPcod) for the HT block coder.
CBLK_HT = 0x40

PROGRESSIONS = ("LRCP", "RLCP", "RPCL", "PCRL", "CPRL")
_MAX_GUARD_BITS = 7


@dataclass(frozen=True)
class CodestreamInfo:
    """What the headers of a codestream say.

    Attributes
    ----------
    rows, columns : int
        Image size (extent minus offset).
    components : int
        Number of components (samples per pixel).
    precision : int
        Bits per sample of component 0 (all components are checked to agree).
    is_signed : bool
        Whether samples are two's complement.
    is_htj2k : bool
        Rsiz declares Part 15 capabilities and COD selects the HT block coder.
    progression : str
        Progression order of the main COD, e.g. ``"RPCL"``.
    layers : int
        Quality layers.
    decompositions : int
        Wavelet decomposition levels (the fewest over COD and any COC), which
        is also the most resolution levels a decoder can skip.
    block_size : tuple of int
        Code-block ``(width, height)``.
    reversible : bool
        5/3 reversible wavelet (lossless capable) rather than 9/7.
    guard_bits : int
        Guard bits of the main QCD.
    has_tlm : bool
        A TLM (tile-part lengths) marker segment is in the main header.
    tile_parts : int
        Number of tile-parts (SOT markers) in the codestream.
    origin : tuple of int
        Image offset ``(x0, y0)`` on the reference grid (0, 0 for DICOM frames).
    reduced : int
        Resolution levels :func:`reduce_resolution` cut from the codestream this one was
        made from (its COM marker says so), 0 for an encoder's own: a decoder's output
        then needs clamping to the sample range, as a reduced decode's does.
    """

    rows: int
    columns: int
    components: int
    precision: int
    is_signed: bool
    is_htj2k: bool
    progression: str
    layers: int
    decompositions: int
    block_size: tuple[int, int]
    reversible: bool
    guard_bits: int
    has_tlm: bool
    tile_parts: int
    origin: tuple[int, int] = (0, 0)
    reduced: int = 0

    def shape_at(self, reduce: int) -> tuple[int, int]:
        """``(rows, columns)`` after skipping ``reduce`` resolution levels (T.800 Eq. B-14)."""
        x0, y0 = self.origin
        scale = 1 << reduce
        rows = -(-(y0 + self.rows) // scale) - -(-y0 // scale)
        columns = -(-(x0 + self.columns) // scale) - -(-x0 // scale)
        return rows, columns


@dataclass(frozen=True)
class _Segment:
    marker: int
    offset: int  # of the marker itself
    length: int  # Lxxx: the segment's length, without the marker

    @property
    def body(self) -> slice:
        return slice(self.offset + 4, self.offset + 2 + self.length)


def _segments(cs: bytes | bytearray, start: int, until: int) -> tuple[list[_Segment], int]:
    """Marker segments from ``start`` up to (not including) marker ``until``; its offset."""
    out: list[_Segment] = []
    i = start
    end = len(cs)
    while True:
        if i + 2 > end:
            raise CodestreamError(f"codestream ends at byte {i} before marker {until:#06x}")
        (marker,) = struct.unpack_from(">H", cs, i)
        if marker == until:
            return out, i
        if marker >> 8 != 0xFF:
            raise CodestreamError(f"expected a marker at byte {i}, found {marker:#06x}")
        if i + 4 > end:
            raise CodestreamError(f"marker {marker:#06x} at byte {i} has no length")
        (length,) = struct.unpack_from(">H", cs, i + 2)
        if length < 2 or i + 2 + length > end:
            raise CodestreamError(f"marker {marker:#06x} at byte {i} has a bad length {length}")
        out.append(_Segment(marker, i, length))
        i += 2 + length


def _main_header(cs: bytes | bytearray) -> tuple[list[_Segment], int]:
    if len(cs) < 4 or struct.unpack_from(">H", cs, 0)[0] != SOC:
        raise CodestreamError(
            "not a JPEG 2000 codestream: it does not start with the SOC marker FF4F "
            "(a JP2 file or DICOM fragment header is not accepted)"
        )
    segments, first_sot = _segments(cs, 2, SOT)
    if not segments or segments[0].marker != SIZ:
        raise CodestreamError("the SIZ marker segment does not follow SOC")
    return segments, first_sot


def _tile_part_headers(cs: bytes | bytearray, first_sot: int) -> list[list[_Segment]]:
    """Marker segments of each tile-part header (after SOT, before SOD)."""
    headers: list[list[_Segment]] = []
    i = first_sot
    end = len(cs)
    while i + 2 <= end and struct.unpack_from(">H", cs, i)[0] == SOT:
        if i + 12 > end:
            raise CodestreamError(f"truncated SOT marker segment at byte {i}")
        (psot,) = struct.unpack_from(">I", cs, i + 6)
        segments, _ = _segments(cs, i + 12, SOD)
        headers.append(segments)
        if psot == 0:  # the last tile-part runs to EOC
            i = _eoc_at(cs)
            break
        if i + psot > end:
            raise CodestreamError(
                f"truncated codestream: tile-part {len(headers)} needs {i + psot} bytes, "
                f"only {end} are there"
            )
        i += psot
    if not headers:
        raise CodestreamError("the codestream has no tile-part")
    # What follows the last tile-part must be EOC (a DICOM fragment may add one pad byte).
    if i != _eoc_at(cs):
        raise CodestreamError(f"no EOC marker after the last tile-part (byte {i} of {end})")
    return headers


def _eoc_at(cs: bytes | bytearray) -> int:
    """Offset of the closing EOC marker, allowing one trailing pad byte."""
    for at in (len(cs) - 2, len(cs) - 3):
        if at >= 0 and struct.unpack_from(">H", cs, at)[0] == EOC and not any(cs[at + 2 :]):
            return at
    raise CodestreamError("truncated codestream: it does not end with the EOC marker FFD9")


def parse(codestream: bytes | bytearray | memoryview) -> CodestreamInfo:
    """Return what the headers of ``codestream`` say.

    Parameters
    ----------
    codestream : bytes-like
        A raw JPEG 2000 codestream (starting with SOC), as held in one DICOM
        frame of an HTJ2K or JPEG 2000 transfer syntax.

    Returns
    -------
    CodestreamInfo

    Raises
    ------
    CodestreamError
        If the bytes are not a codestream or a required marker is missing or
        malformed.
    """
    cs = bytes(codestream) if isinstance(codestream, memoryview) else codestream
    segments, first_sot = _main_header(cs)
    siz = segments[0]
    rsiz, xsiz, ysiz, x0, y0 = struct.unpack_from(">HIIII", cs, siz.offset + 4)
    (ncomp,) = struct.unpack_from(">H", cs, siz.offset + 38)
    if ncomp < 1 or siz.length != 38 + 3 * ncomp:
        raise CodestreamError(f"SIZ declares {ncomp} components but is {siz.length} bytes long")
    ssiz = [cs[siz.offset + 40 + 3 * c] for c in range(ncomp)]
    if len(set(ssiz)) != 1:
        raise CodestreamError(f"components differ in precision or sign: Ssiz {ssiz}")
    cod = next((s for s in segments if s.marker == COD), None)
    qcd = next((s for s in segments if s.marker == QCD), None)
    if cod is None or qcd is None:
        raise CodestreamError("the main header lacks a COD or QCD marker segment")
    body = cs[cod.body]
    if len(body) < 10:
        raise CodestreamError("COD marker segment is too short")
    progression_code, layers = body[1], struct.unpack_from(">H", body, 2)[0]
    if progression_code >= len(PROGRESSIONS):
        raise CodestreamError(f"unknown progression order {progression_code} in COD")
    decompositions = body[5]
    for coc in (s for s in segments if s.marker == COC):
        coc_body = cs[coc.body]
        decompositions = min(decompositions, coc_body[2 if ncomp < 257 else 3])
    block_w, block_h = 1 << (body[6] + 2), 1 << (body[7] + 2)
    cblk_style, transform = body[8], body[9]
    headers = _tile_part_headers(cs, first_sot)
    return CodestreamInfo(
        rows=ysiz - y0,
        columns=xsiz - x0,
        components=ncomp,
        precision=(ssiz[0] & 0x7F) + 1,
        is_signed=bool(ssiz[0] & 0x80),
        is_htj2k=bool(rsiz & RSIZ_PART15) and bool(cblk_style & CBLK_HT),
        progression=PROGRESSIONS[progression_code],
        layers=layers,
        decompositions=decompositions,
        block_size=(block_w, block_h),
        reversible=transform == 1,
        guard_bits=cs[qcd.offset + 4] >> 5,
        has_tlm=any(s.marker == TLM for s in segments),
        tile_parts=len(headers),
        origin=(x0, y0),
        reduced=_levels_cut(cs, segments),
    )


def _levels_cut(cs: bytes | bytearray, segments: list[_Segment]) -> int:
    """The levels :func:`reduce_resolution` cut, from its COM marker segment (0: none)."""
    for segment in segments:
        text = bytes(cs[segment.offset + 6:segment.offset + 2 + segment.length])
        if segment.marker == COM and text.startswith(REDUCED_COMMENT):
            tail = text[len(REDUCED_COMMENT):]
            return int(tail) if tail.isdigit() and len(tail) < 3 else 0
    return 0


def set_precision(codestream: bytes | bytearray, precision: int) -> bytes:
    """Return ``codestream`` declaring ``precision`` bits per sample instead of its own.

    Only for codestreams whose samples really use ``precision`` bits, were
    encoded at a larger declared precision ``B``, and — for unsigned samples —
    were offset by ``2**(B-1) - 2**(precision-1)`` before encoding (see
    :func:`neuronova_lib.htj2k.codec.encode`).

    Why the compressed data stay valid: JPEG 2000 codes wavelet coefficients
    whose magnitude bit-planes are bounded by ``Mb = G + eps_b - 1`` (T.800
    Eq. E-2; ``G`` guard bits and ``eps_b`` sub-band exponents, both in QCD),
    and the dequantisation step ``2**(R_b - eps_b)`` depends on the precision
    only through ``R_b - eps_b``. Lowering the SIZ precision by ``d``,
    every ``eps_b`` by ``d`` and raising ``G`` by ``d`` leaves ``Mb`` and every
    step unchanged, so every coefficient decodes to the same value; the DC
    level shift the decoder adds (``2**(precision-1)`` for unsigned samples)
    is exactly undone by the offset applied before encoding. The result is
    the codestream an encoder told the true precision would have written
    (exponents as per T.800 Annex E, more guard bits), and three independent
    decoders (OpenJPH, OpenJPEG, Debian's ``ojph_expand``) are tested to
    decode it exactly.

    Parameters
    ----------
    codestream : bytes-like
        Codestream whose QCD/QCC segments are only in the main header.
    precision : int
        New precision, at most the declared one.

    Returns
    -------
    bytes
        The same number of bytes (tile-part lengths and TLM stay valid).

    Raises
    ------
    CodestreamError
        If the change would need more than 7 guard bits or a negative
        exponent, or the codestream has quantisation markers in tile-part
        headers.
    """
    cs = bytearray(codestream)
    segments, first_sot = _main_header(cs)
    siz = segments[0]
    (ncomp,) = struct.unpack_from(">H", cs, siz.offset + 38)
    declared = (cs[siz.offset + 40] & 0x7F) + 1
    shift = declared - precision
    if shift == 0:
        return bytes(cs)
    if not 0 < shift < declared:
        raise CodestreamError(f"cannot change precision from {declared} to {precision} bits")
    for headers in _tile_part_headers(cs, first_sot):
        if any(s.marker in (QCD, QCC) for s in headers):
            raise CodestreamError("quantisation markers in a tile-part header: cannot rewrite")
    for c in range(ncomp):
        at = siz.offset + 40 + 3 * c
        cs[at] = (cs[at] & 0x80) | (precision - 1)
    for seg in segments:
        if seg.marker == QCD:
            _shift_quantisation(cs, seg.offset + 4, seg.offset + 2 + seg.length, shift)
        elif seg.marker == QCC:
            sqcc_at = seg.offset + 4 + (1 if ncomp < 257 else 2)
            _shift_quantisation(cs, sqcc_at, seg.offset + 2 + seg.length, shift)
    return bytes(cs)


def _shift_quantisation(cs: bytearray, sq_at: int, end: int, shift: int) -> None:
    """Raise the guard bits by ``shift`` and lower each exponent by ``shift``, in place."""
    guard, style = cs[sq_at] >> 5, cs[sq_at] & 0x1F
    if guard + shift > _MAX_GUARD_BITS:
        raise CodestreamError(
            f"precision can drop by at most {_MAX_GUARD_BITS - guard} bits here "
            f"({guard} guard bits already), not {shift}"
        )
    cs[sq_at] = ((guard + shift) << 5) | style
    if style == 0:  # no quantisation: one byte per sub-band, exponent in the top 5 bits
        for i in range(sq_at + 1, end):
            exponent = cs[i] >> 3
            if exponent < shift:
                raise CodestreamError(f"sub-band exponent {exponent} is below {shift}")
            cs[i] = ((exponent - shift) << 3) | (cs[i] & 0x07)
    elif style in (1, 2):  # scalar derived / expounded: 16 bits, exponent in the top 5
        for i in range(sq_at + 1, end - 1, 2):
            (value,) = struct.unpack_from(">H", cs, i)
            exponent = value >> 11
            if exponent < shift:
                raise CodestreamError(f"sub-band exponent {exponent} is below {shift}")
            struct.pack_into(">H", cs, i, ((exponent - shift) << 11) | (value & 0x7FF))
    else:
        raise CodestreamError(f"unknown quantisation style {style}")


#: Markers that would make dropping resolutions more than a header rewrite: per-component
#: coding or quantisation, progression changes, packed packet headers.
_NOT_REDUCIBLE = {COC: "COC", QCC: "QCC", 0xFF5F: "POC", 0xFF60: "PPM", 0xFF61: "PPT"}


def reduce_resolution(codestream: bytes | bytearray | memoryview, levels: int) -> bytes:
    """The codestream of the image ``levels`` resolution levels down, cut from ``codestream``.

    Where the codestream allows it: RPCL progression, one tile, no offsets, and one
    tile-part per resolution level (what :data:`~.uids.HTJ2K_LOSSLESS_RPCL` frames are,
    :func:`neuronova_lib.htj2k.codec.encode`). Then the lowest resolutions are the first
    tile-parts, and the image ``levels`` down is the wavelet decomposition with ``levels``
    fewer levels: keep the first tile-parts and say so in the headers (SIZ: the smaller
    size; COD: fewer levels and precinct sizes; QCD: fewer sub-bands; TLM and each SOT: the
    tile-parts kept). No coefficient is decoded or re-coded: the result decodes in full to
    what ``codestream`` decodes to ``levels`` levels down, in a fraction of the bytes (a
    viewer's first image, the frame store's reduced variant). Like a reduced decode, its
    samples overshoot the sample range beside sharp edges; a COM marker says the
    codestream was cut (:attr:`CodestreamInfo.reduced`), and
    :func:`neuronova_lib.htj2k.decode` clamps such a decode as it clamps a reduced one.
    Only for samples below their type's size (12 of 16 bits, as the platform declares MR),
    which leaves room for the overshoot.

    Raises
    ------
    CodestreamError
        If the codestream is not so made, or ``levels`` is not between 1 and its
        decomposition levels.
    """
    cs = bytes(codestream)
    segments, first_sot = _main_header(cs)
    headers = _tile_part_headers(cs, first_sot)
    info = parse(cs)
    if not 1 <= levels <= info.decompositions:
        raise CodestreamError(f"cannot drop {levels} resolution level(s) of "
                              f"{info.decompositions}")
    siz = segments[0]
    xsiz, ysiz, x0, y0, xt, yt, xt0, yt0 = struct.unpack_from(">IIIIIIII", cs, siz.offset + 6)
    sampling = {cs[siz.offset + 41 + 3 * c: siz.offset + 43 + 3 * c]
                for c in range(info.components)}
    if info.progression != "RPCL":
        raise CodestreamError(f"{info.progression} progression: only RPCL puts resolutions first")
    if (x0, y0, xt0, yt0) != (0, 0, 0, 0) or xt < xsiz or yt < ysiz or sampling != {b"\x01\x01"}:
        raise CodestreamError("only a single-tile image with no offsets or subsampling")
    if info.precision in (8, 16):
        raise CodestreamError(f"{info.precision}-bit samples fill their type: the lower "
                              "resolutions' overshoot beside sharp edges would wrap around")
    if info.tile_parts != info.decompositions + 1:
        raise CodestreamError(f"{info.tile_parts} tile-parts for {info.decompositions + 1} "
                              "resolution levels: not one tile-part per resolution")
    in_tile_parts = {s.marker for h in headers for s in h}
    for marker in ({s.marker for s in segments} | in_tile_parts) & set(_NOT_REDUCIBLE):
        raise CodestreamError(f"{_NOT_REDUCIBLE[marker]} marker: dropping resolutions needs "
                              "more than a header rewrite")
    if in_tile_parts & {COD, QCD}:
        raise CodestreamError("coding or quantisation set in a tile-part header")
    if sum(s.marker == TLM for s in segments) > 1:
        raise CodestreamError("tile-part lengths in more than one TLM marker segment")
    kept = info.decompositions - levels + 1  # tile-parts (resolutions) kept
    scale = 1 << levels
    out = bytearray(cs[:2])
    for segment in segments:
        body = bytearray(cs[segment.offset + 4:segment.offset + 2 + segment.length])
        if segment.marker == SIZ:
            width, height = -(-xsiz // scale), -(-ysiz // scale)
            struct.pack_into(">II", body, 2, width, height)
            struct.pack_into(">II", body, 18, width, height)
        elif segment.marker == COD:
            body[5] = info.decompositions - levels
            if body[0] & 1:  # precinct sizes, one byte per resolution
                body = body[:10 + kept]
        elif segment.marker == QCD:
            style = body[0] & 0x1F
            if style == 1:
                raise CodestreamError("derived quantisation: its exponents depend on the levels")
            per_band = 1 if style == 0 else 2
            body = body[:1 + per_band * (1 + 3 * (info.decompositions - levels))]
        elif segment.marker == TLM:
            body = _kept_tile_parts(body, kept)
        elif segment.marker == COM and body[2:].startswith(REDUCED_COMMENT):
            continue  # cut again: one comment, the total
        out += struct.pack(">HH", segment.marker, len(body) + 2) + body
    comment = REDUCED_COMMENT + str(info.reduced + levels).encode()
    out += struct.pack(">HHH", COM, len(comment) + 4, 1) + comment
    at = first_sot
    for _ in range(kept):
        (psot,) = struct.unpack_from(">I", cs, at + 6)
        part = bytearray(cs[at:at + psot])
        part[11] = kept  # TNsot: the tile's number of tile-parts
        out += part
        at += psot
    out += struct.pack(">H", EOC)
    parse(out)  # the headers written say what the tile-parts kept hold
    return bytes(out)


def _kept_tile_parts(tlm: bytearray, kept: int) -> bytearray:
    """A TLM segment's body (Ztlm, Stlm, entries) with only the first ``kept`` entries."""
    stlm = tlm[1]
    size = ((stlm >> 4) & 0x3) + (4 if stlm & 0x40 else 2)  # Ttlm + Ptlm bytes per entry
    if len(tlm) - 2 < kept * size:
        raise CodestreamError("the TLM marker lists fewer tile-parts than the codestream has")
    return tlm[:2 + kept * size]
