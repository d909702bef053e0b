"""ROME (Meng et al. 2022) on SmolLM2-135M-Instruct: edit "The Eiffel Tower is located in
the city of" from " Paris" to " Rome", and measure efficacy, paraphrase generalisation,
specificity on other facts, and fluency.

    .venv/bin/python examples/rome.py            # JAXINTERP_QUICK=1: a small, fast run

The layer is `default_layer` (n_layers // 4 = 7 here); `jaxinterp.causal.causal_tracing` shows
where the subject's last token matters if you want to choose it. The key covariance
comes from windows of the bundled Shakespeare corpus.
"""

from __future__ import annotations

import os
import time

import jax.numpy as jnp
import numpy as np

import jaxinterp as ji
from jaxinterp.editing.common import encode_batch, generate
from jaxinterp.editing.rome import (
    PREFIXES,
    EditRequest,
    corpus_windows,
    default_layer,
    fact_probs,
    key_covariance,
    ngram_entropy,
    rome,
)
from jaxinterp.loading.bundled import smollm2_path

QUICK = os.environ.get("JAXINTERP_QUICK") == "1"
REQUEST = EditRequest("{} is located in the city of", "The Eiffel Tower", " Rome")
TRUE = " Paris"
PARAPHRASES = [
    "The Eiffel Tower can be found in the city of",
    "Where is the Eiffel Tower? It is in the city of",
    "The famous Eiffel Tower stands in the heart of the city of",
    "Tourists visit the Eiffel Tower, which is in the city of",
]
NEIGHBOURS = [  # other landmarks: (prompt, true answer); kept if the model already knows them
    ("The Louvre is located in the city of", " Paris"),
    ("The Colosseum is located in the city of", " Rome"),
    ("Big Ben is located in the city of", " London"),
    ("The Brandenburg Gate is located in the city of", " Berlin"),
    ("The Kremlin is located in the city of", " Moscow"),
    ("The Acropolis is located in the city of", " Athens"),
    ("The Sagrada Familia is located in the city of", " Barcelona"),
    ("The Statue of Liberty is located in the city of", " New"),
    ("The Golden Gate Bridge is located in the city of", " San"),
    ("The Sydney Opera House is located in the city of", " Sydney"),
    ("The Taj Mahal is located in the city of", " Agra"),
    ("Notre-Dame Cathedral is located in the city of", " Paris"),
    ("The Arc de Triomphe is located in the city of", " Paris"),
    ("The Vatican is located in the city of", " Rome"),
    ("The Tower of London is located in the city of", " London"),
    ("The Space Needle is located in the city of", " Seattle"),
    ("The Forbidden City is located in the city of", " Beijing"),
    ("The Burj Khalifa is located in the city of", " Dubai"),
]
GEN_PROMPTS = ["The Eiffel Tower is", "The Colosseum is"]
N_WINDOWS, WINDOW = (8, 64) if QUICK else (64, 128)
STEPS = 5 if QUICK else 25
# C from a few thousand tokens is ill-conditioned in d_mlp = 1536 dimensions (singular
# from the QUICK run's 512): a small ridge keeps C^-1 k* finite (see rank_one_update).
RIDGE = 0.1 if QUICK else 0.01
N_NEW = 8 if QUICK else 24
# Each Adam step runs the whole model forward and backward on every prefixed prompt.
N_PREFIXES = 3 if QUICK else len(PREFIXES)


def argmax_is(model, tok, prompts, answers):
    """Per prompt: is the model's top next token the answer's first token? All prompts in
    one right-padded batch (one compiled forward, not one per prompt length); causal
    attention leaves each prompt's last position unchanged by the padding after it."""
    tokens, lengths = encode_batch(tok, list(prompts))
    logits = np.asarray(model(jnp.asarray(tokens)))[np.arange(len(lengths)), lengths - 1]
    first = [tok.backend.encode(a, add_special_tokens=False).ids[0] for a in answers]
    return np.argmax(logits, -1) == np.asarray(first)


