"""Steering SmolLM2-135M-Instruct: ActAdd and mean-difference vectors, a dose-response
curve on generated text, and a layer x coefficient sweep in one compiled call.

    .venv/bin/python examples/steering.py            # JAXINTERP_QUICK=1: a small, fast run

1. A mean-difference vector (positive minus negative sentiment prompts) at one layer,
   added with a coefficient: for each coefficient, greedy continuations of neutral
   prompts, and two measured properties: the next-token score ``log P(positive words) -
   log P(negative words)`` and the count of positive minus negative sentiment words in
   the generated text (a dose-response curve).
2. ActAdd (Turner et al. 2023): "Love" - "Hate" at the same layer over the first positions.
3. Mean-difference vectors (Rimsky et al. 2024 style) at every layer from contrastive
   prompts; `steering_sweep` scores every (layer, coefficient) pair in one vmapped program.

Writes ``out/steering_dose.png`` and ``out/steering.png``.
"""

from __future__ import annotations

import os
import re
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxinterp as ji
from jaxinterp import viz
from jaxinterp.core.labelled import LabelledArray
from jaxinterp.core.metrics import TokenProb
from jaxinterp.editing.common import generate
from jaxinterp.editing.sentiment import STEER_BAD, STEER_GOOD, STEER_NEGATIVE, STEER_POSITIVE
from jaxinterp.editing.steering import actadd, actadd_vector, caa, steering_sweep
from jaxinterp.loading.bundled import smollm2_path
from jaxinterp.viz.editing import dose_response

QUICK = os.environ.get("JAXINTERP_QUICK") == "1"
PROMPTS = ["I went to the park today and", "My opinion of my new neighbours is that"][: 1 if QUICK else 2]
SCORE_PROMPT = "My review of the movie: it was"
LAYER = 6
COEFFICIENTS = [0.0, 4.0] if QUICK else [-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 6.0]
N_NEW = 8 if QUICK else 24
POSITIVE_WORDS = {
    "love",
    "loved",
    "lovely",
    "great",
    "happy",
    "wonderful",
    "good",
    "beautiful",
    "enjoy",
    "enjoyed",
    "best",
    "amazing",
    "fun",
    "friendly",
    "kind",
    "nice",
    "glad",
    "joy",
    "delightful",
    "fantastic",
    "sweet",
    "excited",
    "warm",
}
NEGATIVE_WORDS = {
    "hate",
    "hated",
    "bad",
    "terrible",
    "awful",
    "angry",
    "sad",
    "worst",
    "horrible",
    "annoying",
    "rude",
    "upset",
    "boring",
    "disgusting",
    "miserable",
    "dreadful",
    "unpleasant",
    "noisy",
    "mean",
    "cold",
    "scared",
    "afraid",
}


def sentiment_count(text: str) -> int:
    """Positive minus negative lexicon words in ``text``."""
    words = re.findall(r"[a-z']+", text.lower())
    return sum(w in POSITIVE_WORDS for w in words) - sum(w in NEGATIVE_WORDS for w in words)


@eqx.filter_jit
def actadd_scores(model, tokens, vector, coefficients, good, bad):
    """``log P(good) - log P(bad)`` of the next token, per ActAdd coefficient (vmapped)."""

    def one(c):
        logits, _ = model.forward(tokens, [actadd(vector, c)])
        return good(logits) - bad(logits)

    return jax.vmap(one)(coefficients)


@eqx.filter_jit
def add_scores(model, tokens, vector, coefficients, good, bad):
    """``log P(good) - log P(bad)`` of the next token, per coefficient of ``vector`` added
    at `LAYER` at every position (vmapped)."""

    def one(c):
        logits, _ = model.forward(tokens, [ji.Add("resid_pre", c * vector, layer=LAYER)])
        return good(logits) - bad(logits)

    return jax.vmap(one)(coefficients)


def mean_resid(model, tok, texts):
    """Mean ``resid_pre`` per layer over texts and their positions after the first: ``[layer, d_model]``."""
    acts = []
    for text in texts:
        _, cache = model.run_with_cache(jnp.asarray(tok.to_tokens(text)), names=["resid_pre"])
        acts.append(np.asarray(cache["resid_pre"])[:, 1:].mean(1))
    return np.mean(acts, 0)


