"""`interventions=` in activation and attribution patching: applied first in every run
(e.g. a spliced SAE), checked against the model run directly with the same edits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import Add, ModelConfig, Patch, Scale
from jaxinterp.causal.attribution import attribution_patch
from jaxinterp.causal.patching import Fast, activation_patch
from jaxinterp.core.errors import PatchingError
from jaxinterp.core.metrics import logit_diff
from jaxinterp.toy import random_model

CFG = ModelConfig(
    d_model=16,
    n_layers=2,
    n_heads=2,
    d_head=8,
    d_vocab=20,
    n_ctx=8,
    d_mlp=32,
    positional="rotary",
    normalization="rmsnorm",
    gated_mlp=True,
    act_fn="silu",
)
CLEAN = jnp.array([1, 4, 7, 2, 9])
CORRUPT = jnp.array([1, 4, 3, 2, 9])
METRIC = logit_diff(5, 6)


@pytest.fixture(scope="module")
def setup():
    model = random_model(CFG, 3, std=0.3)
    delta = jnp.asarray(np.random.default_rng(0).normal(size=CFG.d_model), jnp.float32)
    extra = [Add("resid_pre", delta, layer=1), Scale("mlp_out", 0.5)]
    return model, extra


def test_activation_patch_applies_them_in_every_run(setup):
    model, extra = setup
    got = np.asarray(activation_patch(model, CLEAN, CORRUPT, METRIC, "attn_out", interventions=extra))
    source = model.run_with_cache(CLEAN, names=["attn_out"], interventions=extra)[1]["attn_out"]
    want = np.array(
        [
            [float(METRIC(model(CORRUPT, [*extra, Patch("attn_out", source, layer=l, pos=p)]))) for p in range(5)]
            for l in range(CFG.n_layers)
        ]
    )
    np.testing.assert_allclose(got, want, atol=1e-5)
    without = np.asarray(activation_patch(model, CLEAN, CORRUPT, METRIC, "attn_out"))
    assert np.abs(without - got).max() > 1e-3  # the interventions matter here


def test_fast_engine_refuses_them(setup):
    model, extra = setup
    with pytest.raises(PatchingError, match="plain"):
        activation_patch(model, CLEAN, CORRUPT, METRIC, engine=Fast(), interventions=extra)
    with pytest.raises(PatchingError, match="shortcuts"):
        activation_patch(model, CLEAN, CORRUPT, METRIC, shortcuts=True, interventions=extra)


def test_attribution_patch_applies_them_in_every_run(setup):
    model, extra = setup
    got = np.asarray(
        attribution_patch(model, CLEAN, CORRUPT, METRIC, sites=("resid_pre",), interventions=extra)["resid_pre"]
    )
    cache = lambda tokens: model.run_with_cache(tokens, names=["resid_pre"], interventions=extra)[1]["resid_pre"]
    clean, corrupt = cache(CLEAN), cache(CORRUPT)

    def metric_of(delta):
        return METRIC(model.forward(CORRUPT, [*extra, Add("resid_pre", delta)])[0])

    grad = jax.grad(metric_of)(jnp.zeros_like(corrupt))
    want = np.asarray((grad * (clean - corrupt)).sum(-1))  # [layer, pos]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
