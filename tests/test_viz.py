"""Visualisation and the HTML report: what is drawn is the data given, labelled as given.

Figures are checked through matplotlib's artists (image arrays, tick labels, line data),
HTML through its embedded data and the standard-library parser. The rendering in a real
browser is tested in test_report_browser.py.
"""

from __future__ import annotations

import base64
import html.parser
import io
import json
import re

import numpy as np
import pytest

from jaxinterp import viz
from jaxinterp.core.labelled import LabelledArray
from jaxinterp.viz.report import Report, external_resources


def random_pattern(rng, n_heads, n_pos):
    """Causal attention patterns: rows sum to one over keys <= query."""
    logits = rng.normal(size=(n_heads, n_pos, n_pos))
    logits = np.where(np.tril(np.ones((n_pos, n_pos), bool)), logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


class Elements(html.parser.HTMLParser):
    """Every start tag as (tag, attrs dict), and the text, of an HTML document."""

    def __init__(self, text):
        super().__init__()
        self.tags, self.text = [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def find(self, tag, cls=None):
        return [a for t, a in self.tags if t == tag and (cls is None or cls in (a.get("class") or "").split())]


def tick_texts(axis_ticks):
    return [t.get_text() for t in axis_ticks]


# ------------------------------------------------------------------------ heatmaps


def test_patching_heatmap_draws_the_values_with_token_labels():
    rng = np.random.default_rng(0)
    vals = rng.normal(size=(3, 5))
    vals[1, 3] = -4.0  # the largest |value|: outlined
    tokens = ["<bos>", " When", " Mary", " and", " John"]
    result = LabelledArray(vals, ("layer", "pos"), {"pos": viz.token_labels(tokens)}, "sweep")
    fig = viz.patching_heatmap(result, title="t")
    ax = fig.axes[0]
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), vals)
    assert tick_texts(ax.get_xticklabels()) == ["0: <bos>", "1:  When", "2:  Mary", "3:  and", "4:  John"]
    assert tick_texts(ax.get_yticklabels()) == ["0", "1", "2"]
    assert ax.get_xlabel() == "pos" and ax.get_ylabel() == "layer"
    assert ax.images[0].get_clim() == (-4.0, 4.0)  # diverging, centred on zero
    box = ax.patches[-1]
    assert (box.get_x() + 0.5, box.get_y() + 0.5) == (3, 1)
    shown = {t.get_text() for t in ax.texts}
    assert {f"{v:.2f}" for v in vals.ravel()} <= shown


def test_patching_heatmap_rejects_what_it_cannot_draw():
    with pytest.raises(TypeError, match="LabelledArray"):
        viz.patching_heatmap(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="1-D or 2-D"):
        viz.patching_heatmap(LabelledArray(np.zeros((2, 2, 2)), ("a", "b", "c")))


def test_score_heatmaps_share_one_scale(tmp_path):
    a = LabelledArray(np.array([[0.1, 0.9], [0.3, 0.2]]), ("layer", "head"))
    b = LabelledArray(np.array([[0.5, 0.0], [0.4, 0.6]]), ("layer", "head"))
    fig = viz.score_heatmaps({"prev": a, "ind": b}, path=str(tmp_path / "s.png"))
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["prev", "ind"]
    for ax, want in zip(panels, (a, b)):
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), want.values)
        assert ax.images[0].get_clim() == (0.0, 0.9)
    assert (tmp_path / "s.png").read_bytes().startswith(b"\x89PNG")


# ------------------------------------------------------------------------ attention


def test_attention_png_has_one_panel_per_head_with_its_pattern(tmp_path):
    rng = np.random.default_rng(1)
    pattern = random_pattern(rng, 3, 6)
    tokens = ["a", "b", "\n", "d", "e", "f"]
    fig = viz.attention_patterns(pattern, tokens, ["L0H0", "L2H1", "L5H3"], path=str(tmp_path / "a.png"), max_cols=2)
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["L0H0", "L2H1", "L5H3"]
    for h, ax in enumerate(panels):
        np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), pattern[h], rtol=1e-6)
        assert tick_texts(ax.get_xticklabels())[2] == "2: \\n"  # control characters spelled out
    assert (tmp_path / "a.png").stat().st_size > 1000


def test_attention_widget_carries_the_pattern_and_escapes_tokens():
    rng = np.random.default_rng(2)
    pattern = random_pattern(rng, 2, 4)
    tokens = ["<b>", "</script>", "&amp", ' "q"']
    frag = viz.attention_widget(pattern, tokens, ["h0", "h1"])
    # The token strings never appear raw: no element or script is injected.
    assert "<b>" not in frag and "</script><" not in frag.replace("</script>\n</div>", "")
    blob = re.search(r'<script type="application/json" class="ji-attn-data">(.*?)</script>', frag, re.S).group(1)
    data = json.loads(blob)
    assert data["tokens"] == tokens and data["heads"] == ["h0", "h1"]
    np.testing.assert_allclose(np.asarray(data["pattern"]), pattern, atol=5e-5)
    assert external_resources(frag) == []


def test_attention_inputs_are_checked():
    with pytest.raises(ValueError, match=r"\[head, query_pos, key_pos\]"):
        viz.attention_widget(np.zeros((4, 4)), list("abcd"))
    with pytest.raises(ValueError, match="3 tokens for a pattern over 4 positions"):
        viz.attention_patterns(np.zeros((1, 4, 4)), list("abc"))
    with pytest.raises(ValueError, match="1 head labels for 2 heads"):
        viz.attention_html(np.zeros((2, 4, 4)), list("abcd"), ["x"])


