"""Figures for toy models of superposition (`jaxinterp.toy.superposition`).

- `superposition_summary`: the paper's two panels for one model: the ``W^T W`` heatmap and
  the bar chart of feature norms ``||W_i||`` coloured by superposition;
- `feature_directions`: the columns of a 2-D ``W`` as arrows (via `tms_geometry`);
- `dimensionality_plot`: feature dimensionality ``D_i`` against ``1/(1-S)``, with the
  dimensions per feature ``D* = m / ||W||_F^2``;
- `phase_diagram_plot`: the 2-feature / 1-neuron phase diagram, trained phases as
  coloured cells and the analytic boundaries as curves.

Weights follow the paper's convention ``W [d_hidden, n_features]``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from jaxtyping import Float
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .figures import new_figure, save_figure
from .tms import tms_geometry

__all__ = ["superposition_summary", "feature_directions", "dimensionality_plot", "phase_diagram_plot"]

PHASE_COLOURS = ("#d9d9d9", "#4c72b0", "#dd8452")  # not represented, dedicated, superposition


def _W(W) -> np.ndarray:
    W = np.asarray(W, dtype=float)
    if W.ndim != 2:
        raise ValueError(f"W must be [d_hidden, n_features], got shape {W.shape}")
    return W


def superposition_summary(
    W: Float[np.ndarray, "d_hidden n_features"], title: str = "", path: Optional[str] = None
) -> Figure:
    """Left: ``W^T W`` (diverging colours, symmetric range). Right: ``||W_i||`` per feature,
    each bar coloured by ``sum_{j!=i} (W_hat_i . W_j)^2`` (0 black: no interference; 1
    yellow). Saves a PNG to ``path``. Returns the `Figure`."""
    W = _W(W)
    n = W.shape[1]
    G = W.T @ W
    norms = np.linalg.norm(W, axis=0)
    W_hat = W / np.maximum(norms, 1e-12)
    sup = ((W_hat.T @ W) ** 2).sum(1) - norms**2 * (norms > 1e-12)
    fig = new_figure(8.0, 3.6)
    ax_g, ax_n = fig.subplots(1, 2, width_ratios=[1.0, 1.2])
    lim = float(np.abs(G).max()) or 1.0
    im = ax_g.imshow(G, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax_g.set_title("$W^T W$")
    ax_g.set_xlabel("feature")
    ax_g.set_ylabel("feature")
    fig.colorbar(im, ax=ax_g, shrink=0.8)
    import matplotlib

    cmap = matplotlib.colormaps["plasma"]
    ax_n.barh(np.arange(n), norms, color=[cmap(min(float(s), 1.0)) for s in sup])
    ax_n.invert_yaxis()
    ax_n.set_xlabel("$||W_i||$ (colour: superposition)")
    ax_n.set_ylabel("feature")
    ax_n.set_title("feature norms")
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
    return fig


def feature_directions(
    W: Float[np.ndarray, "2 n_features"],
    importance: Optional[Sequence[float]] = None,
    title: str = "Feature directions (columns of W)",
    path: Optional[str] = None,
    ax: Optional[Axes] = None,
) -> Figure:
    """Each column ``W_i`` of a ``W [2, n_features]`` as a line from the origin (see
    `tms_geometry`, which takes the transpose)."""
    W = _W(W)
    if W.shape[0] != 2:
        raise ValueError(f"feature_directions draws a 2-dimensional hidden space, W [2, n_features]; got {W.shape}")
    return tms_geometry(W.T, importance, title=title, path=path, ax=ax)


def dimensionality_plot(
    sparsity: Float[np.ndarray, " model"],
    dimensionality: Float[np.ndarray, "model n_features"],
    dims_per_feature: Float[np.ndarray, " model"],
    title: str = "Feature dimensionality",
    path: Optional[str] = None,
) -> Figure:
    """Scatter of every feature's dimensionality ``D_i`` against ``1/(1-S)`` (log axis), and
    the line ``D*`` per model. Horizontal guides at the fractions the paper finds sticky
    (1, 3/4, 2/3, 1/2, 2/5, 1/3)."""
    s = np.asarray(sparsity, float)
    D = np.asarray(dimensionality, float)
    if D.ndim != 2 or D.shape[0] != s.shape[0]:
        raise ValueError(
            f"dimensionality must be [model, n_features] with one row per sparsity; got {D.shape} for {s.shape}"
        )
    x = 1.0 / (1.0 - s)
    fig = new_figure(6.0, 4.0)
    ax = fig.subplots()
    for frac in (1, 3 / 4, 2 / 3, 1 / 2, 2 / 5, 1 / 3):
        ax.axhline(frac, color="#ccc", linewidth=0.6, zorder=0)
    ax.scatter(np.repeat(x, D.shape[1]), D.ravel(), s=6, alpha=0.5, color="#4c72b0", label="$D_i$ per feature")
    ax.plot(x, np.asarray(dims_per_feature, float), color="black", linewidth=1.5, label="$D^* = m / ||W||_F^2$")
    ax.set_xscale("log")
    ax.set_xlabel("1 / (1 - S)  (1 / feature density)")
    ax.set_ylabel("dimensions per feature")
    ax.set_ylim(-0.05, 1.1)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(title)
    save_figure(fig, path)
    return fig


def phase_diagram_plot(
    diagram, title: str = "2 features, 1 neuron: the extra feature is ...", path: Optional[str] = None
) -> Figure:
    """Cells coloured by the trained phase (``diagram``: a
    `jaxinterp.toy.superposition_phase.PhaseDiagram`) on log axes (relative importance of
    the extra feature across, density ``1 - S`` up), with the analytic boundaries as black
    curves."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    r, p = np.asarray(diagram.relative_importance, float), np.asarray(diagram.density, float)
    fig = new_figure(6.0, 4.6)
    ax = fig.subplots()
    ax.pcolormesh(
        _edges(r), _edges(p), np.asarray(diagram.phase), cmap=ListedColormap(PHASE_COLOURS), vmin=-0.5, vmax=2.5
    )
    dense = np.geomspace(p.min(), p.max(), 400)
    dense = np.unique(np.concatenate([dense, [4 / 7]]))
    # The analytic curves (see jaxinterp.toy.superposition_phase): r = 2p/(4-5p) and
    # r = 2/p - 5/2 below p = 4/7, and r = 1 above it.
    low = dense[dense <= 4 / 7]
    ax.plot(2 * low / (4 - 5 * low), low, color="black", linewidth=1.6)
    ax.plot(2 / low - 2.5, low, color="black", linewidth=1.6)
    high = dense[dense >= 4 / 7]
    ax.plot(np.ones_like(high), high, color="black", linewidth=1.6, label="analytic boundaries")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(_edges(r)[0], _edges(r)[-1])
    ax.set_ylim(_edges(p)[0], _edges(p)[-1])
    ax.set_xlabel("relative importance of the extra feature")
    ax.set_ylabel("feature density 1 - S")
    handles = [
        Patch(color=c, label=f"trained: {name}")
        for c, name in zip(PHASE_COLOURS, ("not represented", "dedicated", "superposition"))
    ]
    handles.append(ax.lines[-1])
    ax.legend(handles=handles, fontsize=7, loc="lower right", framealpha=0.9)
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)
    return fig


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges for log-spaced centres (geometric midpoints, extended at both ends)."""
    c = np.log(np.asarray(centres, float))
    if len(c) == 1:
        return np.exp(np.array([c[0] - 0.5, c[0] + 0.5]))
    mid = (c[1:] + c[:-1]) / 2
    return np.exp(np.concatenate([[2 * c[0] - mid[0]], mid, [2 * c[-1] - mid[-1]]]))
