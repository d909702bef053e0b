"""Scatter two estimates of the same quantity against each other (e.g. attribution
patching against activation patching, location by location)."""

from __future__ import annotations

from typing import Optional

import numpy as np
from matplotlib.figure import Figure

from .figures import new_figure, save_figure


def compare_scatter(
    x,
    y,
    x_name: str = "activation patching",
    y_name: str = "attribution patching",
    title: Optional[str] = None,
    path: Optional[str] = None,
) -> Figure:
    """One point per location: ``x`` against ``y`` (arrays or `LabelledArray`s of the same
    shape, flattened), the line ``y = x``, and their Pearson correlation in the title.
    Saves a PNG to ``path``. Returns the `Figure`."""
    xs, ys = np.asarray(x, dtype=float).reshape(-1), np.asarray(y, dtype=float).reshape(-1)
    if xs.shape != ys.shape:
        raise ValueError(f"x has {xs.size} values but y has {ys.size}: compare arrays of the same shape")
    if xs.size < 2:
        raise ValueError("compare_scatter needs at least two points")
    corr = float(np.corrcoef(xs, ys)[0, 1])
    fig = new_figure(4.4, 4.0)
    ax = fig.subplots()
    lo, hi = float(min(xs.min(), ys.min())), float(max(xs.max(), ys.max()))
    ax.plot([lo, hi], [lo, hi], color="#999", linewidth=0.8, linestyle="--", label="y = x")
    ax.scatter(xs, ys, s=10, alpha=0.7)
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    ax.set_title(f"{title + ': ' if title else ''}r = {corr:.3f}", fontsize=10)
    ax.legend(loc="upper left", fontsize=7)
    save_figure(fig, path)
    return fig
