"""Figures for the editing techniques: dose-response curves (a measured property
against a steering coefficient, one line per series) and per-layer curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from .figures import new_figure, save_figure

__all__ = ["dose_response"]


def dose_response(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    title: str = "",
    path: str | None = None,
    secondary: Mapping[str, Sequence[float]] | None = None,
    secondary_label: str = "",
) -> Figure:
    """One line per entry of ``series`` against ``x`` (e.g. a score per steering
    coefficient); ``secondary`` series go on a right-hand axis with ``secondary_label``."""
    x = np.asarray(x, float)
    for name, ys in {**series, **(secondary or {})}.items():
        if len(ys) != len(x):
            raise ValueError(f"series {name!r} has {len(ys)} values for {len(x)} x values")
    fig = new_figure(6.0, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for name, ys in series.items():
        ax.plot(x, np.asarray(ys, float), marker="o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if secondary:
        ax2 = ax.twinx()
        for name, ys in secondary.items():
            ax2.plot(x, np.asarray(ys, float), marker="s", linestyle="--", color="grey", label=name)
        ax2.set_ylabel(secondary_label)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8, loc="best")
    if title:
        ax.set_title(title, fontsize=10)
    save_figure(fig, path)
    return fig
