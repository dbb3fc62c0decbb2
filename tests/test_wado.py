"""Content negotiation, multipart framing and rendering rules (no server)."""

from __future__ import annotations

import imagecodecs
import numpy as np
import pytest

from neuronova_lib import rendering, wado

HTJ2K = "1.2.840.10008.1.2.4.201"
ELE = wado.EXPLICIT_VR_LITTLE_ENDIAN


@pytest.mark.parametrize(("accept", "stored", "chosen"), [
    ('multipart/related; type="application/octet-stream"; transfer-syntax=*', HTJ2K, HTJ2K),
    ("multipart/related; type=application/octet-stream; transfer-syntax=*", HTJ2K, HTJ2K),
    ('multipart/related; type="application/octet-stream"; transfer-syntax="*"', HTJ2K, HTJ2K),
    (f"multipart/related; type=application/octet-stream; transfer-syntax={HTJ2K}", HTJ2K, HTJ2K),
    ('multipart/related; type="application/octet-stream"', HTJ2K, ELE),
    (None, HTJ2K, ELE),
    ("*/*", ELE, ELE),
    ("application/octet-stream", "1.2.840.10008.1.2", ELE),
    ('multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.4.50;q=0.9, '
     'multipart/related; type="application/octet-stream"; transfer-syntax=*;q=0.5', HTJ2K, HTJ2K),
])
def test_frame_syntax_negotiation(accept: str | None, stored: str, chosen: str) -> None:
    assert wado.choose_frame_syntax(accept, stored) == chosen


def test_an_unproducible_syntax_is_not_acceptable() -> None:
    with pytest.raises(wado.NotAcceptable, match="transfer-syntax"):
        wado.choose_frame_syntax(
            'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.4.50',
            HTJ2K)
    with pytest.raises(wado.NotAcceptable):
        wado.choose_frame_syntax("image/jpeg", HTJ2K)


def test_multipart_round_trip_and_framing() -> None:
    frames = [b"\x00\x01\r\n--x", b"", bytes(range(256)) * 3]
    body, content_type = wado.multipart_frames(frames, HTJ2K)
    boundary = content_type.split("boundary=")[1]
    assert body.startswith(f"--{boundary}\r\n".encode())
    assert body.endswith(f"\r\n--{boundary}--\r\n".encode())
    assert f"transfer-syntax={HTJ2K}" in content_type
    assert wado.split_multipart(body) == [(HTJ2K, f) for f in frames]


def test_split_multipart_refuses_a_body_without_closing_delimiter() -> None:
    body, _ = wado.multipart_frames([b"abc"], ELE)
    assert wado.split_multipart(body.rsplit(b"--", 2)[0]) is None
    assert wado.split_multipart(b"not multipart") is None


def test_frame_list_bounds() -> None:
    assert wado.parse_frame_list("1,3", 3) == [1, 3]
    for bad in ("0", "4", ""):
        with pytest.raises(LookupError):
            wado.parse_frame_list(bad, 3)


def test_render_windows_inverts_and_fits() -> None:
    frame = np.arange(256 * 128, dtype=np.uint16).reshape(128, 256)
    tags = {"WindowCenter": "16384", "WindowWidth": "32768", "PhotometricInterpretation": "MONOCHROME2"}
    image = rendering.render(frame, tags, rendering.RenderParams(viewport=(64, 64)))
    assert image.dtype == np.uint8 and image.shape == (32, 64)
    assert image[0, 0] < 8 and image[-1, -1] > 247  # nearest samples near the corners
    inverted = rendering.render(frame, {**tags, "PhotometricInterpretation": "MONOCHROME1"},
                                rendering.RenderParams())
    assert inverted[0, 0] == 255
    explicit = rendering.render(frame, tags, rendering.RenderParams(window=(100.0, 10.0)))
    assert explicit[0, 0] == 0 and explicit[0, 200] == 255


def test_render_applies_rescale_and_multi_valued_windows() -> None:
    frame = np.array([[0, 1000]], dtype=np.int16)
    tags = {"RescaleSlope": "1", "RescaleIntercept": "-1024", "WindowCenter": "40\\400",
            "WindowWidth": "400\\2000"}
    image = rendering.render(frame, tags, rendering.RenderParams())
    assert image.tolist() == [[0, 87]]  # -1024 is below the window; -24 is 136/400 into it


@pytest.mark.parametrize(("query", "message"), [({"window": "1"}, "window"),
                                                ({"window": "1,0"}, "positive"),
                                                ({"viewport": "0,5"}, "viewport"),
                                                ({"quality": "0"}, "quality")])
