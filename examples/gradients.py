"""Features as gradients on SmolLM2-135M: token attribution, integrated gradients, and the
gradient direction of a concept against its probe direction.

    JAXINTERP_QUICK=1 .venv/bin/python examples/gradients.py    # ~30 s
    .venv/bin/python examples/gradients.py                      # a few minutes on 2 cores

1. Contrastive input attribution: which tokens of "The Eiffel Tower is in the city of"
   push " Paris" over " London"? Integrated gradients (from the embedding of a neutral
   token), gradient x input, saliency; completeness of IG checked (sum = f(x) - f(x0)).
2. Integrated gradients at the residual stream of a middle layer, from a corrupted
   prompt's activations: completeness again.
3. Gradient x activation equals attribution patching's elementwise estimate.
4. The seed's comparison: the mean gradient of "positive vs negative" next-token logits
   w.r.t. resid_post, per layer, against a sentiment probe's direction (cosine).

Writes ``out/gradients_tokens.png`` and ``out/gradients_vs_probe.png``.
"""

from __future__ import annotations

import os
import time

import jax.numpy as jnp
import numpy as np

import jaxinterp as ji
from jaxinterp.attribution import attribution_patch
from jaxinterp.features.activations import collect_activations
from jaxinterp.features.datasets import load_sae_probes
from jaxinterp.features.gradients import (
    LogitDiff,
    cosine_by_layer,
    from_metric,
    gradient_x_activation,
    integrated_gradients,
    mean_gradient_directions,
    site_gradients,
    token_attribution,
)
from jaxinterp.features.probes import train_probes
from jaxinterp.loading.bundled import smollm2_path
from jaxinterp.metrics import logit_diff
from jaxinterp.viz.probes import probe_layer_curves
from jaxinterp.viz.token_attribution import token_attribution_text

QUICK = os.environ.get("JAXINTERP_QUICK") == "1"
PROMPT = "The Eiffel Tower is in the city of"
CORRUPT = "The Colosseum is in the city of"


