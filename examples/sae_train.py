"""Train ReLU, TopK, BatchTopK and JumpReLU SAEs (and one transcoder) on SmolLM2-135M.

    PYTHONPATH=. nice -n 10 .venv/bin/python examples/sae_train.py      # JAXINTERP_QUICK=1: ~30 s

1. The bundled Shakespeare corpus is cut into 128-token contexts; an activation store
   runs SmolLM2 in compiled batches and keeps ``resid_pre`` of layer 15 (BOS dropped).
2. Each variant is trained on the same activations (shuffled buffers, seeded), two
   sparsity settings each (the FVU / L0 frontier); the first setting targets L0 ~ 32-64.
3. On held-out contexts: L0, FVU, dead and dense fractions, CE loss recovered when
   spliced in (zero- and mean-ablation baselines), KL to the original, and the largest
   logit change when spliced with its error term (which should be ~0).
4. One transcoder (``ln2.normalized`` -> ``mlp_out`` of layer 15), same metrics.

Writes ``out/sae_frontier.png``, ``out/sae_results.json`` and the trained SAEs under
``out/saes/``. The budget is small (2 shared CPU cores): tens of thousands of tokens,
a few hundred steps, so FVU is far from a production SAE's; the comparison between
variants at equal budget is the point.
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

import jaxinterp as ji
from jaxinterp.features import sae as S
from jaxinterp.loading import bundled

QUICK = os.environ.get("JAXINTERP_QUICK") == "1"
OUT = "out"

if QUICK:  # a tiny random model with SmolLM2's tokenizer: exercises every step in seconds
    LAYER, D_SAE, CTX, N_TRAIN, N_EVAL, PER_FILL, BATCH, STEPS, K = 1, 256, 32, 32, 4, 16, 128, 40, 16
else:
    LAYER, D_SAE, CTX, N_TRAIN, N_EVAL, PER_FILL, BATCH, STEPS, K = 15, 2304, 128, 512, 8, 64, 256, 1200, 32


def _knob(name: str, default: int) -> int:
    """An integer setting overridable from the environment (``SAE_CONTEXTS=512`` etc.)."""
    return int(os.environ.get(name, default))


# Environment knobs for the real run (ignored in quick mode): SAE_CONTEXTS (training
# contexts), SAE_EVAL (held-out contexts), SAE_D_SAE, SAE_STEPS, SAE_BATCH, SAE_PER_FILL;
# SAE_ONLY=relu,jumprelu,transcoder trains only those (results merge into
# out/sae_results.json); SAE_ACTS_ONLY=1 caches the activations and stops.
if not QUICK:
    N_TRAIN, N_EVAL, D_SAE = _knob("SAE_CONTEXTS", N_TRAIN), _knob("SAE_EVAL", N_EVAL), _knob("SAE_D_SAE", D_SAE)
    STEPS, BATCH, PER_FILL = _knob("SAE_STEPS", STEPS), _knob("SAE_BATCH", BATCH), _knob("SAE_PER_FILL", PER_FILL)
ONLY = [s for s in os.environ.get("SAE_ONLY", "").split(",") if s]
ACTS_ONLY = os.environ.get("SAE_ACTS_ONLY") == "1"

# Per frontier point: (hyperparameters, initial sparsity coefficient, target L0, TrainConfig
# overrides). TopK variants set L0 with k; ReLU and JumpReLU steer their coefficient to the
# target during training (TrainConfig.target_l0, a log-ratio controller): ReLU starts from a
# small L1 coefficient that the controller raises (a large one collapsed L0 before the
# controller could react), JumpReLU's thresholds learn 30x faster than the other weights
# (TrainConfig.threshold_lr_scale), or its L0 cannot follow the controller. The first point
# of each variant is the matched-L0 one.
SETTINGS = {
    "relu": [({}, 0.5, K, {"target_l0_rate": 0.02}), ({}, 0.25, 2 * K, {"target_l0_rate": 0.02})],
    "topk": [({"k": K}, 0.0, None, {}), ({"k": 2 * K}, 0.0, None, {})],
    "batchtopk": [({"k": K}, 0.0, None, {})],
    "jumprelu": [({"bandwidth": 0.05}, 0.3, K, {"threshold_lr_scale": 30.0})],
}
if QUICK:  # one point per variant
    SETTINGS = {k: v[:1] for k, v in SETTINGS.items()}
if ONLY:
    SETTINGS = {k: v for k, v in SETTINGS.items() if k in ONLY}
# SAE_POINTS=0 (or 1, or 0,1): which frontier points of each variant to train.
POINTS = [int(p) for p in os.environ.get("SAE_POINTS", "0,1").split(",") if p]


def load():
    tok = ji.load_tokenizer(bundled.smollm2_path())
    if QUICK:
        cfg = ji.ModelConfig(
            d_model=64,
            n_layers=2,
            n_heads=4,
            d_head=16,
            n_kv_heads=2,
            d_vocab=tok.vocab_size,
            n_ctx=64,
            d_mlp=128,
            normalization="rmsnorm",
            positional="rotary",
            gated_mlp=True,
            act_fn="silu",
            family="llama-like",
        )
        return ji.Transformer.init(cfg, jax.random.key(0), std=0.1), tok
    return ji.load(bundled.smollm2_path()), tok


def train(kind, hyper, coefficient, target, cfg, store, seed=0, **overrides):
    # ReLU starts with unit-norm decoder rows, not Anthropic's 0.1: with a few hundred
    # Adam steps the rows cannot grow to the data's scale in time (FVU stayed ~1).
    init = {"threshold": 0.1} if kind == "jumprelu" else {"decoder_norm": 1.0} if kind == "relu" else {}
    sae = S.init_sae(kind, cfg, jax.random.key(seed), **init, **hyper)
    tcfg = S.TrainConfig(
        n_steps=STEPS,
        batch_size=BATCH,
        lr=1e-3 if QUICK else 5e-4,
        lr_warmup=STEPS // 10,
        sparsity_coefficient=coefficient,
        sparsity_warmup=STEPS // 4,
        dead_tokens=STEPS * BATCH // 4,
        target_l0=target,
        **overrides,
    )
    t = time.time()
    result = S.train_sae(sae, store, tcfg, progress=not QUICK)
    return result, time.time() - t


def main():
    os.makedirs(OUT, exist_ok=True)
    t0 = time.time()
    model, tok = load()
    contexts = S.token_contexts(tok, S.corpus_texts(bundled.shakespeare_dir()), CTX, max_contexts=N_TRAIN + N_EVAL)
    train_ctx, eval_ctx = contexts[:N_TRAIN], contexts[N_TRAIN:]
    d = model.cfg.d_model
    print(
        f"model {'tiny random' if QUICK else 'SmolLM2-135M'}, layer {LAYER}, d_model {d}, d_sae {D_SAE}, "
        f"{N_TRAIN} train / {N_EVAL} eval contexts of {CTX} tokens"
    )

    # One pass of the model gives all three sites (the SAE's and the transcoder's), kept on
    # disk so a rerun skips it; S.ModelStore streams the same activations fill by fill.
    sites = ("resid_pre", "ln2.normalized", "mlp_out")
    cache_path = os.path.join(OUT, f"sae_acts_{'quick' if QUICK else 'smollm2'}_L{LAYER}_{N_TRAIN}x{CTX}.npz")
    if os.path.exists(cache_path):
        with np.load(cache_path) as f:
            acts, gen_s = {s: f[s] for s in sites}, float(f["seconds"])
    else:
        t = time.time()
        parts = []
        for i in range(0, N_TRAIN, 8):
            parts.append(S.model_activations(model, jax.numpy.asarray(train_ctx[i : i + 8]), frozenset(sites), LAYER))
            if not QUICK and (i // 8) % 8 == 7:
                print(f"  activations: {i + 8}/{N_TRAIN} contexts, {time.time() - t:.0f} s", flush=True)
        acts = {
            s: np.concatenate([np.asarray(p[s][:, 1:]).reshape(-1, d) for p in parts]) for s in sites
        }  # BOS dropped
        gen_s = time.time() - t
        np.savez(cache_path, seconds=gen_s, **acts)
    n_tok = acts["resid_pre"].shape[0]
    print(f"activations: {n_tok} tokens x 3 sites in {gen_s:.1f} s ({n_tok / gen_s:.0f} tokens/s)", flush=True)
    if ACTS_ONLY:
        return
    fill = (CTX - 1) * PER_FILL
    store = S.ArrayStore(acts["resid_pre"], fill_size=fill, seed=0)

    cfg = S.SAEConfig(d_in=d, d_sae=D_SAE, site="resid_pre", layer=LAYER)
    results, frontier = {}, {}
    for kind, settings in SETTINGS.items():
        for j, (hyper, coef, target, overrides) in enumerate(settings):
            if j not in POINTS:
                continue
            variant_cfg = S.SAEConfig(**{**cfg.to_dict(), "unit_norm_decoder": kind != "relu"})
            result, secs = train(kind, hyper, coef, target, variant_cfg, store, **overrides)
            if j == 0:
                m = S.evaluate(model, result.sae, eval_ctx)
                m["train_s"] = secs
                results[kind] = m
                S.save_sae(result.sae, os.path.join(OUT, "saes", f"resid_pre_{LAYER}_{kind}"))
            else:
                m = S.evaluate_reconstruction(model, result.sae, eval_ctx)
                S.save_sae(result.sae, os.path.join(OUT, "saes", f"resid_pre_{LAYER}_{kind}_{j}"))
            frontier.setdefault(kind, []).append((m["l0"], m["fvu"]))
            setting = (
                hyper.get("k")
                and f"k={hyper['k']}"
                or f"target L0 {target}, final coef {result.history['coefficient'][-1]:.3g}"
            )
            print(
                f"  {kind:9s} {setting}: held-out L0 {m['l0']:.1f}  FVU {m['fvu']:.3f} "
                f"(w/o outliers {m['fvu_no_outliers']:.3f})  (train {secs:.0f} s)",
                flush=True,
            )

    # A transcoder: ln2.normalized -> mlp_out of the same layer.
    if ONLY and "transcoder" not in ONLY:
        return finish(results, frontier, n_tok, gen_s, t0)
    tc_store = S.ArrayStore(acts["ln2.normalized"], acts["mlp_out"], fill_size=fill, seed=0)
    tc_cfg = S.SAEConfig(
        d_in=d, d_sae=D_SAE, site="ln2.normalized", target_site="mlp_out", layer=LAYER, apply_b_dec_to_input=False
    )
    tc, secs = train("topk", {"k": K}, 0.0, None, tc_cfg, tc_store)
    results["transcoder (topk)"] = {**S.evaluate(model, tc.sae, eval_ctx), "train_s": secs}
    S.save_sae(tc.sae, os.path.join(OUT, "saes", f"transcoder_{LAYER}_topk"))
    finish(results, frontier, n_tok, gen_s, t0)


def finish(results, frontier, n_tok, gen_s, t0):
    """Print the table, draw the frontier, write the JSON (merged into an earlier run's
    file when SAE_ONLY trained a subset)."""
    path = os.path.join(OUT, "sae_results.json")
    if ONLY and os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        results = {**old["results"], **results}
        for kind, points in old["frontier"].items():  # earlier runs' points stay on the frontier
            frontier[kind] = sorted({tuple(p) for p in points} | set(frontier.get(kind, [])))

    print()
    print(
        f"| SAE (layer {LAYER}) | L0 | FVU | dead | dense | CE orig | CE spliced | CE rec. (zero) | CE rec. (mean) | KL | max |dlogit| w/ error | train s |"  # noqa: E501
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, m in results.items():
        print(
            f"| {name} | {m['l0']:.1f} | {m['fvu']:.3f} | {m['dead_fraction']:.3f} | {m['dense_fraction']:.3f} | "
            f"{m['ce_original']:.3f} | {m['ce_spliced']:.3f} | {m['ce_recovered_zero']:.3f} | {m['ce_recovered_mean']:.3f} | "
            f"{m['kl']:.3f} | {m['error_term_max_abs_logit_diff']:.1e} | {m['train_s']:.0f} |"
        )

    from jaxinterp.viz.sae import fvu_l0_frontier

    fvu_l0_frontier(
        frontier,
        title=f"SAEs on {'a tiny random model' if QUICK else 'SmolLM2-135M'} resid_pre {LAYER}",
        path=os.path.join(OUT, "sae_frontier.png"),
    )
    with open(path, "w") as f:
        json.dump(
            {"results": results, "frontier": frontier, "tokens": n_tok, "activation_tokens_per_s": n_tok / gen_s},
            f,
            indent=1,
        )
    print(f"\nwrote {OUT}/sae_frontier.png, {OUT}/sae_results.json; total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    ji.enable_compilation_cache()  # a second run loads its compiled programs from disk
    main()
