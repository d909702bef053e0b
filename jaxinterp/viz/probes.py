"""Figures for probes: a metric by layer (with control-task curves) and sparse-probing
accuracy against the number of neurons."""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from .figures import new_figure, save_figure

__all__ = ["probe_layer_curves", "sparse_probing_curves"]


def probe_layer_curves(
    panels: Mapping[str, Mapping[str, np.ndarray]],
    ylabels: Optional[Mapping[str, str]] = None,
    title: str = "",
    path: Optional[str] = None,
):
    """One panel per entry of ``panels`` (``{panel title: {curve label: [layer] values}}``);
    curve labels containing "control" are drawn dashed."""
    n = len(panels)
    fig = new_figure(4.2 * n, 3.2)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (name, curves) in zip(axes, panels.items()):
        for label, values in curves.items():
            values = np.asarray(values)
            ax.plot(np.arange(len(values)), values, ls="--" if "control" in label else "-", marker=".", label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("layer")
        ax.set_ylabel((ylabels or {}).get(name, ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    save_figure(fig, path)
    return fig


def sparse_probing_curves(curves: Mapping[str, tuple], title: str = "", path: Optional[str] = None):
    """``{label: (ks, accuracies)}`` on a log-k axis."""
    fig = new_figure(4.5, 3.2)
    ax = fig.subplots()
    for label, (ks, acc) in curves.items():
        ax.plot(ks, acc, marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (neurons used)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    save_figure(fig, path)
    return fig