def main():
    os.makedirs("out", exist_ok=True)
    t0 = time.time()
    # QUICK: every code path, on the first layers
    model, tok = ji.load(smollm2_path(), n_layers=6 if QUICK else None), ji.load_tokenizer(smollm2_path())
    tokens = jnp.asarray(tok.encode(PROMPT))
    paris, london = tok.to_single_token(" Paris"), tok.to_single_token(" London")
    logits = model(tokens)
    print(f"logit(' Paris') - logit(' London') = {float(logits[-1, paris] - logits[-1, london]):.3f}")

    n_steps = 8 if QUICK else 64
    neutral = tok.to_single_token(" the")
    print(
        f"== 1. contrastive token attribution (' Paris' vs ' London'); IG baseline: ' the' at every position, {n_steps} Gauss nodes"
    )
    ig = token_attribution(model, tokens, paris, london, method="ig", baseline=neutral, n_steps=n_steps)
    gxa = token_attribution(model, tokens, paris, london, method="gxa")
    sal = token_attribution(model, tokens, paris, london, method="saliency")
    strs = tok.to_str_tokens(PROMPT)
    for s, a, b, c in zip(strs, ig.scores, gxa.scores, sal.scores):
        print(f"   {s!r:>10}  IG {a:+7.3f}   grad x input {b:+7.3f}   saliency {c:6.3f}")
    err = abs(ig.scores.sum() - (ig.value - ig.baseline_value))
    print(
        f"   IG completeness: sum {ig.scores.sum():+.4f} vs f(x) - f(x0) = {ig.value:+.4f} - {ig.baseline_value:+.4f}"
        f" = {ig.value - ig.baseline_value:+.4f}; |error| {err:.2e}"
    )
    token_attribution_text(
        strs, ig.scores, f"IG: ' Paris' vs ' London' (sum {ig.scores.sum():+.2f})", "out/gradients_tokens.png"
    )

    mid = model.cfg.n_layers // 2 - 3  # 12 of SmolLM2's 30 layers
    print(f"== 2. integrated gradients at blocks.{mid}.hook_resid_pre, baseline: the corrupted prompt's activations")
    corrupt = jnp.asarray(tok.encode(CORRUPT))
    assert corrupt.shape == tokens.shape, "the two prompts must have the same number of tokens"
    _, cc = model.run_with_cache(corrupt, names=["resid_pre"])
    obj = LogitDiff(jnp.asarray(paris), jnp.asarray(london), jnp.asarray(len(tokens) - 1))
    r = integrated_gradients(model, tokens, obj, f"blocks.{mid}.hook_resid_pre", cc["resid_pre"][mid], n_steps=n_steps)
    per_pos = r.attributions.sum(-1)
    print("   per position: " + ", ".join(f"{s!r}: {v:+.2f}" for s, v in zip(strs, per_pos)))
    print(
        f"   completeness: sum {r.attributions.sum():+.4f} vs {r.value - r.baseline_value:+.4f}; |error| {r.completeness_error:.2e}"
    )

    print("== 3. gradient x (activation - other run's) vs attribution_patch (denoising), resid_pre and mlp.post")
    metric = logit_diff(paris, london)
    ap = attribution_patch(
        model,
        tokens,
        corrupt,
        metric,
        sites=("resid_pre", "mlp.post"),
        over={"resid_pre": ("layer", "pos", "d_model"), "mlp.post": ("layer", "pos", "neuron")},
    )
    _, clean_acts, _ = site_gradients(model, tokens, from_metric(metric), ("resid_pre", "mlp.post"))
    gxa_sites = gradient_x_activation(
        model, corrupt, from_metric(metric), ("resid_pre", "mlp.post"), baseline=clean_acts
    )
    for s in ("resid_pre", "mlp.post"):
        a, b = -np.asarray(gxa_sites[s]), np.asarray(ap[s].values)
        print(f"   {s}: max |difference| {np.abs(a - b).max():.2e} (max |score| {np.abs(b).max():.2e})")

    print("== 4. gradient direction vs probe direction for sentiment (resid_post, last token)")
    n = 40 if QUICK else 240
    ds = load_sae_probes("92_glue_sst2").sample(n, seed=1)
    prompts = [p.rstrip() for p in ds.prompts]
    acts = collect_activations(model, tok, prompts, "resid_post", "last", batch_size=32, cache_dir="out/acts")
    # QUICK: a smaller l2 grid and fewer Newton steps (each step solves a d_model + 1 system per layer and l2).
    l2 = (1e-1, 1.0) if QUICK else (1e-2, 1e-1, 1.0, 10.0)
    probes = train_probes(acts.acts, ds.targets, "binary", l2=l2, optimizer="newton", n_steps=6 if QUICK else 12)
    probe_dirs = np.asarray(probes.probe.direction()[..., 0])  # [layer, d_model]: towards "positive"
    m = 16 if QUICK else 96
    toks, mask = tok.to_tokens_and_mask(prompts[:m])
    last = mask.sum(1) - 1
    good, bad = tok.to_single_token(" good"), tok.to_single_token(" bad")
    objs = LogitDiff(jnp.full(m, good), jnp.full(m, bad), jnp.asarray(last))
    grad_dirs = mean_gradient_directions(model, toks, mask, objs, last, "resid_post")
    cos = cosine_by_layer(grad_dirs, probe_dirs)
    rng = np.random.default_rng(0)
    null = np.abs(cosine_by_layer(rng.normal(size=probe_dirs.shape), probe_dirs)).mean()
    print("   probe test accuracy by layer: " + " ".join(f"{v:.2f}" for v in probes.test()))
    print(
        "   cosine(mean grad of logit ' good' - ' bad', probe direction) by layer: "
        + " ".join(f"{c:+.2f}" for c in cos)
    )
    print(f"   random-direction |cosine| ~ {null:.3f}; max cosine {cos.max():+.2f} at layer {int(np.argmax(cos))}")
    probe_layer_curves(
        {"sentiment: gradient vs probe": {"cosine(grad, probe)": cos, "probe test accuracy": probes.test()}},
        {"sentiment: gradient vs probe": "cosine / accuracy"},
        "",
        "out/gradients_vs_probe.png",
    )
    print(f"wrote out/gradients_tokens.png, out/gradients_vs_probe.png ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    ji.enable_compilation_cache()  # a second run loads its compiled programs from disk
    main()
