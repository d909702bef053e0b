"""Find an induction circuit in a model we train ourselves, three ways that must agree.

    .venv/bin/python examples/circuits_induction.py [--steps 800] [--seed 0]

1. Train a 2-layer attention-only transformer on random tokens that repeat
   (`jaxinterp.toy.train_induction_model`, optax, ~10-30 s on 2 CPU cores).
2. Detectors (attention on repeated random tokens) name the previous-token head and the
   induction heads.
3. Ablations confirm them: zeroing each head in turn, and a *path* ablation that removes
   the previous-token head from layer 1's keys only, or from its queries only.
4. Weights alone (after folding LayerNorm): K-composition from the previous-token head
   into the induction heads is the largest composition score; the induction heads'
   OV circuits copy (copying score near 1).

Writes ``out/circuits_induction.png``.
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import jaxinterp as ji
from jaxinterp import circuits, detectors
from jaxinterp.analysis.processing import fold_layer_norm
from jaxinterp.core.labelled import LabelledArray
from jaxinterp.toy import induction_config, repeated_half_loss, train_induction_model

QUICK = os.environ.get("JAXINTERP_QUICK") == "1"  # CI: the first 4 layers, small budgets

SEQ = 20


def path_ablation_loss(model, tokens, cache, head, site):
    """In-context loss when layer 1's keys (``attn.k``) or queries (``attn.q``) are
    recomputed from a residual stream that lacks layer-0 head ``head``'s output."""
    resid = cache["resid_pre"][1] - cache["attn.result"][0][:, :, head]
    ln1 = jax.tree_util.tree_map(lambda a: a[1], model.blocks.ln1)
    x = jax.vmap(lambda r: ln1(r, lambda name, v: v, "ln1"))(resid)
    W = model.blocks.attn.W_K[1] if site == "attn.k" else model.blocks.attn.W_Q[1]
    value = jnp.einsum("bpm,hmd->bphd", x, W)
    # One value per prompt: vmap the run over (tokens, value) pairs.
    logits = jax.vmap(lambda t, v: model(t, [ji.Patch(site, v, layer=1)]))(tokens, value)
    logp = jax.nn.log_softmax(logits[:, :-1], -1)
    return float(-jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0][:, SEQ:].mean())


def main(steps: int, seed: int) -> None:
    cfg = induction_config(d_vocab=64, seq_len=SEQ)
    model, losses = train_induction_model(jax.random.key(seed), cfg, steps=steps)
    tokens = detectors.repeated_random_tokens(jax.random.key(seed + 1), cfg.d_vocab, SEQ, 64)
    base = float(repeated_half_loss(model, tokens))
    print(
        f"trained {steps} steps: final train loss {float(losses[-20:].mean()):.2f}; "
        f"loss on the repeated half {base:.3f} (uniform guess: {np.log(cfg.d_vocab):.2f})"
    )

    prev = detectors.previous_token_scores(model, tokens)
    ind = detectors.induction_scores(model, tokens)
    p_layer, p_head = prev.argmax()["layer"], prev.argmax()["head"]
    induction_heads = [int(h) for h in np.flatnonzero(np.asarray(ind)[1] > 0.4)]
    print("previous-token scores [layer, head]:\n", np.round(np.asarray(prev), 2))
    print("induction scores [layer, head]:\n", np.round(np.asarray(ind), 2))
    print(
        f"previous-token head: L{p_layer}H{p_head}; induction heads (score > 0.4): {['L1H%d' % h for h in induction_heads]}"
    )

    H = cfg.n_heads
    ablated = np.array(
        [
            [float(repeated_half_loss(model, tokens, [ji.Ablate("attn.z", layer=l, head=h)])) for h in range(H)]
            for l in range(2)
        ]
    )
    print("in-context loss with each head zero-ablated:\n", np.round(ablated, 2))
    _, cache = model.run_with_cache(tokens, names=["resid_pre", "attn.result"])
    via_k = path_ablation_loss(model, tokens, cache, p_head, "attn.k")
    via_q = path_ablation_loss(model, tokens, cache, p_head, "attn.q")
    all_ind = float(
        repeated_half_loss(model, tokens, [ji.Ablate("attn.z", layer=1, head=jnp.asarray(induction_heads, jnp.int32))])
    )
    print(
        f"remove L0H{p_head} from layer 1's keys: {via_k:.2f}; from its queries: {via_q:.2f}; "
        f"ablate all induction heads: {all_ind:.2f}"
    )

    folded = fold_layer_norm(model)  # composition reads the weights: fold the norm scales in first
    comp = circuits.all_composition_scores(folded)
    c = np.asarray(comp)
    k_best = np.unravel_index(np.argmax(c[1]), c[1].shape)
    print(
        f"largest K-composition: L{k_best[0]}H{k_best[1]} -> L{k_best[2]}H{k_best[3]} ({c[1].max():.3f}); "
        f"largest Q: {c[0].max():.3f}, V: {c[2].max():.3f}"
    )
    copying = circuits.copying_scores(folded)
    print("copying scores (layer 1):", np.round(np.asarray(copying)[1], 2))

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    axes[0, 0].plot(np.asarray(losses))
    axes[0, 0].set(title="training loss (all positions)", xlabel="step", ylabel="cross-entropy")
    prev.plot(ax=axes[0, 1], title="previous-token score", cmap="Blues")
    ind.plot(ax=axes[0, 2], title="induction score", cmap="Blues")
    LabelledArray(ablated - base, ("layer", "head"), name="in-context loss increase when ablated").plot(
        ax=axes[1, 0], cmap="Reds"
    )
    for i, mode in enumerate("QKV"):
        axes[1, 1].bar(np.arange(H) + 0.25 * i, c[i, 0, p_head, 1], width=0.25, label=f"{mode}-composition")
    axes[1, 1].set_xticks(np.arange(H) + 0.25, [f"L1H{h}" for h in range(H)])
    axes[1, 1].set(title=f"L0H{p_head} (previous token) -> layer-1 heads", ylabel="composition score")
    axes[1, 1].legend()
    labels = ["clean", "ablate\nprev", "prev out\nof keys", "prev out\nof queries", "ablate\ninduction"]
    axes[1, 2].bar(labels, [base, ablated[p_layer, p_head], via_k, via_q, all_ind])
    axes[1, 2].tick_params(axis="x", labelsize=8)
    axes[1, 2].axhline(np.log(cfg.d_vocab), ls="--", c="k", lw=1, label="uniform guess")
    axes[1, 2].set(title="in-context loss (repeated half)", ylabel="cross-entropy")
    axes[1, 2].legend()
    fig.tight_layout()
    os.makedirs("out", exist_ok=True)
    fig.savefig("out/circuits_induction.png", dpi=110)
    print("wrote out/circuits_induction.png")


if __name__ == "__main__":
    ji.enable_compilation_cache()  # a second run loads its compiled programs from disk
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150 if QUICK else 800)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.steps, args.seed)
