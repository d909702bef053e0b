"""Vision transformers and image feature visualisation.

References: onnxruntime on the shipped DINOv2-style ONNX file (the real backbone);
transformers' `Dinov2Model` (torch) for a tiny random ViT with random LayerScale and
position-embedding interpolation (so the LayerScale folding and the bicubic resize are
checked against an implementation we did not write); numpy's FFT for the spectrum."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxinterp.errors import CheckpointError
from jaxinterp.features import visualise_image as vi
from jaxinterp.loading import bundled
from jaxinterp.loading.onnx_vit import fold_layer_scale, load_onnx_vit, onnx_backbone_outputs, vit_from_tensors


@pytest.fixture(scope="module")
def vit():
    return load_onnx_vit(bundled.vit_onnx_path())


def test_onnx_parity_final_and_intermediate(vit):
    images = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    names = ["/backbone/layernorm/Add_1_output_0", "/backbone/encoder/layer.5/Add_1_output_0"]
    final_ref, layer5_ref = onnx_backbone_outputs(bundled.vit_onnx_path(), images, names)

    @jax.jit
    @jax.vmap
    def run(image):
        out, cache = vit.run(image, cache=frozenset({"resid_post"}))
        return out, cache["resid_post"][5]

    final, layer5 = map(np.asarray, run(jnp.asarray(images)))
    assert final.shape == (2, 1 + 16 * 16, 384)
    np.testing.assert_allclose(final, final_ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(layer5, layer5_ref, atol=1e-4 * np.abs(layer5_ref).max(), rtol=0)


def test_tiny_dinov2_with_layer_scale_matches_transformers():
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=4,
        image_size=32,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
    )
    hf = Dinov2Model(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():  # random everything, LayerScale far from the identity
            p.copy_(0.3 * torch.randn_like(p))
    sd = {k: v.numpy() for k, v in hf.state_dict().items()}
    tensors = {}
    for k, v in sd.items():
        if k.endswith(".weight") and v.ndim == 2:
            v = v.T  # torch Linear [out, in] -> ONNX MatMul [in, out]
        for new, old in (
            ("q_proj", "attention.query"),
            ("k_proj", "attention.key"),
            ("v_proj", "attention.value"),
            ("o_proj", "output.dense"),
        ):  # transformers 5 names -> the exporter's (4.x) names
            k = k.replace(f"attention.{new}", f"attention.{old}")
        tensors["backbone." + k] = v
    pos = sd["embeddings.position_embeddings"]  # [1, 1 + 8*8, d]: the native grid is 8 x 8
    tensors["pos_cls"], tensors["pos_patch"] = pos[:, :1], pos[:, 1:]
    ours = vit_from_tensors(tensors, d_head=16)
    image = np.random.default_rng(1).normal(size=(1, 3, 16, 24)).astype(np.float32)  # grid 4 x 6: resized
    with torch.no_grad():
        ref = hf(pixel_values=torch.from_numpy(image)).last_hidden_state.numpy()[0]
    np.testing.assert_allclose(np.asarray(ours(jnp.asarray(image[0]))), ref, atol=1e-4, rtol=0)


def test_fold_layer_scale_closed_form():
    rng = np.random.default_rng(0)
    x, W, b, g = rng.normal(size=(5, 7)), rng.normal(size=(7, 3)), rng.normal(size=3), rng.normal(size=3)
    Wf, bf = fold_layer_scale(W, b, g)
    np.testing.assert_allclose(x @ Wf + bf, g * (x @ W + b), atol=1e-12)


def test_bad_onnx_file_is_a_checkpoint_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07this is not a model" * 10)
    with pytest.raises(CheckpointError, match="bad.onnx"):
        load_onnx_vit(str(bad))


def test_fourier_image_is_real_in_range_and_has_1_over_f_spectrum():
    spectrum = vi.init_spectrum(jax.random.key(0), 32, std=0.5)
    img = np.asarray(vi.to_image(spectrum))
    assert img.shape == (3, 32, 32) and np.isrealobj(img)
    assert 0 < img.min() and img.max() < 1
    # before the colour map and sigmoid the image is an irfft of a 1/f-scaled spectrum:
    # its power at low frequencies exceeds that at high frequencies (numpy FFT as reference)
    logits = np.log(img / (1 - img))
    colour = np.linalg.solve(np.asarray(vi._COLOR_SQRT), logits.reshape(3, -1)).reshape(3, 32, 32)
    power = np.abs(np.fft.fft2(colour)) ** 2
    assert power[:, 1, 1].mean() > 20 * power[:, 16, 16].mean()


def test_affine_identity_and_rotation_by_90():
    img = jax.random.uniform(jax.random.key(0), (3, 9, 9))
    same = vi.affine(img, jnp.float32(0.0), jnp.float32(1.0), jnp.zeros(2))
    np.testing.assert_allclose(np.asarray(same), np.asarray(img), atol=1e-6)
    rot = vi.affine(img, jnp.float32(np.pi / 2), jnp.float32(1.0), jnp.zeros(2))
    np.testing.assert_allclose(np.asarray(rot), np.rot90(np.asarray(img), k=1, axes=(1, 2)), atol=1e-5)


@pytest.fixture(scope="module")
def tiny_vit():
    import jaxinterp as ji
    from jaxinterp.model.vision import PatchEmbed, VisionTransformer

    cfg = ji.ModelConfig(
        d_model=32,
        n_layers=2,
        n_heads=2,
        d_head=16,
        d_vocab=1,
        n_ctx=17,
        d_mlp=64,
        causal=False,
        positional="none",
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        has_unembed=False,
    )
    # numpy draws: a multi-dimensional jax.random draw compiles for seconds on CPU
    rng = np.random.default_rng(1)
    f32 = lambda *shape: jnp.asarray(0.1 * rng.normal(size=shape), jnp.float32)  # noqa: E731
    pe = PatchEmbed(f32(32, 3, 4, 4), jnp.zeros(32), f32(32), f32(32), f32(4, 4, 32), 4)
    return VisionTransformer(pe, ji.Transformer.init(cfg, jax.random.key(4), std=0.2))


# One compiled optimisation serves every call below: size, steps, restarts and the number
# of objectives are static; lr, init_std and leak are traced.
STATIC = dict(size=16, steps=40, restarts=2)


def test_optimisation_increases_the_target_beats_noise_and_keeps_the_best_restart(tiny_vit):
    objectives = vi.neurons(tiny_vit, 1, [0, 1])
    key = jax.random.key(2)
    start = vi.visualise(tiny_vit, objectives, key, lr=0.0, **STATIC)  # lr 0: the initial images
    res = vi.visualise(tiny_vit, objectives, key, lr=0.2, **STATIC)
    noise = vi.natural_noise(jax.random.key(3), 8, 16)
    images = jnp.concatenate([start.images, res.candidates.reshape(-1, 3, 16, 16), noise])
    m = np.asarray(vi.activation_matrix(tiny_vit, objectives, images))  # one forward per image, jitted apart
    start_act, cand, noise_act = m[:, :2], m[:, 2:6].reshape(2, 2, 2), m[:, 6:]
    own_cand = np.stack([cand[0, 0], cand[1, 1]])  # [objective, restart]: each on its own candidates
    own = own_cand.max(axis=1)
    assert np.all(own > np.diag(start_act) + 0.3)  # the initial image is ~grey
    assert np.all(own > noise_act.max(axis=1))
    # restarts: the values reported are the candidates' true values, and the best is kept
    np.testing.assert_allclose(np.asarray(res.candidate_final), own_cand, atol=1e-5)
    assert np.abs(own_cand[:, 0] - own_cand[:, 1]).max() > 1e-2  # the restarts differ, so the choice matters
    best = own_cand.argmax(axis=1)
    np.testing.assert_allclose(np.asarray(res.final), own, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(res.images), np.asarray(res.candidates)[[0, 1], best])
    assert res.trace.shape == (40, 2) and res.trace[-1].mean() > res.trace[0].mean()
    with pytest.raises(vi.VisualisationError, match="unit must be in 0..63"):
        vi.neurons(tiny_vit, 1, [64])
    with pytest.raises(vi.VisualisationError, match="restarts must be >= 1"):
        vi.visualise(tiny_vit, objectives, key, size=16, steps=4, restarts=0)


def test_init_std_scales_the_starting_spectrum(tiny_vit):
    # before the sigmoid the image is linear in the spectrum: logit(image) scales with init_std
    objectives = vi.neurons(tiny_vit, 1, [0, 1])
    a = vi.visualise(tiny_vit, objectives, jax.random.key(5), lr=0.0, init_std=0.01, **STATIC).candidates
    b = vi.visualise(tiny_vit, objectives, jax.random.key(5), lr=0.0, init_std=0.3, **STATIC).candidates
    logit = lambda x: np.log(np.asarray(x, np.float64) / (1 - np.asarray(x, np.float64)))  # noqa: E731
    np.testing.assert_allclose(logit(b), 30 * logit(a), rtol=1e-3, atol=1e-4)
    assert np.std(logit(a)) > 1e-4


def test_leak_switches_on_a_dead_neuron(tiny_vit):
    # neurons 2 and 3 of layer 1 pushed 30 below zero: GELU's gradient there is exactly 0
    # in float32, so plain ascent cannot move the image; the leak (the pre-activation's
    # gradient) can
    b_in = tiny_vit.transformer.blocks.mlp.b_in
    dead = eqx.tree_at(lambda m: m.transformer.blocks.mlp.b_in, tiny_vit, b_in.at[1, 2:4].add(-30.0))
    objectives = vi.neurons(dead, 1, [2, 3])
    pre = vi.Objective(objectives.direction, "mlp.pre", 1)
    key = jax.random.key(6)
    start = vi.visualise(dead, objectives, key, lr=0.0, **STATIC)
    plain = vi.visualise(dead, objectives, key, lr=0.2, **STATIC)
    leaky = vi.visualise(dead, objectives, key, lr=0.2, leak=1.0, **STATIC)
    np.testing.assert_allclose(np.asarray(plain.candidates), np.asarray(start.candidates), atol=1e-6)
    images = jnp.concatenate([start.images, leaky.images])
    m = np.asarray(vi.activation_matrix(dead, pre, images))  # mlp.pre of each neuron on each image
    assert np.all(np.diag(m[:, 2:]) > np.diag(m[:, :2]) + 0.2)
    with pytest.raises(vi.VisualisationError, match="needs an mlp.post objective"):
        vi.visualise(dead, vi.Objective(jnp.ones((2, 32)), "resid_post", 1), key, leak=1.0, **STATIC)
