"""Figures for the geometry of concepts in the unembedding: tokens projected onto the
plane of a parent vector and a child-minus-parent direction, and onto the simplex of
three categorical concepts (after Park et al. 2024, figures 1 and 3)."""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from .figures import new_figure, save_figure

__all__ = ["concept_projections"]


def concept_projections(
    panels: Mapping[str, tuple],
    title: str = "",
    path: Optional[str] = None,
):
    """One scatter panel per entry: ``{panel title: (xlabel, ylabel, {group: [n, 2] points},
    {vertex label: [2] point})}``; vertices are drawn as black stars and joined (the simplex)."""
    fig = new_figure(4.4 * len(panels), 4.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, (xl, yl, groups, vertices)) in zip(axes, panels.items()):
        for label, pts in groups.items():
            pts = np.asarray(pts)
            ax.scatter(pts[:, 0], pts[:, 1], s=9, alpha=0.6, label=label)
        if vertices:
            vs = np.asarray(list(vertices.values()))
            ax.plot(np.r_[vs[:, 0], vs[:1, 0]], np.r_[vs[:, 1], vs[:1, 1]], "k-", lw=1)
            for lab, v in vertices.items():
                ax.scatter([v[0]], [v[1]], marker="*", s=120, c="k")
                ax.annotate(lab, v, fontsize=8, xytext=(4, 4), textcoords="offset points")
        ax.axhline(0, c="grey", lw=0.5)
        ax.axvline(0, c="grey", lw=0.5)
        ax.set_xlabel(xl, fontsize=8)
        ax.set_ylabel(yl, fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=7, markerscale=1.5)
    if title:
        fig.suptitle(title, fontsize=11)
    save_figure(fig, path)
    return fig
