"""Figures for image feature visualisation (`jaxinterp.features.visualise_image`): a grid
of optimised images, the objective-by-image activation matrix, rotation curves."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from jaxtyping import Float
from matplotlib.figure import Figure

from .figures import new_figure, save_figure

__all__ = ["image_grid", "activation_matrix_plot", "rotation_curves_plot"]


def image_grid(
    images: Float[np.ndarray, "n 3 h w"],
    titles: Optional[Sequence[str]] = None,
    cols: int = 4,
    title: Optional[str] = None,
    path: Optional[str] = None,
) -> Figure:
    """``images`` (channels first, values in [0, 1]) in a grid of ``cols`` columns."""
    images = np.clip(np.asarray(images, np.float32), 0, 1)
    n = len(images)
    rows = -(-n // cols)
    fig = new_figure(2.0 * cols, 2.1 * rows + (0.3 if title else 0))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i].transpose(1, 2, 0))
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, path)
    return fig


def activation_matrix_plot(
    matrix: Float[np.ndarray, "objective image"], labels: Sequence[str], path: Optional[str] = None
) -> Figure:
    """Heatmap of ``matrix[i, j]`` = objective ``i`` on image ``j``: a strong diagonal means
    each visualisation is specific to its own neuron."""
    m = np.asarray(matrix, float)
    fig = new_figure(5.5, 4.8)
    ax = fig.subplots()
    im = ax.imshow(m, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.set_xlabel("image optimised for")
    ax.set_ylabel("activation of")
    fig.colorbar(im, ax=ax)
    save_figure(fig, path)
    return fig


def rotation_curves_plot(
    degrees: Float[np.ndarray, " angle"],
    curves: Float[np.ndarray, "n angle"],
    labels: Sequence[str],
    path: Optional[str] = None,
) -> Figure:
    """Each objective's activation on its own image rotated by ``degrees``, relative to 0 degrees."""
    curves = np.asarray(curves, float)
    zero = int(np.argmin(np.abs(np.asarray(degrees))))
    fig = new_figure(6.0, 3.8)
    ax = fig.subplots()
    for c, lab in zip(curves, labels):
        ax.plot(degrees, c / c[zero], linewidth=1, label=lab)
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xlabel("rotation (degrees)")
    ax.set_ylabel("activation / activation at 0")
    if 0 < len(labels) <= 8:
        ax.legend(fontsize=7)
    save_figure(fig, path)
    return fig
