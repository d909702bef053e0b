"""Refusal directions in SmolLM2-135M-Instruct: the seed notes' per-head recipe and
Arditi et al. 2024's difference-in-means direction with selection, directional ablation
and weight orthogonalisation.

    .venv/bin/python examples/refusal.py            # JAXINTERP_QUICK=1: a small, fast run

Instructions (built-in harmful / harmless lists) are formatted with the model's own chat
template (from the GGUF). The refusal score is the log-odds of refusal-opening tokens
("I", "Sorry", "As", "Unfortunately") at the first assistant position. Honest caveat:
this 135M model refuses rarely, so the effects are small; the numbers say how small.
"""

from __future__ import annotations

import os
import time

import jax.numpy as jnp
import numpy as np

import jaxinterp as ji
from jaxinterp.editing.chat import chat_template, format_instruction
from jaxinterp.editing.common import encode_batch, generate
from jaxinterp.editing.instructions import HARMFUL, HARMLESS, split
from jaxinterp.editing.refusal import (
    ablate_direction,
    add_direction,
    cosine_matrix,
    diff_in_means,
    head_directions,
    mean_direction,
    orthogonalize,
    refusal_score,
    scores,
    select_direction,
)
from jaxinterp.loading.bundled import smollm2_path

QUICK = os.environ.get("JAXINTERP_QUICK") == "1"
N_TRAIN, N_VAL = (4, 2) if QUICK else (16, 8)
OFFSETS = (-1,) if QUICK else (-5, -1)
CANDIDATE_LAYERS = [6] if QUICK else list(range(2, 24, 2))
N_NEW = 6 if QUICK else 20
N_GEN = 1 if QUICK else 2


