"""Universal neurons (Gurnee et al. 2024) in toy 2-layer MLP models trained on Shakespeare.

    .venv/bin/python examples/universal_neurons.py [--seeds 3] [--steps 2000]
    JAXINTERP_QUICK=1 .venv/bin/python examples/universal_neurons.py   # < 30 s, tiny budgets

1. Trains ``--seeds`` models (2 layers, d_model 64, 256 ReLU neurons per layer, the
   shipped ``mlp-2l`` recipe, so seed 0 reproduces the shipped toy) that differ only in their
   initialisation, all in one vmapped optax loop (`jaxinterp.toy.lm.train_lms`), on the
   bundled corpus with the shipped 1024-token BPE vocabulary.
2. Records every MLP neuron's activation on the same held-out text (the last 5% of each
   play), and for each neuron the max correlation with any neuron of each other seed.
3. Baseline: the same statistic after rotating each model's neuron basis (per layer) by
   a random orthogonal matrix.
4. Properties of the universal neurons (mean max correlation > 0.5): activation frequency,
   kurtosis of the vocabulary effect W_out W_U, and the tokens the most universal ones
   promote.

Writes ``out/universal_neurons/*.png``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import jaxinterp
from jaxinterp.features import universal_neurons as un
from jaxinterp.toy.bpe import train_bpe_tokenizer
from jaxinterp.toy.corpus import shakespeare_texts, split_heldout
from jaxinterp.toy.lm import encode_corpus, mlp_config, train_lms, unstack
from jaxinterp.toy.make import SPECS
from jaxinterp.viz import universal_neurons as vu

OUT = os.path.join("out", "universal_neurons")
QUICK = os.environ.get("JAXINTERP_QUICK") == "1"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60 if QUICK else SPECS["mlp-2l"].steps)
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)

    train_texts, held_texts = split_heldout(shakespeare_texts(), 0.05)
    if QUICK:
        train_texts = [t[:20000] for t in train_texts[:10]]
    # the shipped toys' vocabulary (training is deterministic: the same bytes as toy.load's)
    tok = train_bpe_tokenizer(train_texts, 1024)
    train_tokens = encode_corpus(tok, train_texts)
    held = encode_corpus(tok, held_texts)
    spec = SPECS["mlp-2l"]
    cfg = (
        mlp_config(tok.vocab_size, n_layers=2, d_model=32, d_mlp=64, n_heads=4)
        if QUICK
        else spec.config(tok.vocab_size)
    )
    d_mlp = cfg.d_mlp
    t = time.time()
    run = train_lms(
        cfg,
        train_tokens,
        seeds=list(range(args.seeds)),
        steps=args.steps,
        batch_size=spec.batch_size,
        seq_len=spec.seq_len,
        learning_rate=spec.learning_rate,
    )
    losses = np.asarray(run.losses)
    print(
        f"trained {args.seeds} seeds x {args.steps} steps in one program ({time.time() - t:.0f} s); "
        f"final train loss per seed {np.round(losses[:, -100:].mean(1), 3).tolist()}"
    )

    n_windows = 16 if QUICK else 256
    windows = held[: n_windows * 64].reshape(n_windows, 64)
    models = [unstack(run.models, s) for s in range(args.seeds)]
    acts = un.mlp_activations(models, windows)
    print(f"activations: {acts.shape[0]} models x {acts.shape[1]} neurons x {acts.shape[2]} held-out tokens")
    max_corr = un.max_correlations(acts)
    rotated = un.max_correlations(un.random_rotation(acts, cfg.n_layers, seed=0))
    s, b = un.summarise(max_corr), un.summarise(rotated)
    alive = acts.max(-1) > 0  # [model, neuron]
    print(f"dead neurons (never active on this text): {1 - alive.mean():.1%}")
    for name, summ in (("neurons", s), ("random rotation", b)):
        q = np.percentile(summ.mean_over_seeds, [10, 50, 90])
        print(
            f"{name:16s} mean-over-seeds max corr: median {q[1]:.3f} (10-90%: {q[0]:.3f}-{q[2]:.3f}); "
            f"> 0.5: {summ.fraction_above:.1%}; max over any seed > 0.5: {np.mean(summ.max_any > 0.5):.1%}"
        )
    per_layer = s.mean_over_seeds.reshape(args.seeds, cfg.n_layers, d_mlp)
    print("fraction universal by layer:", [f"L{l}: {np.mean(per_layer[:, l] > 0.5):.1%}" for l in range(cfg.n_layers)])
    vu.max_correlation_histogram(
        s.mean_over_seeds,
        b.mean_over_seeds,
        path=f"{OUT}/max_correlation.png",
        title=f"{args.seeds} seeds, {acts.shape[1]} neurons each: max correlation (mean over other seeds)",
    )

    props = un.neuron_properties(models[0], acts[0])
    uni = s.mean_over_seeds[0] > 0.5
    live = alive[0]
    print(f"seed 0: {uni.sum()} universal neurons of {live.sum()} alive")
    for label, mask in (("universal", uni), ("other alive", live & ~uni)):
        if mask.any():
            print(
                f"  {label:12s} activation frequency {props.activation_frequency[mask].mean():.3f}, "
                f"W_out W_U kurtosis median {np.median(props.vocab_kurtosis[mask]):.2f}, skew median {np.median(props.vocab_skew[mask]):.2f}"
            )
    top = np.argsort(-s.mean_over_seeds[0])[:8]
    print("most universal neurons of seed 0 (layer.neuron: corr, freq, promotes / suppresses):")
    for i in top:
        promotes = [tok.decode([int(t)]) for t in props.top_tokens[i][:4]]
        suppresses = [tok.decode([int(t)]) for t in props.bottom_tokens[i][:4]]
        print(
            f"  L{i // d_mlp}.{i % d_mlp:<4d} {s.mean_over_seeds[0, i]:.2f}  {props.activation_frequency[i]:.3f}  {promotes} / {suppresses}"
        )
    vu.universal_properties_plot(
        s.mean_over_seeds[0][live],
        props.activation_frequency[live],
        props.vocab_kurtosis[live],
        path=f"{OUT}/properties.png",
    )
    print(f"wrote {OUT}/")


if __name__ == "__main__":
    jaxinterp.enable_compilation_cache()  # a second run loads its compiled programs from disk
    main()
