"""`LabelledArray.plot`: a heatmap or bar chart with the array's axis names and labels."""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..core.labelled import LabelledArray

__all__ = ["plot_labelled"]


def plot_labelled(
    array: LabelledArray, ax=None, title: Optional[str] = None, cmap: str = "RdBu", path: Optional[str] = None
):
    """A heatmap (2-D) or bar chart (1-D) with labelled axes; diverging colours
    centred on zero. Saves to ``path`` if given. Returns the matplotlib Axes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    vals = array.values
    if vals.ndim > 2:
        raise ValueError(f"plot() draws 1-D or 2-D arrays; this one has axes {array.dims}: index it first")
    if ax is None:
        w = 2.5 + 0.45 * (vals.shape[-1] if vals.ndim == 2 else 1)
        h = 2 + 0.28 * (vals.shape[0] if vals.ndim == 2 else 6)
        _, ax = plt.subplots(figsize=(min(w, 18), min(h, 14)))
    if vals.ndim == 1:
        ax.bar(range(len(vals)), vals)
        ax.set_xticks(range(len(vals)), array.axis_labels(array.dims[0]), rotation=90)
        ax.set_xlabel(array.dims[0])
    else:
        lim = float(np.nanmax(np.abs(vals))) or 1.0
        im = ax.imshow(vals, cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
        ax.figure.colorbar(im, ax=ax)
        ax.set_yticks(range(vals.shape[0]), array.axis_labels(array.dims[0]))
        ax.set_xticks(range(vals.shape[1]), array.axis_labels(array.dims[1]), rotation=90)
        ax.set_ylabel(array.dims[0])
        ax.set_xlabel(array.dims[1])
    ax.set_title(title or array.name)
    if path:
        ax.figure.tight_layout()
        ax.figure.savefig(path, dpi=120)
    return ax