# ---------------------------------------------------------------------- logit lens


def test_logit_lens_table_and_html_show_each_top_token():
    top = [["the", " Mary", "\n"], [" John", " Mary", " to"]]
    probs = np.array([[0.1, 0.5, 0.2], [0.3, 0.9, 0.05]])
    fig = viz.logit_lens_table(top, probs, ["layer 0", "layer 1"], ["When", " Mary", " to"])
    ax = fig.axes[0]
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), probs)
    assert [t.get_text() for t in ax.texts] == ["the", " Mary", "\\n", " John", " Mary", " to"]
    assert tick_texts(ax.get_yticklabels()) == ["layer 0", "layer 1"]

    doc = Elements(viz.logit_lens_html(top, probs, ["layer 0", "layer 1"], ["When", " Mary", " to"]))
    cells = doc.find("td")
    assert len(cells) == 6
    assert [c["title"] for c in cells] == [f"probability {p:.3f}" for p in probs.ravel()]
    with pytest.raises(ValueError, match="top_tokens is 2x3 but values has shape"):
        viz.logit_lens_table(top, probs[:, :2])


# ----------------------------------------------------------------------------- TMS


def test_tms_geometry_draws_each_feature_direction():
    angles = 2 * np.pi * np.arange(5) / 5  # a pentagon: 5 features in 2 dimensions
    W = np.stack([np.cos(angles), np.sin(angles)], 1) * np.array([[1.0], [0.9], [0.8], [0.7], [0.6]])
    fig = viz.tms_geometry(W, importance=[1.0, 0.7, 0.5, 0.3, 0.1])
    ax = fig.axes[0]
    lines = [ln for ln in ax.lines if (ln.get_gid() or "").startswith("feature")]
    assert [ln.get_gid() for ln in lines] == [f"feature {i}" for i in range(5)]
    assert all(tuple(ln.get_xydata()[0]) == (0.0, 0.0) for ln in lines)
    ends = np.array([[ln.get_xdata()[1], ln.get_ydata()[1]] for ln in lines])
    np.testing.assert_allclose(ends, W)
    assert ax.get_aspect() == 1.0
    assert [t.get_text() for t in ax.texts] == ["0", "1", "2", "3", "4"]
    with pytest.raises(ValueError, match=r"\[n_features, 2\]"):
        viz.tms_geometry(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="4 importances for 5 features"):
        viz.tms_geometry(W, importance=[1, 1, 1, 1])


def test_compare_scatter_reports_the_pearson_correlation():
    rng = np.random.default_rng(3)
    x = rng.normal(size=40)
    y = 0.5 * x + rng.normal(size=40)
    fig = viz.compare_scatter(x, y)
    r = float(re.search(r"r = (-?[0-9.]+)", fig.axes[0].get_title()).group(1))
    xc, yc = x - x.mean(), y - y.mean()
    assert r == pytest.approx((xc @ yc) / np.sqrt((xc @ xc) * (yc @ yc)), abs=1e-3)
    np.testing.assert_array_equal(fig.axes[0].collections[0].get_offsets(), np.stack([x, y], 1))


# ---------------------------------------------------------------------------- report


def test_report_is_one_self_contained_file(tmp_path):
    fig = viz.patching_heatmap(LabelledArray(np.eye(3), ("layer", "pos")))
    png = viz.figure_png(fig)
    report = Report("A <title>", "sub")
    report.section("First part", "text with `code` & <tags>")
    report.figure(png, caption="cap")
    report.table([(1, "<x>")], ["n", "s"])
    report.section("First part")  # same heading: a distinct anchor
    report.html(viz.attention_widget(np.ones((1, 2, 2)) / 2, ["a", "b"]))
    path = report.save(str(tmp_path / "sub" / "r.html"))
    text = open(path, encoding="utf-8").read()
    doc = Elements(text)
    assert [a["id"] for a in doc.find("section")] == ["first-part", "first-part-2"]
    assert [a["href"] for a in doc.find("a")] == ["#first-part", "#first-part-2"]
    (img,) = doc.find("img")
    assert base64.b64decode(img["src"].split(",", 1)[1]) == png  # the figure itself, inlined
    assert "<tags>" not in text and "&lt;tags&gt;" in text and "<code>code</code>" in text
    assert "<x>" not in text
    assert external_resources(text) == []


def test_report_refuses_network_resources():
    assert external_resources('<img src="https://x.org/a.png"><script src="//cdn.x/y.js"></script>') == [
        "https://x.org/a.png",
        "//cdn.x/y.js",
    ]
    assert external_resources('<style>@import url("https://f.x/c.css");</style>') == ["https://f.x/c.css"]
    report = Report("r")
    report.html('<script src="https://cdn.example.com/d3.js"></script>')
    with pytest.raises(ValueError, match="would load from the network"):
        report.to_html()
    with pytest.raises(TypeError, match="Figure, PNG bytes or a PNG path"):
        Report("r").figure(12)
    with pytest.raises(ValueError, match="PNG bytes"):
        viz.png_data_uri(b"GIF89a")


def test_figure_png_is_a_decodable_image():
    from PIL import Image

    fig = viz.tms_geometry(np.array([[1.0, 0.0], [0.0, 1.0]]))
    img = Image.open(io.BytesIO(viz.figure_png(fig, dpi=50)))
    w, h = fig.get_size_inches() * 50
    assert img.size == (round(w), round(h))
