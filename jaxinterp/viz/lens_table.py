"""Logit-lens tables: the top token at each (layer, position), coloured by probability."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from jaxtyping import Float
from matplotlib.figure import Figure

from .figures import new_figure, save_figure
from .html import escape
from .labels import visible_token


def _check(top_tokens, values, row_labels, col_labels):
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"values must be 2-D [row, col] (e.g. [layer, pos]), got shape {values.shape}")
    top_tokens = [[str(t) for t in row] for row in top_tokens]
    shape = (len(top_tokens), len(top_tokens[0]) if top_tokens else 0)
    if shape != values.shape:
        raise ValueError(f"top_tokens is {shape[0]}x{shape[1]} but values has shape {values.shape}")
    rows = list(row_labels) if row_labels is not None else [str(i) for i in range(values.shape[0])]
    cols = list(col_labels) if col_labels is not None else [str(i) for i in range(values.shape[1])]
    if len(rows) != values.shape[0] or len(cols) != values.shape[1]:
        raise ValueError(f"{len(rows)} row labels and {len(cols)} column labels for values of shape {values.shape}")
    return top_tokens, values, rows, cols


def logit_lens_table(
    top_tokens: Sequence[Sequence[str]],
    values: Float[np.ndarray, "row col"],
    row_labels: Optional[Sequence[str]] = None,
    col_labels: Optional[Sequence[str]] = None,
    title: str = "Logit lens: top token",
    path: Optional[str] = None,
    value_name: str = "probability",
) -> Figure:
    """A table drawn as a heatmap: cell ``(r, c)`` shows ``top_tokens[r][c]`` (e.g. the
    most likely next token read from layer ``r``'s residual at position ``c``) on a
    colour for ``values[r, c]`` (its probability, 0..1). Saves a PNG to ``path``."""
    top_tokens, values, rows, cols = _check(top_tokens, values, row_labels, col_labels)
    fig = new_figure(2.0 + 0.95 * values.shape[1], 1.2 + 0.27 * values.shape[0])
    ax = fig.subplots()
    vmax = max(1.0, float(values.max())) if value_name == "probability" else float(values.max())
    im = ax.imshow(values, cmap="Greens", vmin=min(0.0, float(values.min())), vmax=vmax, aspect="auto")
    for (r, c), v in np.ndenumerate(values):
        ax.text(
            c,
            r,
            visible_token(top_tokens[r][c])[:10],
            ha="center",
            va="center",
            fontsize=6,
            color="white" if v > 0.6 * vmax else "black",
        )
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xticks(range(len(cols)), [visible_token(c) for c in cols], rotation=90, fontsize=7)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label=value_name)
    save_figure(fig, path)
    return fig


def logit_lens_html(
    top_tokens: Sequence[Sequence[str]],
    values: Float[np.ndarray, "row col"],
    row_labels: Optional[Sequence[str]] = None,
    col_labels: Optional[Sequence[str]] = None,
    value_name: str = "probability",
) -> str:
    """The same table as an HTML fragment (``<table class="ji-lens">``): one cell per
    (row, column) with the token, shaded by its value, the value in the tooltip."""
    top_tokens, values, rows, cols = _check(top_tokens, values, row_labels, col_labels)
    vmax = float(np.abs(values).max()) or 1.0
    out = [
        '<table class="ji-table ji-lens">',
        "<tr><th></th>" + "".join(f"<th>{escape(visible_token(c))}</th>" for c in cols) + "</tr>",
    ]
    for r, label in enumerate(rows):
        cells = []
        for c in range(len(cols)):
            a = min(1.0, abs(values[r, c]) / vmax)
            bg = f"rgb({round(247 - 200 * a)},{round(252 - 100 * a)},{round(245 - 190 * a)})"
            cells.append(
                f'<td style="background:{bg};white-space:pre" title="{escape(value_name)} {values[r, c]:.3f}">'
                f"{escape(visible_token(top_tokens[r][c]))}</td>"
            )
        out.append(f"<tr><th>{escape(label)}</th>{''.join(cells)}</tr>")
    out.append("</table>")
    return "\n".join(out)
