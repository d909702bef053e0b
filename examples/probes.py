"""Linear probes on SmolLM2-135M: what the residual stream encodes, layer by layer.

    JAXINTERP_QUICK=1 .venv/bin/python examples/probes.py     # ~30 s, tiny budgets
    .venv/bin/python examples/probes.py                       # the real run, ~10 min on 2 cores

Data: the bundled ``sae-probes`` datasets (prompts, targets). For each dataset, one
cached pass over its prompts gives ``resid_post`` at the last token for all 30 layers;
probes for every layer (x a grid of L2 penalties) train in one vmapped program.

1. Classification (logistic): sentiment (``92_glue_sst2``) and truth (``41_truthqa_tf``),
   with a control task (Hewitt & Liang 2019: random labels per last-token type) and the
   selectivity ``task - control``.
2. Regression (ridge): latitude, longitude (``18_world_latitude``, ``19_world_longitude``),
   birth year (``2_hist_fig_birthyear``): R^2 and Spearman by layer (Gurnee & Tegmark 2024).
3. Sparse probing (Gurnee et al. 2023): sentiment from the top-k MLP neurons of one layer.
4. Steering with the latitude probe's direction: does a later layer's probe follow?

Writes ``out/probes_layers.png``, ``out/probes_sparse.png``; activations are cached
in ``out/acts/`` (a rerun skips the model).
"""

from __future__ import annotations

import os
import time

import numpy as np

import jaxinterp as ji
from jaxinterp.features.activations import collect_activations
from jaxinterp.features.control_tasks import selectivity
from jaxinterp.features.datasets import load_sae_probes
from jaxinterp.features.probes import train_probes
from jaxinterp.features.space_time import steer_and_read
from jaxinterp.features.sparse_probing import sparse_probe_curve
from jaxinterp.loading.bundled import smollm2_path
from jaxinterp.viz.probes import probe_layer_curves, sparse_probing_curves

QUICK = os.environ.get("JAXINTERP_QUICK") == "1"
N = 32 if QUICK else 600
# Per-dataset prompt counts (truthqa prompts are long: fewer of them).
SIZES = {"41_truthqa_tf": 32 if QUICK else 400}
CLASSIFICATION = ["92_glue_sst2"] if QUICK else ["92_glue_sst2", "41_truthqa_tf"]
REGRESSION = ["18_world_latitude"] if QUICK else ["18_world_latitude", "19_world_longitude", "2_hist_fig_birthyear"]
CACHE = "out/acts"


def activations(model, tok, name, n):
    ds = load_sae_probes(name).sample(n, seed=0)
    # sst2 prompts end in a space: strip it, so the last token is the last word (the
    # control task's "type").
    prompts = [p.rstrip() for p in ds.prompts]
    acts = collect_activations(
        model, tok, prompts, "resid_post", "last", batch_size=32, pad_multiple=16, cache_dir=CACHE
    )
    return ds, prompts, acts


