"""Every `ModelConfig` feature flag, flipped one at a time on a tiny base model: the fast
sweep engine and a Python loop of single patches agree (and the plain engine, on the flags
`PLAIN_FLAGS` names).

The fast engine runs the model's blocks on packed tokens with its own attention module;
both share one attention core (`jaxinterp.model.attention.attend`). A flag that one path
honoured and the other did not would show here. The loop is written independently of
`jaxinterp.causal.patching`: one `Patch` per cell through the model's own forward pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import ModelConfig, Patch
from jaxinterp.causal.patching import activation_patch
from jaxinterp.core.metrics import logit_diff
from jaxinterp.toy import random_model

N_POS = 6
BASE = dict(d_model=16, n_layers=2, n_heads=4, d_head=4, d_vocab=24, n_ctx=12, d_mlp=32, act_fn="gelu_new")

FLAGS = {
    "base": {},
    "rotary": dict(positional="rotary"),
    "partial_rotary": dict(positional="rotary", rotary_dim=2),
    "rope_scaling_linear": dict(positional="rotary", rope_scaling=(("rope_type", "linear"), ("factor", 2.0))),
    "no_positions": dict(positional="none"),
    "gqa": dict(n_kv_heads=2),
    "mqa": dict(n_kv_heads=1),
    "rmsnorm": dict(normalization="rmsnorm"),
    "norm_weight_offset": dict(normalization="rmsnorm", norm_weight_offset=1.0),
    "no_norm_bias": dict(norm_bias=False),
    "parallel_attn_mlp": dict(parallel_attn_mlp=True),
    "gated_mlp": dict(gated_mlp=True, act_fn="silu"),
    "relu": dict(act_fn="relu"),
    "attn_only": dict(attn_only=True, d_mlp=0),
    "moe": dict(n_experts=3, experts_per_token=2, gated_mlp=True, act_fn="silu"),
    "moe_unnormalized": dict(n_experts=3, experts_per_token=2, gated_mlp=True, act_fn="silu", moe_renormalize=False),
    "attn_scale": dict(attn_scale=0.3),
    "attn_logit_softcap": dict(attn_logit_softcap=2.0),
    "final_logit_softcap": dict(final_logit_softcap=3.0),
    "sliding_window": dict(layer_windows=(2, None)),
    "qkv_bias": dict(qkv_bias=True),
    "o_bias": dict(o_bias=True),
    "mlp_bias": dict(mlp_bias=True),
    "unembed_bias": dict(unembed_bias=True),
    "embed_scale": dict(embed_scale=4.0),
    "post_attn_norm": dict(post_attn_norm=True),
    "post_mlp_norm": dict(post_mlp_norm=True),
    "qk_norm_head": dict(qk_norm="head", positional="rotary", n_kv_heads=2),
    "qk_norm_projection": dict(qk_norm="projection", positional="rotary", n_kv_heads=2),
    "rotary_local_base": dict(
        positional="rotary",
        layer_windows=(3, None),
        rotary_local_base=50.0,
        rope_scaling=(("rope_type", "linear"), ("factor", 2.0)),
    ),
    "no_pre_norm": dict(pre_norm=False, post_attn_norm=True, post_mlp_norm=True, normalization="rmsnorm"),
    "rotary_interleaved": dict(positional="rotary", rotary_dim=2, rotary_interleaved=True),
    # N_POS = 6 tokens past an original context of 4: the long factors and the attention factor
    # (YaRN differs only in the frequencies and factor rotary_tables computes: HF parity covers it).
    "rope_longrope": dict(
        positional="rotary",
        rope_scaling=(
            ("long_factor", (3.0, 5.0)),
            ("original_max_position_embeddings", 4),
            ("rope_type", "longrope"),
            ("short_factor", (1.0, 2.0)),
        ),
    ),
}


# The plain engine is a `vmap` of the model's own forward pass, the same code path as the loop
# below, so a flag cannot split them; it is compared on the flags whose code changes under
# `vmap` (expert routing, windows, the parallel block) and the base model. Every flag runs
# against the fast engine, whose packed blocks re-implement the forward pass.
PLAIN_FLAGS = ("base", "moe", "sliding_window", "parallel_attn_mlp", "rope_longrope")


def loop_reference(model, clean, corrupt, metric):
    """``[layer, pos]``: the metric of the corrupted run with clean ``resid_pre`` patched in at one cell."""
    _, cache = model.run_with_cache(clean, names=["resid_pre"])
    source = cache["resid_pre"]

    @jax.jit
    def one(model, layer, pos):
        return metric(model.forward(corrupt, [Patch("resid_pre", source, layer=layer, pos=pos)])[0])

    return np.array([[float(one(model, layer, pos)) for pos in range(N_POS)] for layer in range(model.cfg.n_layers)])


@pytest.mark.parametrize("name", list(FLAGS))
def test_fast_equals_plain_equals_loop(name):
    cfg = ModelConfig(**{**BASE, **FLAGS[name]})
    model = random_model(cfg, seed=len(name), std=0.3, norm_std=0.1)
    rng = np.random.default_rng(0)
    clean = rng.integers(0, cfg.d_vocab, N_POS)
    corrupt = clean.copy()
    corrupt[1] = (clean[1] + 5) % cfg.d_vocab
    corrupt[3] = (clean[3] + 7) % cfg.d_vocab
    clean, corrupt = jnp.asarray(clean), jnp.asarray(corrupt)
    metric = logit_diff(3, 8)
    expected = loop_reference(model, clean, corrupt, metric)
    assert np.ptp(expected) > 1e-3, "the sweep must move the metric for the comparison to mean anything"
    fast = np.asarray(activation_patch(model, clean, corrupt, metric, "resid_pre", method="fast"))
    np.testing.assert_allclose(fast, expected, atol=2e-5, rtol=1e-4)
    if name in PLAIN_FLAGS:
        plain = np.asarray(activation_patch(model, clean, corrupt, metric, "resid_pre", method="plain"))
        np.testing.assert_allclose(plain, expected, atol=2e-5, rtol=1e-4)
