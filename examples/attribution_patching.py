"""Attribution patching vs exact activation patching on SmolLM2-135M, IOI prompt pair.

    .venv/bin/python examples/attribution_patching.py [path/to/model.gguf | hf_dir]

Clean: "When Mary and John went to the store, John gave a drink to" (answer " Mary");
corrupted: the same with Mary as the second subject. Metric: logit(" Mary") -
logit(" John") at the last position. For head outputs (``attn.z`` by layer x head)
and the residual stream / attention / MLP outputs (by layer x position) it prints the
Pearson r between attribution patching (one backward pass), its integrated-gradients
variant, and exact activation patching (one patched forward per location), the cost
of attribution in forward passes, and the top edges of edge attribution patching.

Writes ``out/attribution_patching_heads.png`` (exact vs attribution, layer x head) and
``out/attribution_patching_scatter.png``. Takes a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import os
import sys
import time

import jax
import numpy as np

import jaxinterp
from jaxinterp.causal.attribution import attribution_cost, attribution_patch, edge_attribution_patch
from jaxinterp.causal.patching import activation_patch
from jaxinterp.core.metrics import logit_diff
from jaxinterp.loading.bundled import smollm2_path
from jaxinterp.loading.tokenizer import load_tokenizer
from jaxinterp.viz.compare import compare_scatter
from jaxinterp.viz.figures import new_figure, save_figure
from jaxinterp.viz.heatmap import patching_heatmap

QUICK = os.environ.get("JAXINTERP_QUICK") == "1"  # CI: the first 4 layers, small budgets

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
SITES = {
    "attn.z": ("layer", "head"),
    "resid_pre": ("layer", "pos"),
    "attn_out": ("layer", "pos"),
    "mlp_out": ("layer", "pos"),
}


def pearson(a, b) -> float:
    return float(np.corrcoef(np.asarray(a).ravel(), np.asarray(b).ravel())[0, 1])


def main(path: str) -> None:
    model, tok = jaxinterp.load(path, n_layers=4 if QUICK else None), load_tokenizer(path)
    clean, corrupt = tok.to_tokens(CLEAN), tok.to_tokens(CORRUPT)
    str_tokens = tok.to_str_tokens(clean)
    metric = logit_diff(tok.to_single_token(" Mary"), tok.to_single_token(" John"))
    base = float(metric(model(corrupt)))
    print(f"logit diff: clean {float(metric(model(clean))):.3f}, corrupted {base:.3f}")

    t = time.perf_counter()
    attr = attribution_patch(model, clean, corrupt, metric, sites=tuple(SITES), pos_labels=str_tokens)
    print(f"attribution patching, {len(SITES)} sites: {time.perf_counter() - t:.1f} s (compile included)")
    t = time.perf_counter()
    ig = attribution_patch(model, clean, corrupt, metric, sites=tuple(SITES), method="ig", n_steps=8)
    print(f"integrated gradients (8 steps): {time.perf_counter() - t:.1f} s (compile included)")

    exact = {}
    for site, over in SITES.items():
        t = time.perf_counter()
        # Exact patching returns metric(patched); attribution estimates the change.
        exact[site] = np.asarray(activation_patch(model, clean, corrupt, metric, site, over)) - base
        print(f"exact activation patching {site} {over}: {time.perf_counter() - t:.1f} s")

    print("\nPearson r with exact activation patching (clean -> corrupted):")
    print(f"  {'site':10s} {'shape':>9s} {'AP':>7s} {'AP-IG':>7s}")
    for site in SITES:
        print(
            f"  {site:10s} {str(exact[site].shape):>9s} {pearson(attr[site], exact[site]):7.3f} {pearson(ig[site], exact[site]):7.3f}"
        )
    for site in ("resid_pre", "mlp_out"):
        print(f"  {site} without layer 0: AP r = {pearson(np.asarray(attr[site])[1:], exact[site][1:]):.3f}")
    z = exact["attn.z"]
    top = np.argsort(-np.abs(z), axis=None)[:8]
    print("\nlargest heads (exact | attribution):")
    for i in top:
        l, h = np.unravel_index(i, z.shape)
        print(f"  L{l}H{h}: {z[l, h]:+.3f} | {np.asarray(attr['attn.z'])[l, h]:+.3f}")

    cost = attribution_cost(model, clean, corrupt, metric, sites=tuple(SITES))
    cost_all = attribution_cost(model, clean, corrupt, metric, sites="all")
    print(
        f"\ncost (matmul FLOPs): one forward {cost['forward'] / 1e9:.2f} GFLOP; attribution of {len(SITES)} sites "
        f"{cost['forward_passes']:.2f} forward passes; of every site "
        f"{cost_all['forward_passes']:.2f}"
    )

    t = time.perf_counter()
    eap = edge_attribution_patch(model, clean, corrupt, metric)
    print(f"\nedge attribution patching: {eap.n_edges} edges in {time.perf_counter() - t:.1f} s; top 10:")
    for e in eap.top_edges(10):
        print(f"  {e.upstream:>8s} -> {e.downstream:<10s} {e.score:+.3f}")

    os.makedirs("out", exist_ok=True)
    fig = new_figure(12, 7)
    axes = fig.subplots(1, 2)
    patching_heatmap(
        jaxinterp.core.labelled.LabelledArray(z, ("layer", "head")),
        title="exact: patch head (clean->corrupted)",
        ax=axes[0],
        annotate=False,
    )
    patching_heatmap(attr["attn.z"], title="attribution patching", ax=axes[1], annotate=False)
    save_figure(fig, "out/attribution_patching_heads.png")
    compare_scatter(z, attr["attn.z"], title="SmolLM2 IOI heads", path="out/attribution_patching_scatter.png")
    print("wrote out/attribution_patching_heads.png, out/attribution_patching_scatter.png")


if __name__ == "__main__":
    jaxinterp.enable_compilation_cache()  # a second run loads its compiled programs from disk
    jax.config.update("jax_default_matmul_precision", "highest")
    main(sys.argv[1] if len(sys.argv) > 1 else smollm2_path())
