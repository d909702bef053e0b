"""Heatmaps of sweep results (activation patching, attribution) with labelled axes."""

from __future__ import annotations

from typing import Optional

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..core.labelled import LabelledArray
from .figures import new_figure, save_figure


def patching_heatmap(
    result: LabelledArray,
    title: Optional[str] = None,
    path: Optional[str] = None,
    ax: Optional[Axes] = None,
    annotate: Optional[bool] = None,
    cmap: str = "RdBu",
) -> Figure:
    """Draw a 2-D (e.g. ``[layer, pos]`` or ``[layer, head]``) or 1-D result.

    Builds on `LabelledArray.plot`: diverging colours centred on zero, the result's axis
    names and labels (token strings) on the axes. Adds each cell's value as text when
    the grid is small enough to read (``annotate=None`` decides by size) and outlines
    the cell with the largest absolute value. Saves a PNG to ``path`` if given.

    Returns the matplotlib `Figure`.
    """
    if not isinstance(result, LabelledArray):
        raise TypeError(f"patching_heatmap takes a LabelledArray (values + axis names), got {type(result).__name__}")
    vals = np.asarray(result.values, dtype=float)
    if vals.ndim not in (1, 2):
        raise ValueError(f"patching_heatmap draws 1-D or 2-D results; this one has axes {result.dims}: index it first")
    if ax is None:
        rows, cols = vals.shape if vals.ndim == 2 else (6, vals.shape[0])
        fig = new_figure(3.0 + 0.42 * cols, 1.8 + 0.22 * rows)
        ax = fig.subplots()
    else:
        fig = ax.figure  # type: ignore[assignment]
    result.plot(ax=ax, title=title or result.name or None, cmap=cmap)
    if vals.ndim == 2:
        if annotate is None:
            annotate = vals.size <= 600
        lim = float(np.nanmax(np.abs(vals))) or 1.0
        if annotate:
            for (r, c), v in np.ndenumerate(vals):
                ax.text(
                    c,
                    r,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if abs(v) > 0.6 * lim else "black",
                )
        r, c = np.unravel_index(int(np.nanargmax(np.abs(vals))), vals.shape)
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.5))
    save_figure(fig, path)
    return fig


def score_heatmaps(
    results: dict,
    title: Optional[str] = None,
    path: Optional[str] = None,
    vmin: float = 0.0,
    vmax: Optional[float] = None,
    cmap: str = "Blues",
) -> Figure:
    """Several 2-D results side by side on one shared, sequential colour scale (e.g.
    head-detector scores ``[layer, head]`` in 0..1). ``results``: panel title ->
    `LabelledArray`. ``vmax`` defaults to the largest value. Saves a PNG to ``path``."""
    if not results:
        raise ValueError("score_heatmaps needs at least one result")
    arrays = {}
    for name, r in results.items():
        if not isinstance(r, LabelledArray) or r.ndim != 2:
            raise ValueError(
                f"score_heatmaps draws 2-D LabelledArrays; {name!r} is {type(r).__name__} of shape {np.shape(r)}"
            )
        arrays[name] = np.asarray(r.values, dtype=float)
    top = float(max(np.nanmax(a) for a in arrays.values())) if vmax is None else vmax
    first = next(iter(results.values()))
    rows, cols = first.shape
    fig = new_figure(1.2 + len(results) * (1.0 + 0.3 * cols), 1.6 + 0.2 * rows)
    axes = np.atleast_1d(fig.subplots(1, len(results), sharey=True))
    for ax, (name, r) in zip(axes, results.items()):
        im = ax.imshow(arrays[name], cmap=cmap, vmin=vmin, vmax=top, aspect="auto")
        ax.set_title(name, fontsize=10)
        ax.set_xticks(range(r.shape[1]), r.axis_labels(r.dims[1]), fontsize=7)
        ax.set_xlabel(r.dims[1])
        ax.set_yticks(range(r.shape[0]), r.axis_labels(r.dims[0]), fontsize=7)
    axes[0].set_ylabel(first.dims[0])
    fig.colorbar(im, ax=axes.tolist(), shrink=0.8)
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
    return fig
