"""The run's picture: one held-out case's FLAIR with the truth and the prediction over it."""

from __future__ import annotations

from typing import Any

import numpy as np

from .evaluate import Example

#: Region colours (TC, WT, ET), the usual BraTS overlay colours.
_COLOURS = ("red", "yellow", "cyan")


def prediction_figure(example: Example, regions: tuple[str, ...]) -> Any:
    """A matplotlib figure: the axial slice with the most tumour, truth left, prediction right.

    Arrays are on the model's grid in LPS layout (i → left, j → posterior), so
    the slice is shown transposed: anterior up, patient left on the right
    (radiological convention).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    whole = example.truth[1] if example.truth.shape[0] > 1 else example.truth[0]
    k = int(np.argmax(whole.sum(axis=(0, 1))))
    flair = example.flair[:, :, k].T
    figure, axes = plt.subplots(1, 2, figsize=(8, 4.4), dpi=100)
    for ax, masks, title in ((axes[0], example.truth, "ground truth"),
                             (axes[1], example.prediction, "prediction")):
        ax.imshow(flair, cmap="gray", origin="upper")
        for index, region in enumerate(regions):
            mask = masks[index][:, :, k].T
            if mask.any():
                ax.contour(mask.astype(float), levels=[0.5], colors=_COLOURS[index % 3],
                           linewidths=1.0)
            ax.plot([], [], color=_COLOURS[index % 3], label=region)
        ax.set_title(f"{example.case_id} slice {k}: {title}", fontsize=9)
        ax.axis("off")
    axes[1].legend(loc="lower right", fontsize=8, framealpha=0.6)
    figure.suptitle("FLAIR; synthetic demonstration data, not for clinical use", fontsize=9)
    figure.tight_layout()
    return figure
