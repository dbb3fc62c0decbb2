"""``neuronova_lib.view``: a volume (and an overlay) in a notebook, offline.

ipyniivue (NiiVue as an anywidget) carries NiiVue's JavaScript in its wheel, so the view
draws in JupyterLab and Voilà with no network (see FINDINGS: itkwidgets fetches its viewer
from CDNs at run time, so it can only be an optional backend). The volume goes to the
browser as an uncompressed NIfTI in its own dtype, with its RAS affine: axial, coronal,
sagittal and 3-D views in patient orientation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .volume import Volume


def _nifti_bytes(array: np.ndarray, affine: np.ndarray) -> bytes:
    import nibabel as nib

    image = nib.Nifti1Image(np.ascontiguousarray(array), affine)
    image.header.set_xyzt_units("mm")
    return bytes(image.to_bytes())


def channel_array(volume: Volume, channel: str | int | None = None) -> np.ndarray:
    """The 3-D array of ``channel`` (a name such as ``"flair"``, an index, or the first)."""
    if not volume.channels:
        return volume.array
    if channel is None:
        index = 0
    elif isinstance(channel, str):
        if channel not in volume.channels:
            raise ValueError(f"no channel {channel!r}: this volume has {', '.join(volume.channels)}")
        index = volume.channels.index(channel)
    else:
        index = int(channel)
    return volume.array[index]


def view(volume: Volume, *, channel: str | int | None = None, overlay: Any = None,
         overlay_colormap: str = "red", overlay_opacity: float = 0.5,
         height: int = 480) -> Any:
    """An ipyniivue ``NiiVue`` widget showing ``volume`` (one channel) and an overlay.

    Parameters
    ----------
    volume : Volume
        What ``Client.load_series`` / ``load_study`` return.
    channel : str or int, optional
        For a multi-channel volume: which one (default the first).
    overlay : numpy.ndarray or Volume, optional
        A mask or label map on the same grid (``(X, Y, Z)``), e.g. a segmentation.
    overlay_colormap, overlay_opacity : optional
        How the overlay is drawn (NiiVue colormap name, 0–1).
    height : int
        Widget height in pixels.

    Returns
    -------
    ipyniivue.NiiVue
        Display it as a cell's last expression.
    """
    try:
        from ipyniivue import NiiVue
    except ImportError:
        raise ImportError("the notebook viewer needs ipyniivue: pip install 'neuronova[notebook]'"
                          ) from None
    base = channel_array(volume, channel)
    name = channel if isinstance(channel, str) else (volume.channels[0] if volume.channels
                                                     and channel is None else "volume")
    volumes = [{"data": _nifti_bytes(base, volume.affine_ras), "name": f"{name}.nii",
                "colormap": "gray"}]
    if overlay is not None:
        mask = overlay.array if hasattr(overlay, "array") else np.asarray(overlay)
        if mask.shape != base.shape:
            raise ValueError(f"the overlay's shape {mask.shape} is not the volume's {base.shape}")
        if mask.dtype == bool:
            mask = mask.astype(np.uint8)
        volumes.append({"data": _nifti_bytes(mask, volume.affine_ras), "name": "overlay.nii",
                        "colormap": overlay_colormap, "opacity": float(overlay_opacity)})
    widget = NiiVue(height=height)
    widget.load_volumes(volumes)
    return widget
