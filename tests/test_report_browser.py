"""The HTML report and the attention page in a real browser (headless Chromium).

Chromium comes from Debian's packages; `make test` installs it when it is missing. Each
page is loaded from a file URL with networking disabled, its DOM is dumped *after* its
scripts ran, and a screenshot is taken. The tests check that the scripts built the
expected elements from the embedded data (the right head, the right attention weights
as cell colours) and that the screenshots show the rendered heatmaps, not a blank page.

Set ``JAXINTERP_SCREENSHOTS=<dir>`` to keep the screenshots.
"""

from __future__ import annotations

import html.parser
import os
import re
import shutil
import subprocess

import jax
import numpy as np
import pytest

from jaxinterp import ModelConfig, Transformer, viz
from jaxinterp.core.labelled import LabelledArray
from jaxinterp.viz.report import Report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


@pytest.fixture(scope="module")
def chromium():
    path = os.environ.get("CHROMIUM") or next((p for p in map(shutil.which, BROWSERS) if p), None)
    if path is None:
        pytest.fail(
            "Chromium not found (looked for $CHROMIUM and " + ", ".join(BROWSERS) + "). `make test` installs it "
            "(apt-get install chromium); install it by hand the same way to run this test alone."
        )
    return path


def run_browser(chromium, tmp_path, url, *args):
    profile = tmp_path / f"profile-{len(os.listdir(tmp_path))}"
    cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", *args, url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
    return done.stdout


def dump_dom(chromium, tmp_path, path, fragment=""):
    """The document after its scripts ran (``--dump-dom`` waits for the load event)."""
    return run_browser(chromium, tmp_path, f"file://{path}{fragment}", "--dump-dom", "--virtual-time-budget=5000")


def screenshot(chromium, tmp_path, path, name, size=(1100, 1400), fragment=""):
    from PIL import Image

    out = tmp_path / name
    run_browser(
        chromium,
        tmp_path,
        f"file://{path}{fragment}",
        f"--screenshot={out}",
        f"--window-size={size[0]},{size[1]}",
        "--virtual-time-budget=5000",
    )
    keep = os.environ.get("JAXINTERP_SCREENSHOTS")
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(out, os.path.join(keep, name))
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert img.shape[:2] == (size[1], size[0])
    return img


class DOM(html.parser.HTMLParser):
    """Start tags with attributes, and the text inside each tag (flattened)."""

    def __init__(self, text):
        super().__init__()
        self.elements, self.stack = [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        el = {"tag": tag, "attrs": dict(attrs), "text": ""}
        self.elements.append(el)
        if tag not in ("br", "img", "meta", "input", "link"):
            self.stack.append(el)

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()["tag"] == tag:
                break

    def handle_data(self, data):
        for el in self.stack:
            el["text"] += data

    def select(self, tag, cls=None, **attrs):
        out = []
        for el in self.elements:
            a = el["attrs"]
            if el["tag"] != tag or (cls and cls not in (a.get("class") or "").split()):
                continue
            if all(a.get(k.replace("_", "-")) == v for k, v in attrs.items()):
                out.append(el)
        return out


def blue_level(css_colour):
    """The attention weight the viewer encoded as ``rgb(247 - 239 a, ...)``."""
    r, g, b = (int(x) for x in re.match(r"rgb\((\d+), ?(\d+), ?(\d+)\)", css_colour).groups())
    return (247 - r) / 239


@pytest.fixture(scope="module")
def tiny_run():
    """A small random model's attention patterns on a prompt, from the real forward pass."""
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=4, d_head=8, d_mlp=64, d_vocab=50, n_ctx=32)
    model = Transformer.init(cfg, jax.random.key(0), std=0.5)  # large weights: peaked attention
    tokens = np.array([3, 17, 5, 9, 17, 5, 22, 8], np.int32)
    _, cache = model.run_with_cache(tokens, names=["attn.pattern"])
    str_tokens = ["<bos>", " When", " Mary", " and", " When", " Mary", " <b>", " to"]
    return np.asarray(cache["attn.pattern"]), str_tokens


