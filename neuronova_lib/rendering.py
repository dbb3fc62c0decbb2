"""Rendered (8-bit, windowed) images of a frame, as WADO-RS ``/rendered`` and ``/thumbnail`` give.

Used by the Orthanc plugin that serves HTJ2K instances (Orthanc 1.10 cannot
render them) and by dashboards; pure numpy so it runs anywhere the library does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .wado import NotAcceptable, parse_accept

THUMBNAIL_SIZE = (128, 128)
#: Resolution levels an HTJ2K decoder may drop (the library encodes 5 decompositions).
MAX_REDUCE = 5


@dataclass(frozen=True)
class RenderParams:
    window: tuple[float, float] | None = None  # (center, width)
    viewport: tuple[int, int] | None = None  # (width, height)
    quality: int = 90

    @classmethod
    def from_query(cls, query: Mapping[str, str], thumbnail: bool = False) -> "RenderParams":
        """Read PS3.18 ``window=c,w[,linear]``, ``viewport=w,h`` and ``quality``."""
        window = None
        if query.get("window"):
            parts = query["window"].split(",")
            if len(parts) < 2 or (len(parts) > 2 and parts[2] not in ("linear", "")):
                raise ValueError("window must be center,width[,linear]")
            window = (float(parts[0]), float(parts[1]))
            if window[1] <= 0:
                raise ValueError("window width must be positive")
        viewport = THUMBNAIL_SIZE if thumbnail else None
        if query.get("viewport"):
            parts = query["viewport"].split(",")
            viewport = (int(parts[0]), int(parts[1]))
            if not (0 < viewport[0] <= 4096 and 0 < viewport[1] <= 4096):
                raise ValueError("viewport must be two sizes between 1 and 4096")
        quality = int(query.get("quality", 90))
        if not 1 <= quality <= 100:
            raise ValueError("quality must be 1-100")
        return cls(window, viewport, quality)


def choose_image_type(accept: str | None) -> str:
    """``image/jpeg`` unless PNG is asked for (PS3.18's default for rendered is JPEG)."""
    for media in parse_accept(accept):
        if media.q <= 0:
            continue
        if media.media_type in ("image/jpeg", "image/*", "*/*"):
            return "image/jpeg"
        if media.media_type == "image/png":
            return "image/png"
    raise NotAcceptable("rendered images are image/jpeg or image/png")


def reduce_level(rows: int, columns: int, viewport: tuple[int, int] | None) -> int:
    """How many resolution levels can be skipped and still fill the viewport."""
    if viewport is None:
        return 0
    level = 0
    while (level < MAX_REDUCE and (columns >> (level + 1)) >= viewport[0]
           and (rows >> (level + 1)) >= viewport[1]):
        level += 1
    return level


def _first_number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)):
        value = value[0]
    text = str(value).split("\\")[0]
    try:
        return float(text)
    except ValueError:
        return None


def render(array: np.ndarray, tags: Mapping[str, Any], params: RenderParams) -> np.ndarray:
    """Window a frame to 8 bits and fit it in the viewport (aspect kept)."""
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        image = array[..., :3]
        if image.dtype != np.uint8:
            image = _linear(image.astype(np.float64), float(image.min()), float(image.max()))
        return _fit(image, params.viewport)
    values = array.astype(np.float64)
    slope = _first_number(tags.get("RescaleSlope")) or 1.0
    intercept = _first_number(tags.get("RescaleIntercept")) or 0.0
    values = values * slope + intercept
    if params.window is not None:
        center, width = params.window
    else:
        center = _first_number(tags.get("WindowCenter"))
        width = _first_number(tags.get("WindowWidth"))
        if center is None or not width or width <= 0:
            low, high = float(values.min()), float(values.max())
            center, width = (low + high) / 2, max(high - low, 1.0)
    image = _linear(values, center - width / 2, center + width / 2)
    if str(tags.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        image = 255 - image
    return _fit(image, params.viewport)


def _linear(values: np.ndarray, low: float, high: float) -> np.ndarray:
    scaled = (values - low) / max(high - low, 1e-9) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _fit(image: np.ndarray, viewport: tuple[int, int] | None) -> np.ndarray:
    if viewport is None:
        return image
    rows, columns = image.shape[:2]
    scale = min(viewport[0] / columns, viewport[1] / rows)
    if scale >= 1:
        return image
    new_rows, new_columns = max(1, round(rows * scale)), max(1, round(columns * scale))
    row_index = ((np.arange(new_rows) + 0.5) * rows / new_rows).astype(int)
    column_index = ((np.arange(new_columns) + 0.5) * columns / new_columns).astype(int)
    return image[row_index][:, column_index]


def encode(image: np.ndarray, media_type: str, quality: int = 90) -> bytes:
    """PNG or JPEG bytes of an 8-bit image (imagecodecs: libpng and libjpeg-turbo)."""
    import imagecodecs

    image = np.ascontiguousarray(image)
    if media_type == "image/png":
        return bytes(imagecodecs.png_encode(image))
    return bytes(imagecodecs.jpeg8_encode(image, level=quality))