def main():
    t0 = time.time()
    path = smollm2_path()
    model, tok = ji.load(path), ji.load_tokenizer(path)
    layer = default_layer(model.cfg)
    prompt = REQUEST.text()
    p_true, p_new = fact_probs(model, tok, [prompt, prompt], [TRUE, REQUEST.target])
    print(f"before: P({TRUE!r} | {prompt!r}) = {p_true:.3f}, P({REQUEST.target!r}) = {p_new:.4f}")
    candidates = NEIGHBOURS[:6] if QUICK else NEIGHBOURS
    known = argmax_is(model, tok, [p for p, _ in candidates], [a for _, a in candidates])
    neighbours = [pa for pa, ok in zip(candidates, known) if ok]
    print(
        f"neighbour facts the model gets right (argmax): {len(neighbours)} of {len(NEIGHBOURS[:6] if QUICK else NEIGHBOURS)}"
    )

    t1 = time.time()
    C = key_covariance(model, corpus_windows(tok, N_WINDOWS, WINDOW), layer)
    print(f"key covariance at layer {layer} from {N_WINDOWS} x {WINDOW} Shakespeare tokens: {time.time() - t1:.0f} s")
    t1 = time.time()
    edit = rome(model, tok, REQUEST, C, layer=layer, steps=STEPS, ridge=RIDGE, prefixes=PREFIXES[:N_PREFIXES])
    v = edit.value
    print(
        f"v* optimisation ({STEPS} Adam steps, {N_PREFIXES} prefixes): target NLL {v.nll[0]:.2f} -> {v.nll[-1]:.2f}, essence KL {v.kl[-1]:.3f}, "
        f"|v* - v0| / |v0| = {np.linalg.norm(v.value - v.original) / np.linalg.norm(v.original):.2f} ({time.time() - t1:.0f} s)"
    )
    new = edit.model

    def table(m):
        eff = fact_probs(m, tok, [prompt, prompt], [REQUEST.target, TRUE])
        par_new = fact_probs(m, tok, PARAPHRASES, [REQUEST.target] * len(PARAPHRASES))
        par_true = fact_probs(m, tok, PARAPHRASES, [TRUE] * len(PARAPHRASES))
        nb_true = fact_probs(m, tok, [p for p, _ in neighbours], [a for _, a in neighbours])
        nb_new = fact_probs(m, tok, [p for p, _ in neighbours], [REQUEST.target] * len(neighbours))
        nb_kept = np.mean(argmax_is(m, tok, [p for p, _ in neighbours], [a for _, a in neighbours]))
        return eff, par_new, par_true, nb_true, nb_new, nb_kept

    before, after = table(model), table(new)
    print("\n| measure | before | after |")
    print("|---|---|---|")
    print(f"| efficacy: P({REQUEST.target!r}) on the edit prompt | {before[0][0]:.3f} | {after[0][0]:.3f} |")
    print(f"| P({TRUE!r}) on the edit prompt | {before[0][1]:.3f} | {after[0][1]:.3f} |")
    print(
        f"| paraphrases: mean P({REQUEST.target!r}) ({len(PARAPHRASES)}) | {before[1].mean():.3f} | {after[1].mean():.3f} |"
    )
    print(
        f"| paraphrases: P({REQUEST.target!r}) > P({TRUE!r}) | {np.mean(before[1] > before[2]):.2f} | {np.mean(after[1] > after[2]):.2f} |"
    )
    print(
        f"| specificity: neighbours still answered correctly ({len(neighbours)}) | {before[5]:.2f} | {after[5]:.2f} |"
    )
    print(f"| specificity: mean P(true answer) on neighbours | {before[3].mean():.3f} | {after[3].mean():.3f} |")
    print(f"| specificity: mean P({REQUEST.target!r}) on neighbours | {before[4].mean():.3f} | {after[4].mean():.3f} |")
    print("\nper paraphrase P(' Rome') before -> after:")
    for p, b, a in zip(PARAPHRASES, before[1], after[1]):
        print(f"  {p!r}: {b:.3f} -> {a:.3f}")
    print("per neighbour P(true) before -> after:")
    for (p, ans), b, a in zip(neighbours, before[3], after[3]):
        print(f"  {p!r} -> {ans!r}: {b:.3f} -> {a:.3f}")

    print(f"\ngenerations ({N_NEW} tokens) and fluency (n-gram entropy):")
    for p in GEN_PROMPTS:
        ids = tok.to_tokens(p)
        for label, m in (("before", model), ("after", new)):
            text = tok.decode(generate(m, ids, N_NEW))
            print(f"  {label:6s} {p!r} -> {text!r}  (entropy {ngram_entropy(p + text):.2f})")
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    ji.enable_compilation_cache()  # a second run loads its compiled programs from disk
    main()
