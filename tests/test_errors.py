"""Bad input raises the intended error, naming what is wrong and what was expected."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji

CFG = ji.ModelConfig(d_model=16, n_layers=2, n_heads=2, d_head=8, d_vocab=23, n_ctx=8, d_mlp=32)


@pytest.fixture(scope="module")
def model():
    return ji.Transformer.init(CFG, jax.random.key(0))


TOKENS = np.array([1, 2, 3, 4])


def test_unknown_site_suggests_closest(model):
    with pytest.raises(ji.SiteError, match=r"unknown site 'resid_pr'.*Did you mean 'resid_pre'"):
        model(TOKENS, [ji.Patch("resid_pr", jnp.zeros(16))])
    with pytest.raises(ji.SiteError, match=r"blocks\.1\.attn\.hook_z"):
        model.run_with_cache(TOKENS, names=["blocks.1.attn.hook_zz"])


def test_site_layer_out_of_range(model):
    with pytest.raises(ji.SiteError, match="layer 5 out of range.*2 layers"):
        model.run_with_cache(TOKENS, names=["blocks.5.hook_resid_pre"])


def test_intervention_shape_mismatch_names_site_and_shape(model):
    with pytest.raises(ji.InterventionError, match=r"shape \(4, 7\).*'resid_pre'.*\(4, 16\)"):
        model(TOKENS, [ji.Patch("resid_pre", jnp.zeros((4, 7)), layer=0)])


def test_location_on_missing_axis(model):
    with pytest.raises(ji.InterventionError, match=r"selects head=.*axes are \('pos', 'd_model'\)"):
        model(TOKENS, [ji.Ablate("resid_pre", head=0)])


def test_layer_on_top_level_site(model):
    with pytest.raises(ji.InterventionError, match="not a per-layer site"):
        model(TOKENS, [ji.Ablate("embed", layer=0)])


def test_token_id_out_of_range(model):
    with pytest.raises(ji.TokenError, match=r"token id 23 at index \(2,\).*d_vocab=23"):
        model(np.array([1, 2, 23]))
    with pytest.raises(ji.TokenError, match="out of range"):
        model(np.array([[1, -1]]))


def test_sequence_longer_than_context(model):
    with pytest.raises(ji.TokenError, match="9 tokens is longer than the model's context n_ctx=8"):
        model(np.zeros(9, int))


def test_float_tokens_rejected(model):
    with pytest.raises(ji.TokenError, match="must be integers"):
        model(np.zeros(3))


def test_uncached_site_lookup_says_how_to_fix(model):
    _, cache = model.run_with_cache(TOKENS, names=["resid_pre"])
    with pytest.raises(KeyError, match="not cached.*names="):
        cache["attn.z"]


def test_not_an_intervention(model):
    with pytest.raises(ji.InterventionError, match="expected an Intervention"):
        model(TOKENS, ["resid_pre"])
