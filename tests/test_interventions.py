"""Intervention semantics, checked against independent computations: a vmapped sweep
equals a Python loop of single patches; patching clean values everywhere reproduces the
clean run; the empty intervention is the identity; gradients flow through `Add`."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji

CFG = ji.ModelConfig(
    d_model=32,
    n_layers=3,
    n_heads=4,
    d_head=8,
    n_kv_heads=2,
    d_vocab=61,
    n_ctx=32,
    d_mlp=48,
    normalization="rmsnorm",
    positional="rotary",
    gated_mlp=True,
    act_fn="silu",
    family="llama-like",
)


@pytest.fixture(scope="module")
def model():
    return ji.Transformer.init(CFG, jax.random.key(0), std=0.2)


@pytest.fixture(scope="module")
def runs(model):
    rng = np.random.default_rng(0)
    clean = rng.integers(0, CFG.d_vocab, 10)
    corrupt = clean.copy()
    corrupt[[2, 6]] = rng.integers(0, CFG.d_vocab, 2)
    clean_logits, clean_cache = model.run_with_cache(clean, names=None)
    return clean, corrupt, clean_logits, clean_cache


def test_empty_intervention_is_identity(model, runs):
    clean, _, clean_logits, _ = runs
    plain = model(clean)
    for empty in (None, [], ()):
        chex.assert_trees_all_equal(model(clean, empty), plain)
    # Caching changes how XLA fuses the program, not the values beyond rounding.
    np.testing.assert_allclose(np.asarray(plain), np.asarray(clean_logits), atol=1e-5, rtol=0)


def test_vmap_over_50_layer_pos_patches_equals_python_loop(model, runs):
    clean, corrupt, _, cache = runs
    rng = np.random.default_rng(1)
    layers = rng.integers(0, CFG.n_layers, 50)
    positions = rng.integers(0, len(clean), 50)
    stacked = cache["resid_pre"]

    def patched(layer, pos):
        return model(corrupt, [ji.Patch("resid_pre", stacked, layer=layer, pos=pos)])[-1]

    swept = jax.jit(jax.vmap(patched))(jnp.asarray(layers), jnp.asarray(positions))
    for i, (layer, pos) in enumerate(zip(layers, positions)):
        # The loop patches by the full TransformerLens name and a per-layer value.
        value = cache[f"blocks.{layer}.hook_resid_pre"]
        single = model(corrupt, [ji.Patch(f"blocks.{layer}.hook_resid_pre", value, pos=int(pos))])[-1]
        np.testing.assert_allclose(np.asarray(swept[i]), np.asarray(single), atol=1e-5, rtol=0)


def test_vmapped_sweep_compiles_once(model, runs):
    clean, corrupt, _, cache = runs
    traces = []

    def patched(layer, pos):
        traces.append(1)
        return model(corrupt, [ji.Patch("resid_pre", cache["resid_pre"], layer=layer, pos=pos)])[-1]

    f = jax.jit(jax.vmap(patched))
    f(jnp.arange(3), jnp.arange(3))
    f(jnp.array([2, 1, 0]), jnp.array([5, 6, 7]))
    assert len(traces) == 1


# Sites that carry the whole state at some point: patching every layer and position
# with clean values must give exactly the clean run. (Component sites such as attn.z do
# not: the corrupted tokens' embeddings still reach the residual stream directly.)
@pytest.mark.parametrize("site", ["embed", "resid_pre", "resid_mid", "resid_post", "ln_final.normalized"])
def test_patching_every_position_with_clean_values_reproduces_clean_run(model, runs, site):
    clean, corrupt, clean_logits, cache = runs
    interventions = [ji.Patch(site, cache[site])]
    np.testing.assert_allclose(np.asarray(model(corrupt, interventions)), np.asarray(clean_logits), atol=1e-5, rtol=0)


def test_patch_changes_only_the_selected_location(model, runs):
    clean, corrupt, _, cache = runs
    value = jnp.full((CFG.d_model,), 3.0)
    _, patched = model.run_with_cache(
        corrupt, names=["resid_pre"], interventions=[ji.Patch("resid_pre", value, layer=1, pos=4)]
    )
    _, base = model.run_with_cache(corrupt, names=["resid_pre"])
    got, ref = np.asarray(patched["resid_pre"]), np.asarray(base["resid_pre"])
    np.testing.assert_array_equal(got[1, 4], np.full(CFG.d_model, 3.0))
    np.testing.assert_array_equal(got[0], ref[0])  # earlier layer untouched
    np.testing.assert_array_equal(got[1, :4], ref[1, :4])  # other positions untouched in that layer
    np.testing.assert_array_equal(got[1, 5:], ref[1, 5:])


def test_head_and_mask_locations(model, runs):
    _, corrupt, _, _ = runs
    mask = jnp.array([True, False, True, False])
    _, c1 = model.run_with_cache(corrupt, names=["attn.z"], interventions=[ji.Ablate("attn.z", layer=2, head=mask)])
    _, c2 = model.run_with_cache(corrupt, names=["attn.z"], interventions=[ji.Ablate("attn.z", layer=2, head=[0, 2])])
    z = np.asarray(c1["attn.z"])
    assert np.all(z[2][:, [0, 2]] == 0) and np.all(z[2][:, [1, 3]] != 0) and np.all(z[:2] != 0)
    np.testing.assert_array_equal(z, np.asarray(c2["attn.z"]))


def test_interventions_compose_in_order(model, runs):
    _, corrupt, _, _ = runs
    d = jnp.ones(CFG.d_model)
    _, c = model.run_with_cache(
        corrupt,
        names=["resid_post"],
        interventions=[
            ji.Patch("resid_post", jnp.zeros(CFG.d_model), layer=0),
            ji.Add("resid_post", d, layer=0),
            ji.Scale("resid_post", 2.0, layer=0),
        ],
    )
    np.testing.assert_array_equal(np.asarray(c["resid_post"][0]), np.full((len(corrupt), CFG.d_model), 2.0))


def test_grad_flows_through_add_and_equals_finite_difference(model, runs):
    _, corrupt, _, _ = runs
    answer, wrong = 3, 7

    def metric(delta):
        logits = model(corrupt, [ji.Add("resid_mid", delta, layer=1)])
        return logits[-1, answer] - logits[-1, wrong]

    zero = jnp.zeros((len(corrupt), CFG.d_model))
    g = jax.grad(metric)(zero)
    assert np.abs(np.asarray(g)).sum() > 0
    # Positions after the last one cannot matter (causal); direction check by finite difference.
    direction = jax.random.normal(jax.random.key(3), zero.shape)
    eps = 1e-3
    fd = (metric(eps * direction) - metric(-eps * direction)) / (2 * eps)
    np.testing.assert_allclose(float(jnp.vdot(g, direction)), float(fd), rtol=2e-3, atol=1e-4)


def test_project_out_removes_direction(model, runs):
    _, corrupt, _, _ = runs
    d = jax.random.normal(jax.random.key(5), (CFG.d_model,))
    _, c = model.run_with_cache(corrupt, names=["resid_post"], interventions=[ji.ProjectOut("resid_post", d)])
    proj = np.asarray(c["resid_post"]) @ np.asarray(d / jnp.linalg.norm(d))
    np.testing.assert_allclose(proj, 0, atol=1e-4)


def test_noise_is_seeded_and_fn_applies(model, runs):
    _, corrupt, _, _ = runs
    a = model(corrupt, [ji.Noise("embed", jax.random.key(1), 0.5, pos=[1, 2])])
    b = model(corrupt, [ji.Noise("embed", jax.random.key(1), 0.5, pos=[1, 2])])
    c = model(corrupt, [ji.Noise("embed", jax.random.key(2), 0.5, pos=[1, 2])])
    chex.assert_trees_all_equal(a, b)
    assert np.abs(np.asarray(a - c)).max() > 1e-3
    # Fn(x -> 0) at a site equals zero-ablation there.
    f = model(corrupt, [ji.Fn("mlp_out", jnp.zeros_like, layer=1)])
    z = model(corrupt, [ji.Ablate("mlp_out", layer=1)])
    chex.assert_trees_all_close(f, z)


def test_mean_ablation_value_and_resample(model, runs):
    clean, corrupt, _, cache = runs
    mean = cache["mlp_out"].mean(axis=1, keepdims=True)  # [layer, 1, d_model]
    got = model(corrupt, [ji.Ablate("mlp_out", "mean", mean)])
    ref = model(corrupt, [ji.Patch("mlp_out", jnp.broadcast_to(mean, cache["mlp_out"].shape))])
    chex.assert_trees_all_close(got, ref)
    res = model(corrupt, [ji.Ablate("mlp_out", "resample", cache["mlp_out"])])
    chex.assert_trees_all_close(res, model(corrupt, [ji.Patch("mlp_out", cache["mlp_out"])]))


def test_batched_call_and_cache_layout(model, runs):
    clean, corrupt, _, _ = runs
    batch = np.stack([clean, corrupt])
    logits, cache = model.run_with_cache(batch, names=["resid_pre", "embed"])
    assert cache["resid_pre"].shape == (CFG.n_layers, 2, len(clean), CFG.d_model)
    assert cache["blocks.1.hook_resid_pre"].shape == (2, len(clean), CFG.d_model)
    np.testing.assert_allclose(np.asarray(logits[1]), np.asarray(model(corrupt)), atol=1e-5)


@pytest.mark.parametrize("site", ["attn.z", "attn.pattern", "mlp.post", "attn.rot_k", "attn.v", "ln1.scale"])
def test_patching_a_component_with_its_own_values_is_identity(model, runs, site):
    """Writing a run's own activations back changes nothing, at every site."""
    _, corrupt, _, _ = runs
    logits, cache = model.run_with_cache(corrupt, names=[site])
    np.testing.assert_allclose(
        np.asarray(model(corrupt, [ji.Patch(site, cache[site])])), np.asarray(logits), atol=1e-5, rtol=0
    )


def test_full_name_site_accepts_a_layer_stacked_value(model, runs):
    """``Patch("blocks.2.hook_resid_pre", stacked)`` takes layer 2's slice of ``stacked``."""
    clean, corrupt, _, cache = runs
    by_name = model(corrupt, [ji.Patch("blocks.2.hook_resid_pre", cache["resid_pre"], pos=3)])
    by_layer = model(corrupt, [ji.Patch("resid_pre", cache["blocks.2.hook_resid_pre"], layer=2, pos=3)])
    np.testing.assert_allclose(np.asarray(by_name), np.asarray(by_layer), atol=1e-6, rtol=0)
