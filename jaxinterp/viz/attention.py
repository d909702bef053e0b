"""Attention patterns per head: a static PNG grid and an interactive HTML view.

Both take ``pattern [head, query_pos, key_pos]`` (one layer's ``attn.pattern`` cache
entry, or heads gathered from several layers with ``head_labels`` such as ``"L5H1"``)
and the token strings.
"""

from __future__ import annotations

import itertools
import math
from typing import Optional, Sequence

import numpy as np
from jaxtyping import Float
from matplotlib.figure import Figure

from .figures import new_figure, save_figure
from .html import escape, json_for_script, page
from .labels import token_labels, visible_token


def _check(pattern, tokens, head_labels):
    pattern = np.asarray(pattern, dtype=np.float32)
    if pattern.ndim != 3 or pattern.shape[1] != pattern.shape[2]:
        raise ValueError(
            f"pattern must be [head, query_pos, key_pos] with query_pos == key_pos, got shape {pattern.shape}"
        )
    if len(tokens) != pattern.shape[1]:
        raise ValueError(f"{len(tokens)} tokens for a pattern over {pattern.shape[1]} positions")
    if head_labels is None:
        head_labels = [f"head {h}" for h in range(pattern.shape[0])]
    if len(head_labels) != pattern.shape[0]:
        raise ValueError(f"{len(head_labels)} head labels for {pattern.shape[0]} heads")
    return pattern, [str(t) for t in tokens], [str(h) for h in head_labels]


def attention_patterns(
    pattern: Float[np.ndarray, "head query_pos key_pos"],
    tokens: Sequence[str],
    head_labels: Optional[Sequence[str]] = None,
    path: Optional[str] = None,
    title: Optional[str] = None,
    max_cols: int = 4,
) -> Figure:
    """A grid of per-head heatmaps (rows: query position, columns: key position, colour:
    attention weight 0..1) with token labels. Saves a PNG to ``path`` if given."""
    pattern, tokens, head_labels = _check(pattern, tokens, head_labels)
    n_heads, n_pos = pattern.shape[0], pattern.shape[1]
    cols = min(max_cols, n_heads)
    rows = math.ceil(n_heads / cols)
    cell = 0.9 + 0.2 * n_pos
    fig = new_figure(cols * cell + 0.8, rows * cell + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).reshape(-1)
    labels = token_labels(tokens)
    for h, ax in itertools.zip_longest(range(n_heads), axes):
        if h is None:
            ax.set_axis_off()
            continue
        im = ax.imshow(pattern[h], cmap="Blues", vmin=0.0, vmax=1.0, aspect="equal")
        ax.set_title(head_labels[h], fontsize=9)
        ax.set_xticks(range(n_pos), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(n_pos), labels, fontsize=6)
        ax.set_xlabel("key position", fontsize=7)
        ax.set_ylabel("query position", fontsize=7)
    fig.colorbar(im, ax=axes.tolist(), shrink=0.6, label="attention weight")
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
    return fig


# The viewer: vanilla JS, no dependencies. It renders every `.ji-attn` block on the page
# once (idempotent, so several widgets may each carry this script). `#ji-head=H&ji-query=Q`
# in the URL picks the initial head and query token: handy for links and for testing.
_SCRIPT = r"""
(function () {
  function colour(a) {  // white -> blue, as matplotlib's "Blues"
    var r = Math.round(247 - 239 * a), g = Math.round(251 - 203 * a), b = Math.round(255 - 148 * a);
    return "rgb(" + r + "," + g + "," + b + ")";
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function fromHash(key, n) {
    var m = new RegExp("[#&]" + key + "=(\\d+)").exec(location.hash || "");
    var v = m ? parseInt(m[1], 10) : null;
    return v !== null && v < n ? v : null;
  }
  function setup(root) {
    if (root.getAttribute("data-ready")) return;
    var data = JSON.parse(root.querySelector("script.ji-attn-data").textContent);
    var nHeads = data.pattern.length, nPos = data.tokens.length;
    var state = { head: fromHash("ji-head", nHeads) || 0, query: fromHash("ji-query", nPos) };
    if (state.query === null) state.query = nPos - 1;
    var bar = root.querySelector(".ji-attn-heads"), grid = root.querySelector(".ji-attn-grid");
    var toks = root.querySelector(".ji-attn-tokens"), info = root.querySelector(".ji-attn-info");
    data.heads.forEach(function (label, h) {
      var b = el("button", "ji-head", label);
      b.setAttribute("data-head", h);
      b.addEventListener("click", function () { state.head = h; render(); });
      bar.appendChild(b);
    });
    function render() {
      var P = data.pattern[state.head];
      bar.querySelectorAll("button.ji-head").forEach(function (b) {
        b.classList.toggle("ji-selected", +b.getAttribute("data-head") === state.head);
      });
      grid.innerHTML = "";
      var table = el("table", "ji-attn-table"), head = el("tr");
      head.appendChild(el("th", "ji-corner", "query \\ key"));
      data.tokens.forEach(function (t, k) { head.appendChild(el("th", "ji-key", t)); });
      table.appendChild(head);
      P.forEach(function (row, q) {
        var tr = el("tr");
        var th = el("th", "ji-query", data.tokens[q]);
        th.addEventListener("mouseenter", function () { state.query = q; render(); });
        tr.appendChild(th);
        row.forEach(function (a, k) {
          var td = el("td", "ji-cell");
          td.style.background = colour(a);
          td.setAttribute("data-q", q); td.setAttribute("data-k", k);
          td.title = data.tokens[q] + " \u2192 " + data.tokens[k] + ": " + a.toFixed(3);
          if (q === state.query) td.classList.add("ji-row-selected");
          td.addEventListener("mouseenter", function () { state.query = q; renderTokens(); });
          tr.appendChild(td);
        });
        table.appendChild(tr);
      });
      grid.appendChild(table);
      renderTokens();
    }
    function renderTokens() {
      var row = data.pattern[state.head][state.query];
      toks.innerHTML = "";
      data.tokens.forEach(function (t, k) {
        var s = el("span", "ji-token", t);
        s.style.background = colour(row[k]);
        if (row[k] > 0.6) s.style.color = "#fff";
        s.setAttribute("data-k", k);
        s.title = row[k].toFixed(3);
        if (k === state.query) s.classList.add("ji-query-token");
        s.addEventListener("mouseenter", function () { state.query = k; renderTokens(); });
        toks.appendChild(s);
      });
      info.textContent = data.heads[state.head] + ": attention from \u201c" + data.tokens[state.query] + "\u201d (position " + state.query + ")";
      root.setAttribute("data-head", state.head);
      root.setAttribute("data-query", state.query);
    }
    render();
    root.setAttribute("data-ready", "1");
  }
  document.querySelectorAll(".ji-attn").forEach(setup);
})();
"""

