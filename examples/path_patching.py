"""Path patching and circuit hypotheses on SmolLM2-135M, IOI.

    .venv/bin/python examples/path_patching.py [path/to/model.gguf | hf_dir]

Base: "When Mary and John went to the store, John gave a drink to" (answer " Mary");
source: the same with Mary as the second subject. Metric: logit(" Mary") - logit(" John").

1. Path patching from every head to the logits (everything else frozen): the heads that
   write the answer directly (IOI's name movers), in one compiled sweep.
2. Path patching from every head to the queries of the top 3 of those heads at the last
   position: the heads that tell them where to look (IOI's S-inhibition heads).
3. Circuit hypotheses from edge attribution (the nodes of the top-k edges) scored by
   their averaged unexplained effect (KL to the model, Goldowsky-Dill et al.) on IOI
   prompts with other names, against every node, no node, and random node sets.

Writes ``out/path_patching.png``. Takes a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxinterp
from jaxinterp.causal.attribution import edge_attribution_patch
from jaxinterp.causal.path_patching import evaluate_hypothesis, path_patch_sweep
from jaxinterp.core.labelled import LabelledArray
from jaxinterp.core.metrics import logit_diff
from jaxinterp.loading.bundled import smollm2_path
from jaxinterp.loading.tokenizer import load_tokenizer
from jaxinterp.viz.figures import new_figure, save_figure
from jaxinterp.viz.heatmap import patching_heatmap

QUICK = os.environ.get("JAXINTERP_QUICK") == "1"  # CI: the first 4 layers, small budgets

TEMPLATE = "When {} and {} went to the store, {} gave a drink to"
NAMES = [" Mary", " John", " Tom", " James", " Anna", " Sarah", " David", " Emma", " Paul", " Lucy", " Mark", " Kate"]


def top_heads(result, k, sign=1.0):
    vals = sign * np.asarray(result)
    idx = np.argsort(-vals, axis=None)[:k]
    return [tuple(int(i) for i in np.unravel_index(i, vals.shape)) for i in idx]


def ioi_pairs(tok, n: int, seed: int = 0):
    """Reference prompts (A, B, B) and counterfactuals (C, D, E): other names throughout."""
    rng = np.random.default_rng(seed)
    for name in NAMES:
        tok.to_single_token(name)  # every name one token, so every prompt has one length
    refs, cfs = [], []
    for _ in range(n):
        a, b, c, d, e = rng.choice(NAMES, 5, replace=False)
        refs.append(tok.to_tokens(TEMPLATE.format(a.strip(), b.strip(), b.strip())))
        cfs.append(tok.to_tokens(TEMPLATE.format(c.strip(), d.strip(), e.strip())))
    return jnp.stack(refs), jnp.stack(cfs)


def main(path: str) -> None:
    model, tok = jaxinterp.load(path, n_layers=4 if QUICK else None), load_tokenizer(path)
    cfg = model.cfg
    base = tok.to_tokens(TEMPLATE.format("Mary", "John", "John"))
    source = tok.to_tokens(TEMPLATE.format("Mary", "John", "Mary"))
    metric = logit_diff(tok.to_single_token(" Mary"), tok.to_single_token(" John"))
    clean = float(metric(model(base)))
    print(f"logit diff: base {clean:.3f}, source {float(metric(model(source))):.3f}")

    t = time.perf_counter()
    direct = path_patch_sweep(model, base, source, metric, "logits")
    rel_direct = LabelledArray((np.asarray(direct) - clean) / abs(clean), ("layer", "head"), name="heads -> logits")
    print(
        f"\n1. heads -> logits ({cfg.n_layers * cfg.n_heads} senders): {time.perf_counter() - t:.0f} s. "
        "Largest drops in logit diff (relative to base):"
    )
    movers = top_heads(rel_direct, 3, sign=-1.0)
    for l, h in top_heads(np.abs(rel_direct), 6):
        print(f"   a{l}.h{h}: {rel_direct.values[l, h]:+.3f}")

    receivers = [f"a{l}.h{h}.q" for l, h in movers]
    t = time.perf_counter()
    to_queries = path_patch_sweep(model, base, source, metric, receivers, receiver_pos=-1)
    rel_q = LabelledArray(
        (np.asarray(to_queries) - clean) / abs(clean), ("layer", "head"), name="heads -> " + ", ".join(receivers)
    )
    print(
        f"\n2. heads -> queries of {receivers} at the last position: {time.perf_counter() - t:.0f} s. Largest effects:"
    )
    for l, h in top_heads(np.abs(rel_q), 6):
        print(f"   a{l}.h{h}: {rel_q.values[l, h]:+.3f}")

    refs, cfs = ioi_pairs(tok, 16)
    eap = edge_attribution_patch(model, base, source, metric)
    everything = [f"a{l}.h{h}" for l in range(cfg.n_layers) for h in range(cfg.n_heads)] + [
        f"m{l}" for l in range(cfg.n_layers)
    ]
    rng = np.random.default_rng(1)
    full = evaluate_hypothesis(model, everything, refs, cfs)
    none = evaluate_hypothesis(model, [], refs, cfs)
    print("\n3. circuit hypotheses: the heads/MLPs on the top-k EAP edges; D = 16 IOI prompts vs ABC prompts.")
    print(f"   AUE (KL to the model, nats): every node {full.aue:.4f}, no node {none.aue:.4f}")
    for k in (20, 40, 100, 300):
        nodes = [n for n in eap.circuit(k=k).nodes if n not in ("embed", "logits")]
        hyp = evaluate_hypothesis(model, nodes, refs, cfs)
        rand = [
            evaluate_hypothesis(
                model, list(rng.choice(everything, min(len(nodes), len(everything)), replace=False)), refs, cfs
            ).aue
            for _ in range(3)
        ]
        print(
            f"   top {k:3d} edges -> {len(nodes):3d} nodes: AUE {hyp.aue:.4f}; random sets of {len(nodes)}: {np.mean(rand):.4f}"
        )
        if k == 40:
            print("     nodes:", " ".join(nodes))

    os.makedirs("out", exist_ok=True)
    fig = new_figure(12, 7)
    axes = fig.subplots(1, 2)
    patching_heatmap(rel_direct, title="path patching: heads -> logits", ax=axes[0], annotate=False)
    patching_heatmap(
        rel_q, title="heads -> queries of " + ", ".join(f"a{l}.h{h}" for l, h in movers), ax=axes[1], annotate=False
    )
    save_figure(fig, "out/path_patching.png")
    print("wrote out/path_patching.png")


if __name__ == "__main__":
    jaxinterp.enable_compilation_cache()  # a second run loads its compiled programs from disk
    jax.config.update("jax_default_matmul_precision", "highest")
    main(sys.argv[1] if len(sys.argv) > 1 else smollm2_path())
