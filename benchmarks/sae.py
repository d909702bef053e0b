"""SAE benchmark: (a) activation generation and (b) the SAE training step.

    PYTHONPATH=. python benchmarks/sae.py            # SmolLM2-135M shapes; 16k-latent TopK SAE, batch 4096
    PYTHONPATH=. python benchmarks/sae.py --quick    # small smoke configuration (seconds)

(a) `jaxinterp.features.sae.model_activations`: the model (SmolLM2-135M's shapes,
    random weights: the FLOPs are the same) over 8 contexts of 128 tokens per compiled
    call, keeping ``resid_pre`` of layer 15. FLOPs counted from the shapes of what
    that call computes: layers 0..15 only (``model.run(layers=(0, 16), readout=None)``;
    the ``resid_pre`` cache of layer 15 is read in block 15's scan step), every
    matmul (q, k, v, o, the gated MLP, attention scores and mixing over all key
    positions, as the masked attention computes them), no unembedding. An earlier
    version counted all 30 layers and the unembedding (2.4x too many FLOPs), which
    reported 113% of the matmul rate.
(b) `jaxinterp.features.sae.train.train_chunk`: TopK SAE (d_in 576, d_sae 16384,
    k 32) on batches of 4096 activations, several optimizer steps per compiled scan
    (Adam, decoder-norm projection, dead-latent counters). Useful FLOPs per step: the
    encoder and decoder forward (2 matmuls), the decoder's two backward matmuls and the
    encoder's weight gradient (no gradient is needed for the input): 5 x 2 B d_in d_sae.

Each rate is shown as a share of this machine's fp32 matmul throughput (a jitted
2048^3 matmul), measured in the same run just before and after; the machine is shared,
so medians of repeats are reported and ratios matter more than absolute numbers.
`sae-lens` is not timed side by side: it pulls transformer-lens and its own torch
stack, too heavy to install beside the pinned CPU torch (see docs/sae.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jaxinterp as ji  # noqa: E402
from jaxinterp.features import sae as S  # noqa: E402
from jaxinterp.features.sae.train import TrainLoop, train_chunk  # noqa: E402

SMOLLM2 = ji.ModelConfig(
    d_model=576,
    n_layers=30,
    n_heads=9,
    n_kv_heads=3,
    d_head=64,
    d_vocab=49152,
    n_ctx=2048,
    d_mlp=1536,
    act_fn="silu",
    normalization="rmsnorm",
    norm_eps=1e-5,
    positional="rotary",
    rotary_base=100000.0,
    gated_mlp=True,
    tied_embeddings=True,
    family="llama",
)
TINY = ji.ModelConfig(
    d_model=64,
    n_layers=4,
    n_heads=4,
    n_kv_heads=2,
    d_head=16,
    d_vocab=512,
    n_ctx=128,
    d_mlp=128,
    act_fn="silu",
    normalization="rmsnorm",
    positional="rotary",
    gated_mlp=True,
    family="llama",
)


def matmul_gflops(repeats: int = 7) -> float:
    a = jnp.asarray(np.random.default_rng(0).standard_normal((2048, 2048), np.float32))
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        runs.append(time.perf_counter() - t)
    return 2 * 2048**3 / statistics.median(runs) / 1e9


def timed(fn, repeats: int) -> tuple[float, float]:
    """(first call incl. compile, median of the next ``repeats``) in seconds."""
    t = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        runs.append(time.perf_counter() - t)
    return first, statistics.median(runs)


def forward_flops(cfg, pos: int, n_layers: int | None = None, unembed: bool = True) -> float:
    """Matmul FLOPs per token of a forward pass through the first ``n_layers`` layers
    (all by default), plus the unembedding when ``unembed``."""
    d, h, kv, dh = cfg.d_model, cfg.n_heads, cfg.n_kv_heads or cfg.n_heads, cfg.d_head
    proj = d * (h * dh) * 2 + d * (kv * dh) * 2  # q, o and k, v
    mlp = d * cfg.d_mlp * (3 if cfg.gated_mlp else 2)
    attn = 2 * h * dh * pos  # scores and mixing over every key position
    n_layers = cfg.n_layers if n_layers is None else n_layers
    return n_layers * 2 * (proj + mlp + attn) + (2 * d * cfg.d_vocab if unembed else 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    quick = args.quick or os.environ.get("JAXINTERP_QUICK") == "1"
    cfg = TINY if quick else SMOLLM2
    layer = 2 if quick else 15
    batch_ctx, pos = 8, (32 if quick else 128)
    d_sae, batch, k, steps = (1024, 512, 16, 4) if quick else (16384, 4096, 32, 2)

    mm0 = matmul_gflops()
    print(f"fp32 matmul (jitted 2048^3): {mm0:.1f} GFLOP/s")

    # (a) activation generation
    model = ji.Transformer.init(cfg, jax.random.key(0))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, cfg.d_vocab, (batch_ctx, pos)), jnp.int32)
    names = frozenset({"resid_pre"})
    first, steady = timed(lambda: S.model_activations(model, tokens, names, layer), 2)
    n_tok = batch_ctx * pos
    flops_a = forward_flops(cfg, pos, n_layers=layer + 1, unembed=False) * n_tok  # what model_activations runs
    rate_a = flops_a / steady / 1e9

    # (b) SAE training step
    sae = S.init_sae("topk", S.SAEConfig(cfg.d_model, d_sae, layer=layer), jax.random.key(1), k=k)
    tcfg = S.TrainConfig(n_steps=1000, batch_size=batch, lr=4e-4, aux_k=0)
    loop = TrainLoop(tcfg, 0)
    import equinox as eqx

    opt = loop.optimizer.init(eqx.filter(sae, eqx.is_inexact_array))
    xs = jax.random.normal(jax.random.key(2), (steps, batch, cfg.d_model))
    state = (sae, opt, jnp.zeros(d_sae, jnp.int32), jnp.asarray(0, jnp.int32), jnp.asarray(0.0))
    first_b, steady_b = timed(lambda: train_chunk(loop, *state, xs, xs), 2)
    per_step = steady_b / steps
    flops_b = 5 * 2 * batch * cfg.d_model * d_sae
    rate_b = flops_b / per_step / 1e9

    # (b') the same with AuxK active (every latent counted dead: the worst case)
    loop_aux = TrainLoop(S.TrainConfig(n_steps=1000, batch_size=batch, lr=4e-4, dead_tokens=0), cfg.d_model // 2)
    state_aux = (sae, opt, jnp.zeros(d_sae, jnp.int32), jnp.asarray(0, jnp.int32), jnp.asarray(0.0))
    _, steady_aux = timed(lambda: train_chunk(loop_aux, *state_aux, xs, xs), 2)

    mm1 = matmul_gflops()
    mm = (mm0 + mm1) / 2
    print(f"fp32 matmul after: {mm1:.1f} GFLOP/s (mean {mm:.1f} used below)")
    print()
    print("| workload | shape | compile+1st s | steady s | tokens/s | GFLOP/s | share of matmul |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| (a) activations, {'tiny' if quick else 'SmolLM2-135M'} layers 0..{layer}, resid_pre {layer} | {batch_ctx} x {pos} tokens | "
        f"{first:.2f} | {steady:.3f} | {n_tok / steady:.0f} | {rate_a:.1f} | {rate_a / mm:.0%} |"
    )
    print(
        f"| (b) TopK SAE train step (k={k}) | d_in {cfg.d_model}, d_sae {d_sae}, batch {batch} | {first_b:.2f} | "
        f"{per_step:.3f} | {batch / per_step:.0f} | {rate_b:.1f} | {rate_b / mm:.0%} |"
    )
    print(
        f"| (b') same + AuxK on all latents | k_aux {cfg.d_model // 2} | - | {steady_aux / steps:.3f} | "
        f"{batch * steps / steady_aux:.0f} | {flops_b * steps / steady_aux / 1e9:.1f} | {flops_b * steps / steady_aux / 1e9 / mm:.0%} |"
    )


if __name__ == "__main__":
    main()
