"""Universal neurons: max correlations against a direct numpy computation (np.corrcoef)
and a planted permutation; the rotation baseline is orthogonal and destroys planted
matches of sparse neurons; activations come from the model's own cache; neuron properties
against scipy."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import jaxinterp as ji
from jaxinterp.features.universal_neurons import (
    UniversalNeuronsError,
    correlation_matrix,
    max_correlations,
    mlp_activations,
    neuron_properties,
    random_rotation,
    summarise,
)
from jaxinterp.toy import random_model


def _sparse_acts(rng, n_neurons, n_samples):
    """ReLU-like activations: each neuron fires on ~10% of samples."""
    return np.maximum(rng.normal(size=(n_neurons, n_samples)) - 1.3, 0.0).astype(np.float32)


def test_max_correlations_equal_direct_numpy():
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(3, 7, 50)).astype(np.float32)
    acts[1, 2] = 0.0  # a dead neuron: correlation 0 by convention
    got = max_correlations(acts)
    for a in range(3):
        assert np.all(np.isnan(got[a, a]))
        for b in range(3):
            if a == b:
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                full = np.corrcoef(acts[a].astype(np.float64), acts[b].astype(np.float64))[:7, 7:]
            full = np.nan_to_num(full, nan=0.0)
            np.testing.assert_allclose(got[a, b], full.max(1), atol=1e-5)
    np.testing.assert_allclose(
        correlation_matrix(jnp.asarray(acts[0]), jnp.asarray(acts[0])).diagonal(), 1.0, atol=1e-5
    )


def test_planted_permutation_is_found_and_rotation_hides_it():
    rng = np.random.default_rng(1)
    base = _sparse_acts(rng, 16, 4000)
    perm = rng.permutation(16)
    copy = 3.0 * base[perm] + 0.5 + 0.01 * rng.normal(size=base.shape).astype(np.float32)  # rescaled, shifted, noisy
    other = _sparse_acts(rng, 16, 4000)  # an unrelated "seed"
    acts = np.stack([base, copy, other])
    mc = max_correlations(acts)
    assert np.all(mc[0, 1] > 0.99) and np.all(mc[1, 0] > 0.99)
    assert np.all(mc[0, 2] < 0.2)
    # which neuron matches: the planted permutation
    corr = np.asarray(correlation_matrix(jnp.asarray(base), jnp.asarray(copy)))
    np.testing.assert_array_equal(corr.argmax(1), np.argsort(perm))
    summary = summarise(mc)
    np.testing.assert_allclose(summary.max_any[0], mc[0, 1])
    np.testing.assert_allclose(summary.mean_over_seeds[0], (mc[0, 1] + mc[0, 2]) / 2)
    # rotated bases: orthogonal per layer (Gram matrices over neurons' samples preserved),
    # and the planted one-to-one matches are gone
    rot = random_rotation(acts, n_layers=2, seed=0)
    for m in range(3):
        for layer in range(2):
            rows = slice(8 * layer, 8 * layer + 8)
            np.testing.assert_allclose(
                rot[m, rows].T @ rot[m, rows], acts[m, rows].T @ acts[m, rows], rtol=1e-3, atol=1e-3
            )
    assert np.median(max_correlations(rot)[0, 1]) < 0.9
    with pytest.raises(UniversalNeuronsError, match="at least 2 models"):
        max_correlations(acts[:1])


def test_mlp_activations_and_properties_from_a_model():
    cfg = ji.ModelConfig(
        d_model=16, n_layers=2, n_heads=2, d_head=8, d_vocab=20, n_ctx=8, d_mlp=12, act_fn="relu", mlp_bias=True
    )
    models = [random_model(cfg, seed=s, std=0.3) for s in (0, 1)]
    tokens = np.random.default_rng(0).integers(0, 20, size=(5, 8)).astype(np.int32)
    acts = mlp_activations(models, tokens, batch_size=2)
    assert acts.shape == (2, 24, 40)
    _, cache = models[1].run_with_cache(jnp.asarray(tokens), names=["mlp.post"])
    post = np.asarray(cache["mlp.post"])  # [layer, batch, pos, d_mlp]
    np.testing.assert_allclose(acts[1, 12 + 5], post[1, :, :, 5].ravel(), atol=1e-5)  # layer 1, neuron 5
    props = neuron_properties(models[0], acts[0], k=3)
    np.testing.assert_allclose(props.activation_frequency, (acts[0] > 0).mean(-1))
    effect = np.asarray(models[0].blocks.mlp.W_out).reshape(24, 16) @ np.asarray(models[0].unembed.W_U)
    np.testing.assert_allclose(props.vocab_kurtosis, scipy.stats.kurtosis(effect, axis=1, fisher=False), rtol=1e-4)
    np.testing.assert_allclose(props.vocab_skew, scipy.stats.skew(effect, axis=1), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(props.top_tokens[:, 0], effect.argmax(1))
    np.testing.assert_array_equal(props.bottom_tokens[:, 0], effect.argmin(1))