def main():
    t0 = time.time()
    path = smollm2_path()
    model, tok = ji.load(path, n_layers=12 if QUICK else None), ji.load_tokenizer(path)  # QUICK: every code path, on the first layers
    template = chat_template(path)
    print(
        f"chat template: {template!r}; a prompt ends with {tok.to_str_tokens(format_instruction(template, 'Hi'))[-6:]}"
    )
    fmt = lambda xs: [format_instruction(template, x) for x in xs]
    harm_train, harm_val = split(HARMFUL, N_TRAIN)
    safe_train, safe_val = split(HARMLESS, N_TRAIN)
    harm_val, safe_val = harm_val[:N_VAL], safe_val[:N_VAL]
    batches = [encode_batch(tok, fmt(x)) for x in (harm_train, safe_train, harm_val, safe_val)]
    # Right-pad every batch to one width: harmful and harmless batches then share each
    # compiled program (causal attention: padding after a row's end changes nothing in it).
    width = max(t.shape[1] for t, _ in batches)
    (th, lh), (ts, ls), (vh, vlh), (vs, vls) = [(np.pad(t, ((0, 0), (0, width - t.shape[1]))), n) for t, n in batches]
    metric = refusal_score(tok, ("I", "Sorry", "As", "Unfortunately"))

    base_h, base_s = scores(model, vh, vlh, metric), scores(model, vs, vls, metric)
    print("\nrefusal score (log-odds of 'I'/'Sorry'/'As'/'Unfortunately' first), held-out prompts:")
    print(f"  harmful  {base_h.mean():+.2f} (per prompt {' '.join(f'{x:+.2f}' for x in base_h)})")
    print(f"  harmless {base_s.mean():+.2f} (per prompt {' '.join(f'{x:+.2f}' for x in base_s)})")
    print(f"  difference harmful - harmless: {base_h.mean() - base_s.mean():+.2f}")

    # -- Arditi et al.: candidates, selection, ablation --------------------------------
    cands = diff_in_means(model, th, lh, ts, ls, OFFSETS)
    t1 = time.time()
    sel = select_direction(model, cands, OFFSETS, vh, vlh, vs, vls, metric, layers=CANDIDATE_LAYERS, kl_threshold=0.1)
    print(
        f"\nselection over {len(OFFSETS)} positions x {len(CANDIDATE_LAYERS)} layers in one program: {time.time() - t1:.0f} s"
    )
    print("offset layer | bypass (harmful, ablated) | induce (harmless, added) | KL (harmless, ablated) | eligible")
    for i, o in enumerate(OFFSETS):
        for j, l in enumerate(CANDIDATE_LAYERS):
            print(
                f"{o:6d} {l:5d} | {sel.bypass[i, j]:+8.2f} | {sel.induce[i, j]:+8.2f} | {sel.kl[i, j]:8.4f} | {bool(sel.eligible[i, j])}"
            )
    r = sel.direction
    print(f"chosen: offset {sel.offset}, layer {sel.layer}, |r| = {np.linalg.norm(r):.1f}")

    ablation = ablate_direction(model.cfg, r)
    addition = [ji.Add("resid_pre", jnp.asarray(r), layer=sel.layer)]
    abl_h = scores(model, vh, vlh, metric, ablation)
    add_s = scores(model, vs, vls, metric, addition)
    print("\n| condition | harmful | harmless |")
    print("|---|---|---|")
    print(f"| baseline | {base_h.mean():+.2f} | {base_s.mean():+.2f} |")
    print(
        f"| direction ablated everywhere | {abl_h.mean():+.2f} | {scores(model, vs, vls, metric, ablation).mean():+.2f} |"
    )
    print(
        f"| direction added at layer {sel.layer} | {scores(model, vh, vlh, metric, addition).mean():+.2f} | {add_s.mean():+.2f} |"
    )

    edited = orthogonalize(model, r)
    diff = float(jnp.abs(edited(jnp.asarray(vh[0, : vlh[0]])) - model(jnp.asarray(vh[0, : vlh[0]]), ablation)).max())
    print(f"\nweight-orthogonalised model vs runtime ablation: max |logit difference| = {diff:.2e}")

    # -- the seed notes' per-head recipe -----------------------------------------------
    all_heads = [(l, h) for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]
    per_head = head_directions(model, th, lh, ts, ls, all_heads, offset=-1)
    top = np.argsort(-np.linalg.norm(per_head, axis=-1))[:6]
    heads = [all_heads[i] for i in top]
    cos = cosine_matrix(per_head[top])
    seed_r = mean_direction(per_head[top])
    print(
        f"\nseed recipe: 6 heads with the largest harmful-harmless difference in attn.result at the last position: {heads}"
    )
    print("cosine matrix:\n" + "\n".join("  " + " ".join(f"{x:+.2f}" for x in row) for row in cos))
    layers = np.arange(5, 11)
    for coef in (1.0, 4.0):
        s = scores(model, vs, vls, metric, [add_direction(seed_r, layers, coef)])
        print(
            f"  harmless prompts with {coef:g} x mean head direction added at layers 5-10 (all positions): {s.mean():+.2f} (baseline {base_s.mean():+.2f})"  # noqa: E501
        )

    # -- example generations -----------------------------------------------------------
    print("\nexample generations (greedy):")
    for text in harm_val[:N_GEN]:
        ids = tok.to_tokens(format_instruction(template, text))
        print(
            f"  harmful  {text!r}\n    plain:   {tok.decode(generate(model, ids, N_NEW))!r}\n    ablated: {tok.decode(generate(model, ids, N_NEW, ablation))!r}"  # noqa: E501
        )
    for text in safe_val[:N_GEN]:
        ids = tok.to_tokens(format_instruction(template, text))
        print(
            f"  harmless {text!r}\n    plain:   {tok.decode(generate(model, ids, N_NEW))!r}\n    added:   {tok.decode(generate(model, ids, N_NEW, addition))!r}"  # noqa: E501
        )
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    ji.enable_compilation_cache()  # a second run loads its compiled programs from disk
    main()
