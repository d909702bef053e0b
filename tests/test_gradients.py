"""Gradient attributions against references: the completeness axiom of integrated gradients
(an identity of calculus, not of the code), attribution patching's independent
implementation (`jaxinterp.attribution.attribution_patch`), and finite differences."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.attribution import attribution_patch
from jaxinterp.features.gradients import (
    GradientError,
    Logit,
    LogitDiff,
    ProbeReadout,
    from_metric,
    gradient_x_activation,
    integrated_gradients,
    site_gradients,
    token_attribution,
)
from jaxinterp.features.probes import LinearProbe
from jaxinterp.metrics import logit_diff
from jaxinterp.toy import random_model

jax.config.update("jax_default_matmul_precision", "highest")

CLEAN = jnp.array([1, 5, 7, 9, 3, 11])
CORRUPT = jnp.array([1, 5, 8, 9, 2, 11])


@pytest.fixture(scope="module")
def model():
    cfg = ji.ModelConfig(
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        d_head=8,
        d_mlp=48,
        d_vocab=50,
        n_ctx=16,
        act_fn="silu",
        normalization="rmsnorm",
        positional="rotary",
        gated_mlp=True,
        family="llama",
    )
    return random_model(cfg, seed=0, std=0.3, norm_std=0.2)


def test_ig_completeness(model):
    obj = LogitDiff(jnp.asarray(4), jnp.asarray(6), jnp.asarray(5))
    _, corrupt = model.run_with_cache(CORRUPT, names=["embed"])
    for site, baseline in (("embed", corrupt["embed"]), ("blocks.1.hook_resid_pre", 0.5)):
        r = integrated_gradients(model, CLEAN, obj, site, baseline, n_steps=64)
        assert abs(r.value - r.baseline_value) > 0.1  # a non-trivial difference to explain
        assert r.completeness_error < 1e-3, (site, r.completeness_error)
    # The objective at the input is the model's own logit difference.
    logits = model(CLEAN)
    assert r.value == pytest.approx(float(logits[5, 4] - logits[5, 6]), abs=1e-4)


def test_gxa_equals_attribution_patching(model, caplog):
    metric = logit_diff(4, 6)
    ap = attribution_patch(
        model,
        CLEAN,
        CORRUPT,
        metric,
        sites=("resid_pre", "mlp.post"),
        over={"resid_pre": ("layer", "pos", "d_model"), "mlp.post": ("layer", "pos", "neuron")},
    )
    _, clean_acts, _ = site_gradients(model, CLEAN, from_metric(metric), ("resid_pre", "mlp.post"))
    # grad at the corrupted run x (corrupted - clean) = -(attribution patching, denoising).
    # A second objective from the same kind of metric reuses site_gradients' compiled
    # program (from_metric's objectives are pytrees, not fresh closures).
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        gxa = gradient_x_activation(
            model, CORRUPT, from_metric(logit_diff(4, 6)), ("resid_pre", "mlp.post"), baseline=clean_acts
        )
    assert not [m for m in (r.getMessage() for r in caplog.records) if "Compiling" in m and "_site_grads_jit" in m]
    for s in ("resid_pre", "mlp.post"):
        np.testing.assert_allclose(-np.asarray(gxa[s]), np.asarray(ap[s].values), atol=1e-5, rtol=1e-4)


def test_gradients_match_finite_differences(model):
    rng = np.random.default_rng(0)
    probe = LinearProbe(
        jnp.asarray(rng.normal(size=(32, 1)), jnp.float32), jnp.zeros(1), jnp.zeros(32), jnp.ones(32), "regression"
    )
    obj = ProbeReadout(probe, jnp.asarray(4), "resid_post", 1)
    value, acts, grads = site_gradients(model, CLEAN, obj, ("resid_post", "resid_pre"))
    # The probe reads resid_post[1, 4] linearly: that gradient is the probe's weights.
    np.testing.assert_allclose(np.asarray(grads["resid_post"][1, 4]), np.asarray(probe.W[:, 0]), atol=1e-5)
    assert value == pytest.approx(float(acts["resid_post"][1, 4] @ probe.W[:, 0]), rel=1e-5)
    # A finite difference along a random direction of resid_pre at layer 0, position 2.
    d = jnp.asarray(rng.normal(size=32), jnp.float32)
    eps = 2e-3

    def f(t):
        _, c = model.run_with_cache(
            CLEAN, names=["resid_post"], interventions=[ji.Add("resid_pre", t * d, layer=0, pos=2)]
        )
        return float(c["resid_post"][1, 4] @ probe.W[:, 0])

    fd = (f(eps) - f(-eps)) / (2 * eps)
    assert float(grads["resid_pre"][0, 2] @ d) == pytest.approx(fd, rel=1e-2)


def test_token_attribution(model):
    ig = token_attribution(model, CLEAN, 4, foil=6, method="ig", baseline=0, n_steps=64)
    assert ig.scores.shape == (6,)
    assert abs(ig.scores.sum() - (ig.value - ig.baseline_value)) < 1e-3
    gxa = token_attribution(model, CLEAN, 4, method="gxa")
    logits = model(CLEAN)
    assert gxa.value == pytest.approx(float(logits[-1, 4]), abs=1e-4)
    with pytest.raises(GradientError, match="method"):
        token_attribution(model, CLEAN, 4, method="magic")
    with pytest.raises(GradientError, match="one layer"):
        integrated_gradients(model, CLEAN, Logit(jnp.asarray(4), jnp.asarray(5)), "resid_pre")