_STYLE = """
.ji-attn { margin: 1em 0; }
.ji-attn button.ji-head { margin: 0 0.25em 0.3em 0; padding: 0.15em 0.6em; border: 1px solid #9aa5b1;
  background: #fff; border-radius: 3px; cursor: pointer; font: inherit; font-size: 0.85em; }
.ji-attn button.ji-selected { background: #1f5fa8; color: #fff; border-color: #1f5fa8; }
.ji-attn-table { border-collapse: collapse; font-size: 12px; }
.ji-attn-table td.ji-cell { width: 22px; height: 22px; border: 1px solid #fff; padding: 0; }
.ji-attn-table td.ji-row-selected { outline: 1px solid #e8590c; }
.ji-attn-table th { font-weight: normal; white-space: pre; padding: 0 3px; }
.ji-attn-table th.ji-key { writing-mode: vertical-rl; transform: rotate(180deg); text-align: left; }
.ji-attn-table th.ji-query { text-align: right; cursor: pointer; }
.ji-attn-tokens { margin-top: 0.6em; line-height: 2; }
.ji-token { white-space: pre; padding: 2px 1px; margin: 0 1px; border: 1px solid #e3e5e8; }
.ji-token.ji-query-token { border-color: #e8590c; }
.ji-attn-info { color: #555; font-size: 0.9em; }
"""


def attention_widget(
    pattern: Float[np.ndarray, "head query_pos key_pos"],
    tokens: Sequence[str],
    head_labels: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    decimals: int = 4,
) -> str:
    """An HTML fragment (``<div class="ji-attn">`` with inline style and script): buttons
    choose a head, a query-by-key heatmap shows its pattern, and hovering a query row or
    token colours the tokens by how much that query attends to them.

    The pattern travels as JSON inside the fragment (rounded to ``decimals``); nothing is
    fetched from the network. Embed it in a page (`jaxinterp.viz.report.Report.html`) or use
    `attention_html` for a standalone page.
    """
    pattern, tokens, head_labels = _check(pattern, tokens, head_labels)
    data = {
        "tokens": [visible_token(t) for t in tokens],
        "heads": head_labels,
        "pattern": np.round(pattern.astype(np.float64), decimals).tolist(),
    }
    heading = f"<h3>{escape(title)}</h3>\n" if title else ""
    return (
        f'<div class="ji-attn">\n{heading}<style>{_STYLE}</style>\n'
        f'<script type="application/json" class="ji-attn-data">{json_for_script(data)}</script>\n'
        '<div class="ji-attn-heads"></div>\n<div class="ji-attn-info"></div>\n'
        '<div class="ji-attn-grid"></div>\n<div class="ji-attn-tokens"></div>\n'
        f"<script>{_SCRIPT}</script>\n</div>"
    )


def attention_html(
    pattern: Float[np.ndarray, "head query_pos key_pos"],
    tokens: Sequence[str],
    head_labels: Optional[Sequence[str]] = None,
    title: str = "Attention patterns",
    path: Optional[str] = None,
) -> str:
    """A standalone, self-contained HTML page with `attention_widget`; written to ``path``
    if given. Returns the HTML."""
    body = f"<h1>{escape(title)}</h1>\n" + attention_widget(pattern, tokens, head_labels)
    doc = page(title, body)
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write(doc)
    return doc