def main():
    os.makedirs("out", exist_ok=True)
    t0 = time.time()
    path = smollm2_path()
    model, tok = ji.load(path, n_layers=8 if QUICK else None), ji.load_tokenizer(path)  # QUICK: every code path, on the first layers
    good = TokenProb(jnp.asarray([tok.to_single_token(w) for w in STEER_GOOD]), -1, log=True)
    bad = TokenProb(jnp.asarray([tok.to_single_token(w) for w in STEER_BAD]), -1, log=True)

    # -- 1. dose-response of a mean-difference vector on generated text --------------
    vectors = mean_resid(model, tok, STEER_POSITIVE) - mean_resid(model, tok, STEER_NEGATIVE)  # [layer, d_model]
    v = jnp.asarray(vectors[LAYER])
    coefs = jnp.asarray(COEFFICIENTS, jnp.float32)
    next_token = {
        p: np.asarray(add_scores(model, jnp.asarray(tok.to_tokens(p)), v, coefs, good, bad))
        for p in PROMPTS + [SCORE_PROMPT]
    }
    counts = {p: [] for p in PROMPTS}
    examples = {}
    for c in COEFFICIENTS:
        for p in PROMPTS:
            text = tok.decode(generate(model, tok.to_tokens(p), N_NEW, [caa(vectors, LAYER, c)]))
            counts[p].append(sentiment_count(text))
            examples[(p, c)] = text
    print(f"mean-difference vector at layer {LAYER} (|v| = {float(jnp.linalg.norm(v)):.1f}), added at every position")
    print(
        "coefficient | next-token sum log P(pos words) - sum log P(neg words): "
        + " | ".join(repr(p) for p in PROMPTS + [SCORE_PROMPT])
        + " | sentiment words (pos - neg) in the continuation: "
        + " | ".join(repr(p) for p in PROMPTS)
    )
    for i, c in enumerate(COEFFICIENTS):
        print(
            f"{c:+6.1f} | "
            + "  ".join(f"{next_token[p][i]:+6.2f}" for p in PROMPTS + [SCORE_PROMPT])
            + " | "
            + "  ".join(f"{counts[p][i]:+d}" for p in PROMPTS)
        )
    print("\nexample continuations:")
    for p in PROMPTS:
        for c in COEFFICIENTS:
            print(f"  {c:+5.1f} {p!r} -> {examples[(p, c)]!r}")
    total = np.sum([counts[p] for p in PROMPTS], 0)
    dose_response(
        COEFFICIENTS,
        {f"next token after {p!r}"[:48]: next_token[p] for p in PROMPTS + [SCORE_PROMPT]},
        f"coefficient (mean-difference vector, layer {LAYER})",
        "log P(positive) - log P(negative)",
        "Dose-response of steering on SmolLM2-135M-Instruct",
        "out/steering_dose.png",
        secondary={"sentiment words in continuations (pos - neg)": total},
        secondary_label="word count",
    )

    # -- ActAdd: "Love" - "Hate" over the first positions -----------------------------
    vector = actadd_vector(model, tok, "Love", "Hate", layer=LAYER, prepend_bos=True)
    act_coefs = [0.0, 0.25, 0.5, 1.0, 2.0]
    act = {
        p: np.asarray(
            actadd_scores(
                model, jnp.asarray(tok.to_tokens(p, prepend_bos=True)), vector, jnp.asarray(act_coefs), good, bad
            )
        )
        for p in [SCORE_PROMPT]
    }
    print(
        f"\nActAdd 'Love' - 'Hate' at layer {LAYER} (BOS prepended; per-position |delta| = "
        + ", ".join(f"{x:.0f}" for x in np.linalg.norm(np.asarray(vector.delta), axis=-1))
        + ")"
    )
    for i, c in enumerate(act_coefs):
        text = (
            tok.decode(generate(model, tok.to_tokens(PROMPTS[0], prepend_bos=True), N_NEW, [actadd(vector, c)]))
            if c in (0.0, 0.5, 2.0)
            else ""
        )
        print(
            f"  {c:+5.2f}: next-token score after {SCORE_PROMPT!r} {act[SCORE_PROMPT][i]:+6.2f}"
            + (f"   {PROMPTS[0]!r} -> {text!r}" if text else "")
        )

    # -- 2. mean-difference vectors, every layer x coefficient in one call ------------
    sweep_coefs = np.array([-4.0, -2.0, 0.0, 2.0, 4.0], np.float32)
    layers = np.arange(0, model.cfg.n_layers, 6 if QUICK else 1)
    tokens = jnp.asarray(tok.to_tokens(SCORE_PROMPT))
    t1 = time.time()

    def metric(logits):
        return good(logits) - bad(logits)

    scores = steering_sweep(model, tokens, vectors, metric, sweep_coefs, layers=layers)
    print(
        f"\nsteering_sweep: {len(layers)} layers x {len(sweep_coefs)} coefficients in one call, {time.time() - t1:.1f} s (compile included)"
    )
    change = scores - scores[:, [2]]
    print("layer | change in log P(pos) - log P(neg) at coefficients " + " ".join(f"{c:+g}" for c in sweep_coefs))
    for i, l in enumerate(layers):
        print(f"{l:5d} | " + " ".join(f"{x:+6.2f}" for x in change[i]))
    viz.patching_heatmap(
        LabelledArray(
            change,
            ("layer", "coefficient"),
            {"layer": [str(l) for l in layers], "coefficient": [f"{c:+g}" for c in sweep_coefs]},
            "change in log P(pos) - log P(neg)",
        ),
        title=f"Steering {SCORE_PROMPT!r}",
        path="out/steering.png",
    )
    print(f"\nwrote out/steering_dose.png, out/steering.png ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    ji.enable_compilation_cache()  # a second run loads its compiled programs from disk
    main(*sys.argv[1:])
