"""Vision transformers and image feature visualisation.

References: onnxruntime on the shipped DINOv2-style ONNX file (the real backbone);
transformers' `Dinov2Model` (torch) for a tiny random ViT with random LayerScale and
position-embedding interpolation (so the LayerScale folding and the bicubic resize are
checked against an implementation we did not write); numpy's FFT for the spectrum."""

from __future__ import annotations

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


def test_optimisation_increases_the_target_and_beats_noise():
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
    ks = jax.random.split(jax.random.key(1), 5)
    pe = PatchEmbed(
        0.1 * jax.random.normal(ks[0], (32, 3, 4, 4)),
        jnp.zeros(32),
        0.1 * jax.random.normal(ks[1], (32,)),
        0.1 * jax.random.normal(ks[2], (32,)),
        0.1 * jax.random.normal(ks[3], (4, 4, 32)),
        4,
    )
    model = VisionTransformer(pe, ji.Transformer.init(cfg, ks[4], std=0.2))
    objectives = vi.neurons(model, 1, [0, 1])
    res = vi.visualise(model, objectives, jax.random.key(2), size=16, steps=60, lr=0.2)
    start = np.asarray(vi.activation_matrix(model, objectives, vi.natural_noise(jax.random.key(2), 1, 16, std=0.01)))
    own = np.asarray(vi.activation_matrix(model, objectives, res.images))
    noise = np.asarray(vi.activation_matrix(model, objectives, vi.natural_noise(jax.random.key(3), 8, 16)))
    assert np.all(np.diag(own) > start[:, 0] + 0.3)  # the initial image is ~grey
    assert np.all(np.diag(own) > noise.max(axis=1))
    with pytest.raises(vi.VisualisationError, match="unit must be in 0..63"):
        vi.neurons(model, 1, [64])