def test_attention_page_renders_the_chosen_head(chromium, tmp_path, tiny_run):
    patterns, str_tokens = tiny_run
    pattern = patterns[1]  # layer 1: [head, q, k]
    labels = [f"L1H{h}" for h in range(4)]
    page = tmp_path / "attention.html"
    viz.attention_html(pattern, str_tokens, labels, title="Attention test", path=str(page))

    # The URL fragment picks head 2 and query 5, as a click and a hover would.
    dom = DOM(dump_dom(chromium, tmp_path, page, "#ji-head=2&ji-query=5"))
    (root,) = dom.select("div", "ji-attn")
    assert root["attrs"]["data-ready"] == "1", "the viewer's script did not finish"
    assert (root["attrs"]["data-head"], root["attrs"]["data-query"]) == ("2", "5")
    buttons = dom.select("button", "ji-head")
    assert [b["text"] for b in buttons] == labels
    assert [b["attrs"]["data-head"] for b in dom.select("button", "ji-selected")] == ["2"]

    cells = dom.select("td", "ji-cell")
    assert len(cells) == len(str_tokens) ** 2
    shown = np.zeros((len(str_tokens), len(str_tokens)))
    for c in cells:
        colour = re.search(r"background:\s*(rgb\([^)]*\))", c["attrs"]["style"]).group(1)
        shown[int(c["attrs"]["data-q"]), int(c["attrs"]["data-k"])] = blue_level(colour)
    np.testing.assert_allclose(shown, pattern[2], atol=1 / 239 + 1e-3)  # head 2's weights, not another head's
    assert not np.allclose(pattern[2], pattern[0], atol=0.05)

    spans = dom.select("span", "ji-token")
    assert [s["text"] for s in spans] == str_tokens  # the escaped "<b>" token shows as text
    row = [blue_level(re.search(r"background:\s*(rgb\([^)]*\))", s["attrs"]["style"]).group(1)) for s in spans]
    np.testing.assert_allclose(row, pattern[2, 5], atol=1 / 239 + 1e-3)
    assert [s["attrs"]["data-k"] for s in dom.select("span", "ji-query-token")] == ["5"]

    img = screenshot(chromium, tmp_path, page, "attention_page.png", size=(900, 700), fragment="#ji-head=2&ji-query=5")
    assert img.std() > 10, "blank screenshot"
    heat = (img[..., 2] - img[..., 0] > 60) & (img[..., 0] < 200)  # the viewer's blues
    selected_button = (abs(img[..., 0] - 0x1F) < 12) & (abs(img[..., 1] - 0x5F) < 12) & (abs(img[..., 2] - 0xA8) < 12)
    assert heat.sum() > 500, "no attention heatmap in the screenshot"
    assert selected_button.sum() > 200, "the selected head's button is not drawn"


def test_report_renders_all_sections_figures_and_widgets(chromium, tmp_path, tiny_run):
    patterns, str_tokens = tiny_run
    rng = np.random.default_rng(0)
    sweep = LabelledArray(
        rng.normal(size=(2, len(str_tokens))), ("layer", "pos"), {"pos": viz.token_labels(str_tokens)}, "sweep"
    )
    sweep.values[1, 6] = 3.0
    sweep.values[0, 2] = -3.0
    report = Report("Browser test report", "made by test_report_browser")
    report.section("Patching", "A heatmap.")
    report.figure(viz.patching_heatmap(sweep), caption="resid_pre")
    report.section("Attention")
    report.html(viz.attention_widget(patterns[0], str_tokens, [f"L0H{h}" for h in range(4)]))
    report.section("Logit lens")
    report.html(
        viz.logit_lens_html(
            [str_tokens, str_tokens], rng.uniform(size=(2, len(str_tokens))), ["layer 0", "layer 1"], str_tokens
        )
    )
    report.table([("a", "1")], ["k", "v"])
    path = report.save(str(tmp_path / "report.html"))

    dom = DOM(dump_dom(chromium, tmp_path, path))
    assert [h["text"] for h in dom.select("h2")] == ["Patching", "Attention", "Logit lens"]
    assert [a["attrs"]["href"] for a in dom.select("a")] == ["#patching", "#attention", "#logit-lens"]
    (img,) = dom.select("img")
    assert img["attrs"]["src"].startswith("data:image/png;base64,")
    (widget,) = dom.select("div", "ji-attn")
    assert widget["attrs"]["data-ready"] == "1" and widget["attrs"]["data-head"] == "0"
    assert len(dom.select("td", "ji-cell")) == len(str_tokens) ** 2
    (lens,) = dom.select("table", "ji-lens")
    assert len(dom.select("td")) >= 2 * len(str_tokens)

    shot = screenshot(chromium, tmp_path, path, "report.png", size=(1100, 1600))
    assert shot.std() > 10, "blank screenshot"
    red = shot[..., 0] - shot[..., 2] > 80  # the heatmap's strongly negative cell (RdBu)
    blue = shot[..., 2] - shot[..., 0] > 80  # its strongly positive cell and the attention cells
    assert red.sum() > 300 and blue.sum() > 300, "the inlined heatmap did not render"
