"""Feature visualisation by optimisation on SmolLM2-135M: input text that maximises a
neuron, a direction, or a head's attention.

    JAXINTERP_QUICK=1 .venv/bin/python examples/feature_visualisation_lm.py   # ~30-60 s
    .venv/bin/python examples/feature_visualisation_lm.py [--layer 15] [--neurons 100 200 300] [--extras]

Each position of a short input is a distribution over the 49152-token vocabulary; its
expected embedding is spliced into ``hook_embed``; Adam maximises the objective over
several random restarts at once; the argmax tokens, refined greedily on real tokens, are
re-run and their true value reported, next to the best of 256 random token sequences.

Objectives: MLP neurons (``mlp.post`` at the last position) of ``--layer``; with
``--extras`` also the direction of the " Paris" unembedding in the final residual stream
(a sanity check: the optimum should be text after which the model predicts " Paris") and
head 0 of layer 6 attending from the last position to the first.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import jaxinterp as ji
from jaxinterp.features.visualise import attention, direction, evaluate_tokens, neuron, visualise
from jaxinterp.loading.bundled import smollm2_path

QUICK = os.environ.get("JAXINTERP_QUICK") == "1"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layer", type=int, default=12 if QUICK else 15)
    parser.add_argument("--neurons", type=int, nargs="+", default=[100] if QUICK else [100, 200, 300])
    parser.add_argument("--entropy-weight", type=float, default=0.05)
    parser.add_argument("--refine-sweeps", type=int, default=1)
    parser.add_argument("--extras", action="store_true", help="also the ' Paris' direction and a head's attention")
    args = parser.parse_args()
    t0 = time.time()
    model, tok = ji.load(smollm2_path()), ji.load_tokenizer(smollm2_path())
    V, L = model.cfg.d_vocab, model.cfg.n_layers
    paris = tok.to_single_token(" Paris")
    allowed = np.arange(V) >= 17  # no special tokens (<|endoftext|>, <|im_start|>, ...)
    n_free = 3 if QUICK else 6
    budget = dict(
        n_restarts=2 if QUICK else 6,
        n_steps=15 if QUICK else 120,
        learning_rate=0.2,
        allowed=allowed,
        refine_top_k=4 if QUICK else 8,
        entropy_weight=args.entropy_weight,
        refine_sweeps=args.refine_sweeps,
    )
    # A neuron of layer l depends on layers 0..l only: optimise on the first l + 1 layers
    # (the same activations, half the work for a middle layer).
    upto = model.first_layers(args.layer + 1)
    objectives = {
        f"MLP neuron L{args.layer} #{i} (mlp.post, last position)": (upto, neuron(args.layer, i, "mlp.post"))
        for i in args.neurons
    }
    if args.extras and not QUICK:
        objectives["' Paris' unembedding . resid_post L29 (last position)"] = (
            model,
            direction(np.asarray(model.unembed.W_U[:, paris]), L - 1),
        )
        objectives["head L6.H0 attention last -> first position"] = (
            model.first_layers(7),
            attention(6, 0, query_pos=-1, key_pos=0),
        )
    rng = np.random.default_rng(0)
    n_random = 32 if QUICK else 256
    random_tokens = rng.integers(17, V, (n_random, n_free))
    for name, (m, obj) in objectives.items():
        t = time.time()
        vis = visualise(m, obj, n_free, **budget)
        base = evaluate_tokens(m, random_tokens, obj)
        print(f"== {name}  ({time.time() - t:.0f} s)")
        best = random_tokens[int(np.argmax(base))]
        print(f"   random sequences: mean {base.mean():.3f}, max of {n_random} {base.max():.3f} ({tok.decode(best)!r})")
        for i in range(min(3, len(vis.true_values))):
            print(
                f"   {tok.decode(vis.tokens[i])!r:>40}  true {vis.true_values[i]:.3f}  (soft {vis.soft_values[i]:.3f},"
                f" entropy {vis.entropy[i]:.2f})"
            )
        if m is not model:  # the truncated model's value is the full model's
            full = evaluate_tokens(model, vis.tokens[:3], obj)
            print("   the same 3 inputs re-run on the full model: " + ", ".join(f"{v:.3f}" for v in full))
        if "Paris" in name:
            logits = model(np.asarray(vis.tokens[0]))
            top = np.argsort(-np.asarray(logits[-1]))[:5]
            print("   next-token top 5 after the best input: " + ", ".join(repr(tok.decode([t])) for t in top))
    print(f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    ji.enable_compilation_cache()  # a second run loads its compiled programs from disk
    main()