def main():
    os.makedirs("out", exist_ok=True)
    t0 = time.time()
    # QUICK: every code path, on the first layers
    model, tok = ji.load(smollm2_path(), n_layers=6 if QUICK else None), ji.load_tokenizer(smollm2_path())
    # Newton / IRLS: exact in a few steps and quick to compile (L-BFGS over 30 layers x
    # penalties compiles for minutes on a loaded 2-core machine).
    steps = dict(n_steps=8 if QUICK else 12, optimizer="newton", l2=(1e-2, 1e-1, 1.0, 10.0))
    panels, ylabels = {}, {}

    print(
        f"== classification: test accuracy by layer (n={N} prompts, truthqa {SIZES['41_truthqa_tf']}; 60/20/20 split); "
        "control = random label per last token"
    )
    for name in CLASSIFICATION:
        ds, _, a = activations(model, tok, name, SIZES.get(name, N))
        sel = selectivity(a.acts, ds.targets, a.token_ids, **steps)
        task, control = sel["task"].test(), sel["control"].test()
        best = int(np.argmax(task))
        print(
            f"{name}: best layer {best}: accuracy {task[best]:.3f} (AUC {sel['task'].test('auc')[best]:.3f}), "
            f"control {control[best]:.3f}, selectivity {sel['selectivity'][best]:+.3f}; "
            f"layer 0 {task[0]:.3f}, last {task[-1]:.3f}; max selectivity {sel['selectivity'].max():+.3f} "
            f"at layer {int(np.argmax(sel['selectivity']))}; {len(set(a.token_ids.tolist()))} token types"
        )
        print("   by layer: " + " ".join(f"{v:.2f}" for v in task))
        panels[name] = {"task": task, "control": control, "selectivity": sel["selectivity"]}
        ylabels[name] = "test accuracy"

    print("== regression (ridge): test R^2 / Spearman by layer")
    lat = None
    for name in REGRESSION:
        ds, prompts, a = activations(model, tok, name, N)
        sel = selectivity(a.acts, ds.targets, a.token_ids, kind="regression", **steps)
        r2, rho = sel["task"].test(), sel["task"].test("spearman")
        best = int(np.argmax(r2))
        print(
            f"{name}: best layer {best}: R^2 {r2[best]:.3f}, Spearman {rho[best]:.3f}; control R^2 "
            f"{sel['control'].test()[best]:.3f}; layer 0 R^2 {r2[0]:.3f}, last {r2[-1]:.3f}"
        )
        print("   by layer: " + " ".join(f"{v:.2f}" for v in r2))
        panels[name] = {"task R^2": r2, "task Spearman": rho, "control R^2": sel["control"].test()}
        ylabels[name] = "test R^2 / Spearman"
        if name == "18_world_latitude":
            lat = (prompts, sel["task"], best)
    probe_layer_curves(
        panels, ylabels, "SmolLM2-135M linear probes on resid_post (last token)", "out/probes_layers.png"
    )

    print("== sparse probing: sentiment from the top-k MLP neurons (mlp.post, last token)")
    ds = load_sae_probes("92_glue_sst2").sample(N, seed=0)
    prompts = [p.rstrip() for p in ds.prompts]
    layer = 10 if QUICK else int(np.argmax(panels["92_glue_sst2"]["task"]))
    layer = min(layer, model.cfg.n_layers - 1)
    # (QUICK: the residual stream of that layer, already cached, instead of a new pass.)
    site = f"blocks.{layer}.hook_resid_post" if QUICK else f"blocks.{layer}.mlp.hook_post"
    neurons = collect_activations(model, tok, prompts, site, "last", batch_size=32, cache_dir=CACHE).acts
    tr = np.arange(int(0.7 * len(prompts)))
    te = np.arange(len(tr), len(prompts))
    ks = (1, 2, 4, 8, 16) if QUICK else (1, 2, 4, 8, 16, 32, 64, 128, 256)
    curves = {}
    for method in ("mean_difference", "l1"):
        c = sparse_probe_curve(
            neurons[tr],
            ds.targets[tr],
            neurons[te],
            ds.targets[te],
            ks,
            method,
            l2=1e-2,
            n_steps=12,
            optimizer="newton",
        )
        curves[method] = (c["k"], c["accuracy"])
        print(f"layer {layer}, {method}: " + ", ".join(f"k={k}: {acc:.3f}" for k, acc in zip(c["k"], c["accuracy"])))
    full = train_probes(
        neurons,
        ds.targets,
        "binary",
        splits={"train": tr, "val": np.arange(0), "test": te},
        l2=1e-2,
        optimizer="newton",
    )
    print(f"layer {layer}, all {neurons.shape[1]} neurons: {full.test()[0]:.3f}")
    sparse_probing_curves(curves, f"SmolLM2 sst2 sentiment, layer {layer} MLP neurons", "out/probes_sparse.png")

    if lat is not None:
        prompts, result, best = lat
        layer = min(best, model.cfg.n_layers - 4)
        reads = [layer, layer + 1, layer + 3, model.cfg.n_layers - 1]
        shifts = (-30.0, 0.0, 30.0)
        got = steer_and_read(model, tok, prompts[: 32 if QUICK else 128], result, layer, reads, shifts)
        print(
            f"== steering with the latitude probe of layer {layer} (shift in degrees, added to resid_post at every position)"
        )
        for j, r in enumerate(reads):
            slope = (got[-1, j] - got[0, j]) / (shifts[-1] - shifts[0])
            print(
                f"   probe at layer {r}: mean readout {got[0, j]:+.1f} / {got[1, j]:+.1f} / {got[2, j]:+.1f}  (slope {slope:.2f})"
            )
    print(f"wrote out/probes_layers.png, out/probes_sparse.png  ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    ji.enable_compilation_cache()  # a second run loads its compiled programs from disk
    main()
