"""Figures for universal neurons (`jaxinterp.features.universal_neurons`): the distribution
of each neuron's max correlation with the other seeds against the random-rotation
baseline, and the properties of universal neurons."""

from __future__ import annotations

from typing import Optional

import numpy as np
from jaxtyping import Float
from matplotlib.figure import Figure

from .figures import new_figure, save_figure

__all__ = ["max_correlation_histogram", "universal_properties_plot"]


def max_correlation_histogram(
    neurons: Float[np.ndarray, " n"],
    rotated: Float[np.ndarray, " n"],
    threshold: float = 0.5,
    title: str = "Max correlation with the other seeds",
    path: Optional[str] = None,
) -> Figure:
    """Histograms (share of neurons per bin) of the neurons' statistic and of the same
    statistic for randomly rotated bases, with the universality ``threshold`` marked."""
    neurons, rotated = np.asarray(neurons, float).ravel(), np.asarray(rotated, float).ravel()
    fig = new_figure(6.0, 3.8)
    ax = fig.subplots()
    bins = np.linspace(0, 1, 41)
    w = lambda x: np.full(len(x), 1.0 / max(len(x), 1))  # noqa: E731
    ax.hist(
        neurons,
        bins=bins,
        weights=w(neurons),
        alpha=0.7,
        color="#4c72b0",
        label=f"neurons ({np.mean(neurons > threshold):.1%} > {threshold})",
    )
    ax.hist(
        rotated,
        bins=bins,
        weights=w(rotated),
        alpha=0.6,
        color="#dd8452",
        label=f"random rotation ({np.mean(rotated > threshold):.1%} > {threshold})",
    )
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel("correlation")
    ax.set_ylabel("share of neurons")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)
    return fig


def universal_properties_plot(
    max_corr: Float[np.ndarray, " neuron"],
    activation_frequency: Float[np.ndarray, " neuron"],
    vocab_kurtosis: Float[np.ndarray, " neuron"],
    threshold: float = 0.5,
    path: Optional[str] = None,
) -> Figure:
    """Two scatters over neurons: activation frequency and vocabulary-effect kurtosis
    (log) against the max correlation, universal neurons (``> threshold``) highlighted."""
    mc = np.asarray(max_corr, float)
    uni = mc > threshold
    fig = new_figure(8.0, 3.4)
    ax1, ax2 = fig.subplots(1, 2)
    for ax, y, label in (
        (ax1, activation_frequency, "activation frequency"),
        (ax2, vocab_kurtosis, "kurtosis of W_out W_U"),
    ):
        y = np.asarray(y, float)
        ax.scatter(mc[~uni], y[~uni], s=5, alpha=0.4, color="#999", label="other")
        ax.scatter(mc[uni], y[uni], s=8, alpha=0.8, color="#c44e52", label=f"universal (> {threshold})")
        ax.axvline(threshold, color="black", linestyle="--", linewidth=0.8)
        ax.set_xlabel("max correlation (mean over other seeds)")
        ax.set_ylabel(label)
    ax2.set_yscale("log")
    ax1.legend(fontsize=7)
    save_figure(fig, path)
    return fig
