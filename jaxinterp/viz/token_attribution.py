"""Per-token attribution scores drawn over the text: each token on a background coloured
by its score (red positive, blue negative, symmetric scale)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .figures import new_figure, save_figure
from .labels import visible_token

__all__ = ["token_attribution_text"]


def token_attribution_text(
    tokens: Sequence[str],
    scores: np.ndarray,
    title: str = "",
    path: Optional[str] = None,
    width_chars: int = 70,
):
    """``tokens`` (strings) with ``scores`` ``[pos]`` as background colours, wrapped at
    about ``width_chars`` characters per line; the colour bar gives the scale."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    scores = np.asarray(scores, np.float64)
    if len(tokens) != len(scores):
        raise ValueError(f"{len(tokens)} tokens but {len(scores)} scores")
    labels = [visible_token(t) for t in tokens]
    lines, line, n = [], [], 0
    for i, lab in enumerate(labels):
        if n + len(lab) > width_chars and line:
            lines.append(line)
            line, n = [], 0
        line.append(i)
        n += len(lab) + 1
    lines.append(line)
    vmax = float(np.abs(scores).max()) or 1.0
    norm = Normalize(-vmax, vmax)
    cmap = colormaps["RdBu_r"]
    fig = new_figure(0.11 * width_chars + 1.5, 0.42 * len(lines) + 0.9)
    ax = fig.subplots()
    ax.set_xlim(0, width_chars + 2)
    ax.set_ylim(len(lines), -0.5)
    ax.axis("off")
    for row, idx in enumerate(lines):
        x = 0.0
        for i in idx:
            ax.text(
                x,
                row + 0.3,
                labels[i],
                family="monospace",
                fontsize=9,
                va="center",
                bbox=dict(facecolor=cmap(norm(scores[i])), edgecolor="none", pad=1.5),
            )
            x += len(labels[i]) + 1
    fig.colorbar(ScalarMappable(norm, cmap), ax=ax, fraction=0.03, pad=0.01, label="attribution")
    if title:
        ax.set_title(title, fontsize=10)
    save_figure(fig, path)
    return fig