def test_render_params_refuse_nonsense(query: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rendering.RenderParams.from_query(query)


def test_thumbnail_defaults_and_reduce_levels() -> None:
    assert rendering.RenderParams.from_query({}, thumbnail=True).viewport == (128, 128)
    assert rendering.reduce_level(512, 512, (128, 128)) == 2
    assert rendering.reduce_level(512, 512, None) == 0
    assert rendering.reduce_level(240, 240, (128, 128)) == 0


def test_encoders_produce_decodable_images() -> None:
    image = (np.indices((40, 60)).sum(axis=0) % 256).astype(np.uint8)
    assert np.array_equal(imagecodecs.png_decode(rendering.encode(image, "image/png")), image)
    jpeg = imagecodecs.jpeg8_decode(rendering.encode(image, "image/jpeg", 95))
    assert jpeg.shape == image.shape
    assert rendering.choose_image_type(None) == "image/jpeg"
    assert rendering.choose_image_type("image/png") == "image/png"


HTJ2K_RPCL = "1.2.840.10008.1.2.4.202"
IMPLICIT = "1.2.840.10008.1.2"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
OCTETS = "application/octet-stream"


@pytest.mark.parametrize(("accept", "stored", "chosen"), [
    # dicomweb-client's default: any part type, the server chooses; it sends what it stores.
    ('multipart/related; type="*/*"', HTJ2K, ("image/jphc", HTJ2K)),
    ('multipart/related; type="*/*"', HTJ2K_RPCL, ("image/jphc", HTJ2K_RPCL)),
    ('multipart/related; type="*/*"', JPEG_LOSSLESS, ("image/jpeg", JPEG_LOSSLESS)),
    ('multipart/related; type="*/*"', ELE, (OCTETS, ELE)),
    ('multipart/related; type="*/*"', IMPLICIT, (OCTETS, ELE)),  # implicit VR is not for the web
    ('multipart/related; type="*/*"; transfer-syntax=*', HTJ2K, ("image/jphc", HTJ2K)),
    (f'multipart/related; type="*/*"; transfer-syntax={ELE}', HTJ2K, (OCTETS, ELE)),
    (f'multipart/related; type="*/*"; transfer-syntax={HTJ2K}', HTJ2K, ("image/jphc", HTJ2K)),
    ("multipart/related; type=image/*", HTJ2K, ("image/jphc", HTJ2K)),
    ("multipart/*", HTJ2K, ("image/jphc", HTJ2K)),
    ("*/*", HTJ2K, ("image/jphc", HTJ2K)),
    ("*/*", ELE, (OCTETS, ELE)),
    ('multipart/related; type="application/*"', HTJ2K, (OCTETS, ELE)),
    # A compressed media type: the stored bytes when they are in its (default) syntax.
    ('multipart/related; type="image/jphc"', HTJ2K, ("image/jphc", HTJ2K)),
    (f'multipart/related; type="image/jphc"; transfer-syntax={HTJ2K_RPCL}', HTJ2K_RPCL,
     ("image/jphc", HTJ2K_RPCL)),
    ('multipart/related; type="image/jphc"; transfer-syntax=*', HTJ2K_RPCL, ("image/jphc", HTJ2K_RPCL)),
    # OHIF and Cornerstone: octet-stream with the stored syntax, as before.
    ('multipart/related; type="application/octet-stream"; transfer-syntax=*', HTJ2K, (OCTETS, HTJ2K)),
    ('multipart/related; type="application/octet-stream"', HTJ2K, (OCTETS, ELE)),
    ('multipart/related; type="application/octet-stream"; transfer-syntax=*', IMPLICIT, (OCTETS, ELE)),
    # Preferences: q orders them; a range that cannot be served gives way to the next.
    ('multipart/related; type="image/jpeg";q=1, multipart/related; type="*/*";q=0.5', HTJ2K,
     ("image/jphc", HTJ2K)),
    ('multipart/related; type="application/octet-stream";q=0.9, multipart/related; type="*/*";q=0.2',
     HTJ2K, (OCTETS, ELE)),
    (None, HTJ2K, (OCTETS, ELE)),  # no Accept at all: the category's default
])
def test_frame_media_negotiation(accept: str | None, stored: str, chosen: tuple[str, str]) -> None:
    assert wado.choose_frame_media(accept, stored) == chosen


@pytest.mark.parametrize(("accept", "stored"), [
    ('multipart/related; type="image/jphc"', HTJ2K_RPCL),  # its default is .201: no re-encoding
    ('multipart/related; type="image/jphc"', ELE),
    ('multipart/related; type="image/*"', ELE),
    ('multipart/related; type="image/jp2"', HTJ2K),
    ('multipart/related; type="*/*"; transfer-syntax=1.2.840.10008.1.2.4.50', HTJ2K),
    ('multipart/related; type="*/*";q=0', HTJ2K),
])
def test_frames_that_cannot_be_served_as_asked(accept: str, stored: str) -> None:
    with pytest.raises(wado.NotAcceptable, match="type="):
        wado.choose_frame_media(accept, stored)


@pytest.mark.parametrize(("accept", "stored", "chosen"), [
    ('multipart/related; type="application/dicom"', HTJ2K, ELE),  # dicomweb-client's default
    ('multipart/related; type="*/*"', HTJ2K, ELE),
    ('multipart/related; type="application/*"; transfer-syntax=*', HTJ2K, HTJ2K),
    ('multipart/related; type="application/dicom"; transfer-syntax=*', IMPLICIT, ELE),
    ("*/*", HTJ2K, ELE),
])
def test_instance_syntax_negotiation(accept: str, stored: str, chosen: str) -> None:
    assert wado.choose_syntax(accept, stored, "application/dicom") == chosen
    with pytest.raises(wado.NotAcceptable):
        wado.choose_syntax('multipart/related; type="image/jpeg"', stored, "application/dicom")


def test_frames_labelled_with_their_media_type() -> None:
    body, content_type = wado.multipart_frames([b"ab"], HTJ2K, "image/jphc")
    assert content_type.startswith('multipart/related; type="image/jphc"; transfer-syntax=' + HTJ2K)
    assert f"Content-Type: image/jphc; transfer-syntax={HTJ2K}".encode() in body
