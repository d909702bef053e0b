"""The ROME-style causal-tracing figure (`CausalTrace.plot`)."""

from __future__ import annotations

from typing import Optional

from ..causal.causal_tracing import KINDS, CausalTrace
from .figures import new_figure, save_figure
from .labels import visible_token

__all__ = ["plot_causal_trace"]


def plot_causal_trace(trace: CausalTrace, path: Optional[str] = None):
    """ROME-style figure: for each computed kind, a heatmap of p(answer) with tokens down
    (subject tokens starred) and layers across, on a white-to-colour scale from the
    corrupted run's probability. Saves a PNG to ``path``. Returns the Figure."""
    kinds = [k for k in KINDS if getattr(trace, k) is not None]
    cmaps = {"hidden": "Purples", "mlp": "Greens", "attn": "Reds"}
    titles = {
        "hidden": "restoring the hidden state",
        "mlp": f"restoring MLP outputs ({trace.window} layers)",
        "attn": f"restoring attention outputs ({trace.window} layers)",
    }
    first = getattr(trace, kinds[0])
    n_layers, n_pos = first.shape
    fig = new_figure(1.5 + 3.4 * len(kinds), 1.4 + 0.28 * n_pos)
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    labels = first.axis_labels("pos")
    labels = [visible_token(t) + ("*" if i in trace.subject else "") for i, t in enumerate(labels)]
    for ax, kind in zip(axes, kinds):
        vals = getattr(trace, kind).values.T  # [pos, layer]
        im = ax.imshow(vals, cmap=cmaps[kind], vmin=min(trace.corrupted_prob, float(vals.min())), aspect="auto")
        ax.set_yticks(range(n_pos), labels)
        step = max(1, n_layers // 10)
        ax.set_xticks(range(0, n_layers, step))
        ax.set_xlabel("layer")
        ax.set_title(titles[kind], fontsize=9)
        cb = fig.colorbar(im, ax=ax)
        answer = f"p({trace.answer_label!r})" if trace.answer_label else "p(answer)"
        cb.set_label(answer, fontsize=8)
    save_figure(fig, path)
    return fig
