"""Feature dashboards as one self-contained HTML page per SAE (no network, no scripts).

Each feature gets a card: its firing rate and maximum activation, a histogram of its
nonzero activations (inline SVG), its top-activating contexts with every token shaded
by its activation and the maximum outlined, and the tokens its decoder direction
promotes and suppresses through the unembedding. Every number shown is also in a
``data-`` attribute, so tests (and users' scripts) can read the page back exactly.
"""

from __future__ import annotations

from typing import Sequence

from .html import escape, page

__all__ = ["sae_dashboard_html", "save_sae_dashboard"]

STYLE = """
.sae-card { border: 1px solid #d5d8dc; border-radius: 6px; padding: 0.6em 1em; margin: 1em 0; }
.sae-ctx { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.9em; margin: 0.15em 0; white-space: pre-wrap; }
.sae-tok { border-radius: 2px; }
.sae-max { outline: 2px solid #c0392b; }
.sae-cols { display: flex; gap: 2em; flex-wrap: wrap; }
.sae-logits td.val { text-align: right; font-variant-numeric: tabular-nums; }
.sae-hist rect { fill: #4a7bb7; }
"""


def _shade(act: float, max_act: float) -> str:
    a = 0.0 if max_act <= 0 else max(0.0, min(1.0, act / max_act))
    return f"background: rgba(230, 126, 34, {a:.3f})"


def _visible(tok: str) -> str:
    return tok.replace("\n", "\u21b5")


def _histogram_svg(counts: Sequence[int], edges: Sequence[float], width: int = 320, height: int = 90) -> str:
    top = max(max(counts), 1)
    n = len(counts)
    w = width / max(n, 1)
    bars = []
    for i, c in enumerate(counts):
        h = (height - 14) * c / top
        bars.append(
            f'<rect x="{i * w:.2f}" y="{height - 14 - h:.2f}" width="{max(w - 1, 0.5):.2f}" height="{h:.2f}" '
            f'data-count="{c}" data-lo="{edges[i]!r}" data-hi="{edges[i + 1]!r}"><title>[{edges[i]:.3g}, {edges[i + 1]:.3g}): {c}</title></rect>'
        )
    labels = (
        f'<text x="0" y="{height - 2}" font-size="10">{edges[0]:.3g}</text>'
        f'<text x="{width}" y="{height - 2}" font-size="10" text-anchor="end">{edges[-1]:.3g}</text>'
    )
    return f'<svg class="sae-hist" width="{width}" height="{height}" role="img" aria-label="activation histogram">{"".join(bars)}{labels}</svg>'


def _logit_table(rows, cls: str, heading: str) -> str:
    body = "".join(
        f'<tr data-token="{escape(t)}" data-value="{v!r}"><td><code>{escape(_visible(t))}</code></td><td class="val">{v:+.3f}</td></tr>'
        for t, v in rows
    )
    return f'<table class="ji-table sae-logits {cls}"><tr><th colspan="2">{escape(heading)}</th></tr>{body}</table>'


def _card(d) -> str:
    ctxs = []
    for c in d.top_contexts:
        toks = "".join(
            f'<span class="sae-tok{" sae-max" if j == c.highlight else ""}" data-act="{a!r}" style="{_shade(a, d.max_act)}" '
            f'title="{a:.4g}">{escape(_visible(t))}</span>'
            for j, (t, a) in enumerate(zip(c.tokens, c.acts))
        )
        ctxs.append(
            f'<div class="sae-ctx" data-context="{c.context}" data-pos="{c.pos}" data-max="{c.acts[c.highlight]!r}">'
            f"<b>{c.acts[c.highlight]:.3f}</b> {toks}</div>"
        )
    return (
        f'<section class="sae-card" id="feature-{d.feature}" data-feature="{d.feature}" data-firing-rate="{d.firing_rate!r}" '
        f'data-max-act="{d.max_act!r}">'
        f"<h2>Feature {d.feature}</h2>"
        f'<p class="ji-note">fires on {100 * d.firing_rate:.3f}% of tokens; max activation {d.max_act:.4g}</p>'
        f'<div class="sae-cols"><div><h3>Activation histogram (nonzero)</h3>{_histogram_svg(d.hist_counts, d.hist_edges)}</div>'
        f"<div>{_logit_table(d.promoted, 'sae-promoted', 'promoted logits')}</div>"
        f"<div>{_logit_table(d.suppressed, 'sae-suppressed', 'suppressed logits')}</div></div>"
        f"<h3>Top-activating contexts</h3>{''.join(ctxs) or '<p>never fires on these contexts</p>'}"
        "</section>"
    )


def sae_dashboard_html(dashboards: Sequence, title: str = "SAE feature dashboards", subtitle: str = "") -> str:
    """The page for a list of `jaxinterp.features.sae.FeatureDashboard`."""
    index = " ".join(f'<a href="#feature-{d.feature}">{d.feature}</a>' for d in dashboards)
    body = (
        f"<h1>{escape(title)}</h1>"
        + (f'<p class="ji-note">{escape(subtitle)}</p>' if subtitle else "")
        + f"<p>Features: {index}</p>"
        + "".join(_card(d) for d in dashboards)
    )
    return page(title, body, STYLE)


def save_sae_dashboard(
    dashboards: Sequence, path: str, title: str = "SAE feature dashboards", subtitle: str = ""
) -> str:
    """Write `sae_dashboard_html` to ``path``; returns the path."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(sae_dashboard_html(dashboards, title, subtitle))
    return path
