"""Toy Models of Superposition (Elhage et al., 2022): feature geometry in 2 dimensions.

In the toy model ``h = W^T x``, ``x' = ReLU(W h + b)`` with ``W [n_features, m]``, each
feature ``i`` has a direction ``W[i]`` in the m-dimensional hidden space. With ``m = 2``
the directions can be drawn: superposition shows as more than two features sharing
the plane, often in regular polygons (antipodal pairs, pentagons).

The models are trained by `jaxinterp.toy.train_tms`, which stores ``W`` in the paper's
``[d_hidden, n_features]`` layout: pass ``W.T`` here, or use
`jaxinterp.viz.superposition.feature_directions`, which takes ``W`` as trained. The
other superposition figures (``W^T W``, dimensionality, the phase diagram) are in
`jaxinterp.viz.superposition`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from jaxtyping import Float
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .figures import new_figure, save_figure


def tms_geometry(
    W: Float[np.ndarray, "feature m"],
    importance: Optional[Sequence[float]] = None,
    feature_labels: Optional[Sequence[str]] = None,
    title: str = "Feature directions (rows of W)",
    path: Optional[str] = None,
    ax: Optional[Axes] = None,
) -> Figure:
    """Draw each feature's direction ``W[i]`` (``W [n_features, 2]``) as a line from the
    origin to the point ``W[i]``, coloured by ``importance`` if given (else by index),
    and labelled. The axes are square and symmetric so angles and lengths read true.
    Saves a PNG to ``path``. Returns the `Figure`."""
    W = np.asarray(W, dtype=float)
    if W.ndim != 2 or W.shape[1] != 2:
        raise ValueError(
            f"tms_geometry draws W of shape [n_features, 2] (a 2-D hidden space), got {W.shape}; "
            "for m > 2 project first (e.g. onto two principal directions)"
        )
    n = W.shape[0]
    if importance is not None and len(importance) != n:
        raise ValueError(f"{len(importance)} importances for {n} features")
    labels = list(feature_labels) if feature_labels is not None else [str(i) for i in range(n)]
    if len(labels) != n:
        raise ValueError(f"{len(labels)} feature labels for {n} features")
    if ax is None:
        fig = new_figure(4.6, 4.2)
        ax = fig.subplots()
    else:
        fig = ax.figure  # type: ignore[assignment]
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    shade = np.asarray(importance, dtype=float) if importance is not None else np.arange(n, dtype=float)
    span = float(shade.max() - shade.min()) or 1.0
    for i in range(n):
        colour = cmap((shade[i] - shade.min()) / span)
        ax.plot([0.0, W[i, 0]], [0.0, W[i, 1]], color=colour, linewidth=1.8, gid=f"feature {i}")
        ax.scatter([W[i, 0]], [W[i, 1]], color=[colour], s=22, zorder=3)
        ax.annotate(labels[i], (W[i, 0], W[i, 1]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    lim = 1.15 * (float(np.abs(W).max()) or 1.0)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.axhline(0, color="#bbb", linewidth=0.6)
    ax.axvline(0, color="#bbb", linewidth=0.6)
    ax.set_xlabel("hidden dim 0")
    ax.set_ylabel("hidden dim 1")
    ax.set_title(title)
    save_figure(fig, path)
    return fig
