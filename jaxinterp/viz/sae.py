"""SAE figures: the sparsity / reconstruction frontier (FVU against L0)."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from matplotlib.figure import Figure

from .figures import new_figure, save_figure

__all__ = ["fvu_l0_frontier"]


def fvu_l0_frontier(
    points: Mapping[str, Sequence[tuple[float, float]]],
    title: str = "SAE frontier: reconstruction vs sparsity",
    path: Optional[str] = None,
) -> Figure:
    """One line per variant through its ``(L0, FVU)`` points (sorted by L0); lower-left
    is better. ``points``: ``{variant: [(l0, fvu), ...]}``."""
    fig = new_figure(5.5, 4.0)
    ax = fig.add_subplot()
    for name, pts in points.items():
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("L0 (active latents per token)")
    ax.set_ylabel("fraction of variance unexplained")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    save_figure(fig, path)
    return fig
