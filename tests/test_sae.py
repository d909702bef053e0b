"""SAEs and transcoders, checked against references we did not write: numpy top-k and
formulas of the papers (TopK, BatchTopK, the JumpReLU straight-through estimator, the
decoder-norm-weighted L1), numpy FVU/L0, hand-written SAELens / Gemma Scope files with a
numpy forward pass, splicing against interventions built another way (``Patch``/``Add``
from a cached run), gradients against finite differences, exact feature ablations
against a loop."""

from __future__ import annotations

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

import jaxinterp as ji
from jaxinterp.errors import JaxinterpError
from jaxinterp.features import sae as S
from jaxinterp.features.sae.ops import batch_topk_relu, jumprelu, step, topk_relu
from jaxinterp.features.sae.train import _project_out_parallel

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
LAYER = 1


@pytest.fixture(scope="module")
def model():
    return ji.Transformer.init(CFG, jax.random.key(0), std=0.2)


@pytest.fixture(scope="module")
def tokens():
    return jnp.asarray(np.random.default_rng(0).integers(0, CFG.d_vocab, 12))


@pytest.fixture(scope="module")
def sae():
    return S.init_sae("topk", S.SAEConfig(32, 64, layer=LAYER), jax.random.key(1), k=8)


@pytest.fixture(scope="module")
def transcoder():
    cfg = S.SAEConfig(32, 64, site="ln2.normalized", target_site="mlp_out", layer=LAYER, apply_b_dec_to_input=False)
    tc = S.init_sae("relu", cfg, jax.random.key(2))
    return eqx_replace(tc, b_enc=jnp.full(64, 0.1))


def eqx_replace(module, **fields):
    import equinox as eqx

    return eqx.tree_at(lambda m: [getattr(m, k) for k in fields], module, list(fields.values()))


def all_variants(cfg):
    return [
        S.init_sae("relu", cfg, jax.random.key(3)),
        S.init_sae("topk", cfg, jax.random.key(3), k=5),
        eqx_replace(S.init_sae("batchtopk", cfg, jax.random.key(3), k=5), threshold=jnp.asarray(0.2)),
        S.init_sae("jumprelu", cfg, jax.random.key(3), threshold=0.15, bandwidth=0.01),
    ]


# ---------------------------------------------------------------------------- activations


def test_topk_equals_numpy_topk():
    z = np.random.default_rng(1).normal(size=(7, 50)).astype(np.float32)
    got = np.asarray(topk_relu(jnp.asarray(z), 6))
    want = np.zeros_like(z)
    idx = np.argsort(-z, axis=-1)[:, :6]
    np.put_along_axis(want, idx, np.maximum(np.take_along_axis(z, idx, -1), 0), -1)
    np.testing.assert_array_equal(got, want)
    assert ((got > 0).sum(-1) <= 6).all()


def test_batch_topk_equals_numpy_over_the_batch():
    z = np.random.default_rng(2).normal(size=(9, 40)).astype(np.float32)
    got = np.asarray(batch_topk_relu(jnp.asarray(z), 4))
    flat = z.reshape(-1)
    keep = np.zeros(flat.size, bool)
    keep[np.argsort(-flat)[: 9 * 4]] = True
    want = np.where(keep.reshape(z.shape) & (z > 0), z, 0)
    np.testing.assert_array_equal(got, want)
    assert (got > 0).sum() == 36 and len(set((got > 0).sum(-1))) > 1  # rows differ; the batch averages k


def test_jumprelu_ste_gradients_are_the_papers():
    rng = np.random.default_rng(3)
    z = rng.normal(0.3, 0.3, size=(64, 16)).astype(np.float32)
    theta = rng.uniform(0.1, 0.5, size=16).astype(np.float32)
    w = rng.normal(size=z.shape).astype(np.float32)
    eps = 0.05
    K = (np.abs((z - theta) / eps) < 0.5).astype(np.float32)  # rectangle kernel
    gz, gt = jax.grad(lambda a, b: jnp.sum(w * jumprelu(a, b, eps)), argnums=(0, 1))(jnp.asarray(z), jnp.asarray(theta))
    # Rajamanoharan et al. 2024, eq. 11: d/dtheta JumpReLU = -(theta/eps) K((z - theta)/eps); d/dz = H(z - theta)
    np.testing.assert_allclose(gt, (w * -(theta / eps) * K).sum(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gz, w * (z > theta), rtol=1e-6)
    gz, gt = jax.grad(lambda a, b: jnp.sum(w * step(a, b, eps)), argnums=(0, 1))(jnp.asarray(z), jnp.asarray(theta))
    # eq. 12: d/dtheta H(z - theta) = -(1/eps) K((z - theta)/eps); no gradient in z
    np.testing.assert_allclose(gt, (w * -(1 / eps) * K).sum(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(gz, 0)
    assert K.sum() > 10  # the kernel was actually hit


def test_variant_forward_passes_match_numpy():
    cfg = S.SAEConfig(12, 40, layer=0)
    x = np.random.default_rng(4).normal(size=(6, 12)).astype(np.float32)
    for sae in all_variants(cfg):
        a = {k: np.asarray(v) for k, v in sae.arrays().items()}
        pre = (x - a["b_dec"]) @ a["W_enc"] + a["b_enc"]
        if sae.kind == "relu":
            f = np.maximum(pre, 0)
        elif sae.kind == "topk":
            kth = np.sort(pre, -1)[:, -5:-4]
            f = np.where((pre >= kth) & (pre > 0), pre, 0)
        else:  # batchtopk at inference and jumprelu: a per-latent threshold
            f = np.where(pre > a["threshold"], np.maximum(pre, 0), 0)
        np.testing.assert_allclose(sae.encode(jnp.asarray(x)), f, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(sae(jnp.asarray(x)), f @ a["W_dec"] + a["b_dec"], rtol=1e-5, atol=1e-5)


def test_relu_penalty_is_l1_weighted_by_decoder_norms():
    sae = S.init_sae("relu", S.SAEConfig(12, 40), jax.random.key(5), decoder_norm=0.3)
    sae = eqx_replace(sae, W_dec=sae.W_dec * jnp.linspace(0.5, 2, 40)[:, None])
    acts = np.abs(np.random.default_rng(5).normal(size=(3, 40))).astype(np.float32)
    want = (acts * np.linalg.norm(np.asarray(sae.W_dec), axis=1)).sum(-1)
    np.testing.assert_allclose(sae.sparsity(None, jnp.asarray(acts)), want, rtol=1e-5)


def test_fold_scale_is_exact_for_every_variant_and_a_transcoder():
    x = jnp.asarray(np.random.default_rng(6).normal(size=(5, 12)).astype(np.float32))
    for cfg, (si, so) in [
        (S.SAEConfig(12, 40), (3.0, 3.0)),
        (S.SAEConfig(12, 40, site="ln2.normalized", target_site="mlp_out", apply_b_dec_to_input=False), (3.0, 0.5)),
    ]:
        for sae in all_variants(cfg):
            folded = sae.fold_scale(si, so)
            np.testing.assert_allclose(folded(x), sae(x * si) / so, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(folded.encode(x), sae.encode(x * si) / so, rtol=1e-4, atol=1e-5)


def test_unit_norm_projection():
    W = jax.random.normal(jax.random.key(7), (20, 8))
    W = W / jnp.linalg.norm(W, axis=-1, keepdims=True)
    g = jax.random.normal(jax.random.key(8), (20, 8))
    p = _project_out_parallel(g, W)
    np.testing.assert_allclose(jnp.sum(p * W, -1), 0, atol=1e-6)
    np.testing.assert_allclose(p + jnp.sum(g * W, -1, keepdims=True) * W, g, atol=1e-6)


# ---------------------------------------------------------------------------- metrics


def test_metrics_against_numpy():
    rng = np.random.default_rng(9)
    acts = np.where(rng.random((50, 30)) < 0.2, rng.random((50, 30)), 0).astype(np.float32)
    acts[:, 3] = 0  # dead
    acts[:, 4] = 1  # dense
    y = rng.normal(size=(50, 8)).astype(np.float32)
    r = y + 0.3 * rng.normal(size=y.shape).astype(np.float32)
    assert float(S.l0(jnp.asarray(acts))) == pytest.approx((acts > 0).sum(1).mean(), rel=1e-6)
    assert float(S.fvu(jnp.asarray(y), jnp.asarray(r))) == pytest.approx(
        ((y - r) ** 2).sum() / ((y - y.mean(0)) ** 2).sum(), rel=1e-5
    )
    y_out = y.copy()
    y_out[7] *= 1000.0  # one massive activation
    keep = np.linalg.norm(y_out, axis=1) <= 10 * np.median(np.linalg.norm(y_out, axis=1))
    assert keep.sum() == 49
    assert float(S.fvu(jnp.asarray(y_out), jnp.asarray(r), outlier_factor=10.0)) == pytest.approx(
        ((y[keep] - r[keep]) ** 2).sum() / ((y[keep] - y[keep].mean(0)) ** 2).sum(), rel=1e-5
    )
    rates = (acts > 0).mean(0)
    np.testing.assert_allclose(S.firing_rates(jnp.asarray(acts)), rates)
    assert float(S.dead_fraction(jnp.asarray(rates))) == pytest.approx((rates == 0).mean())
    assert float(S.dense_fraction(jnp.asarray(rates), 0.5)) == pytest.approx((rates > 0.5).mean())


# ---------------------------------------------------------------------------- training


def test_topk_training_recovers_planted_features():
    rng = np.random.default_rng(10)
    d, n = 16, 48
    D = rng.normal(size=(n, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    codes = np.zeros((8192, n))
    for i in range(codes.shape[0]):  # exactly 3 active features per sample
        codes[i, rng.choice(n, 3, replace=False)] = rng.uniform(0.5, 2, 3)
    X = (codes @ D).astype(np.float32)
    store = S.ArrayStore(X, fill_size=4096, seed=0)
    sae = S.init_sae("topk", S.SAEConfig(d, 96), jax.random.key(0), k=3)
    res = S.train_sae(
        sae,
        store,
        S.TrainConfig(n_steps=600, batch_size=256, lr=4e-3, lr_warmup=20, dead_tokens=10_000),
        progress=False,
    )
    assert res.history["fvu"][-1] < 0.15
    cos = np.abs(np.asarray(res.sae.W_dec) @ D.T / np.linalg.norm(np.asarray(res.sae.W_dec), axis=1, keepdims=True))
    assert np.mean(cos.max(0) > 0.9) > 0.8  # most planted directions found by some latent
    np.testing.assert_allclose(
        np.linalg.norm(np.asarray(res.sae.W_dec), axis=1), 1.0, rtol=1e-5
    )  # kept unit norm, scale folded into latents


def test_batchtopk_finalize_sets_the_inference_l0_to_k():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(300, 12)).astype(np.float32)
    sae = eqx_replace(S.init_sae("batchtopk", S.SAEConfig(12, 40), jax.random.key(3), k=5), threshold=jnp.asarray(0.2))
    a = {k: np.asarray(v) for k, v in sae.arrays().items()}
    pre = (x - a["b_dec"]) @ a["W_enc"] + a["b_enc"]
    l0 = lambda th: ((pre > th) & (pre > 0)).sum(1).mean()  # numpy, independent of the module
    assert abs(l0(0.2) - 5) > 3  # the untuned threshold is far from k
    done = sae.finalize(jnp.asarray(x))
    assert l0(float(done.threshold)) == pytest.approx(5.0, abs=1e-9)
    assert (np.asarray(done.encode(jnp.asarray(x))) > 0).sum(1).mean() == pytest.approx(5.0, abs=1e-9)
    new = rng.normal(size=(300, 12)).astype(np.float32)  # held-out tokens: close to k, not exact
    assert (np.asarray(done.encode(jnp.asarray(new))) > 0).sum(1).mean() == pytest.approx(5.0, abs=0.5)


def test_l0_controller_reaches_the_target_and_threshold_lr_scale_scales_updates():
    # Planted sparse codes (4 of 48 directions per token); ReLU + L1 starts at L0 ~ 45
    # (6x the target): the log-ratio controller must bring it to 8 without collapsing.
    rng = np.random.default_rng(10)
    D = rng.normal(size=(48, 16))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    codes = np.zeros((4096, 48))
    idx = np.argsort(rng.random((4096, 48)), axis=1)[:, :4]
    np.put_along_axis(codes, idx, rng.uniform(0.5, 2, (4096, 4)), axis=1)
    X = (codes @ D).astype(np.float32)
    store = S.ArrayStore(X, fill_size=2048, seed=0)
    sae = S.init_sae("relu", S.SAEConfig(16, 96, unit_norm_decoder=False), jax.random.key(0), decoder_norm=1.0)
    cfg = S.TrainConfig(
        n_steps=160, batch_size=128, lr=5e-3, lr_warmup=10, sparsity_coefficient=0.1, sparsity_warmup=16,
        target_l0=8, target_l0_rate=0.03,
    )
    res = S.train_sae(sae, store, cfg, progress=False)
    assert res.history["l0"][0] > 30
    assert min(res.history["l0"]) > 4  # no overshoot-collapse
    f = np.maximum((X - np.asarray(res.sae.b_dec)) @ np.asarray(res.sae.W_enc) + np.asarray(res.sae.b_enc), 0)
    assert (f > 0).sum(1).mean() == pytest.approx(8, rel=0.2)  # numpy L0 of the trained SAE

    # threshold_lr_scale multiplies only the log thresholds' optimizer update.
    from jaxinterp.features.sae.train import TrainLoop, train_chunk

    jr = S.init_sae("jumprelu", S.SAEConfig(16, 24), jax.random.key(1), threshold=0.1, bandwidth=0.5)
    xs = jnp.asarray(X[:128].reshape(2, 64, 16))  # two steps: the warm-up's first has lr 0
    moved = []
    for scale in (1.0, 7.0):
        loop = TrainLoop(S.TrainConfig(n_steps=100, batch_size=64, lr=1e-2, lr_warmup=1, threshold_lr_scale=scale), 0)
        opt = loop.optimizer.init(eqx_filter(jr))
        state, _ = train_chunk(loop, jr, opt, jnp.zeros(24, jnp.int32), jnp.asarray(0), jnp.asarray(0.0), xs, xs)
        moved.append((state[0].log_threshold - jr.log_threshold, state[0].W_enc - jr.W_enc))
    assert float(jnp.abs(moved[0][0]).max()) > 1e-4
    np.testing.assert_allclose(moved[1][0], 7.0 * moved[0][0], rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(moved[1][1], moved[0][1])


def eqx_filter(module):
    import equinox as eqx

    return eqx.filter(module, eqx.is_inexact_array)


def test_resume_in_process_is_bit_identical(tmp_path):
    X = np.random.default_rng(11).normal(size=(2048, 8)).astype(np.float32)
    store = S.ArrayStore(X, fill_size=512, seed=3)
    cfg = S.TrainConfig(n_steps=32, batch_size=64, lr=1e-3, lr_warmup=4, sparsity_coefficient=0.5, sparsity_warmup=8)
    sae = S.init_sae("jumprelu", S.SAEConfig(8, 24), jax.random.key(0), bandwidth=0.05, threshold=0.1)
    full = S.train_sae(sae, store, cfg, progress=False)
    part = S.train_sae(sae, store, cfg, checkpoint_dir=str(tmp_path), progress=False, stop_after_fills=2)
    assert part.steps == 16
    resumed = S.train_sae(sae, store, cfg, checkpoint_dir=str(tmp_path), progress=False)
    assert resumed.steps == 32
    chex.assert_trees_all_equal(resumed.sae, full.sae)
    np.testing.assert_array_equal(resumed.history["loss"], full.history["loss"])
    with pytest.raises(JaxinterpError, match="resume with the same settings"):
        S.train_sae(
            sae, store, S.TrainConfig(n_steps=32, batch_size=64, lr=2e-3), checkpoint_dir=str(tmp_path), progress=False
        )


def test_model_store_reads_the_cache(model):
    ctx = np.random.default_rng(12).integers(0, CFG.d_vocab, (16, 10)).astype(np.int32)
    store = S.ModelStore(
        model, ctx, "ln2.normalized", LAYER, target_site="mlp_out", contexts_per_fill=8, model_batch=4, seed=5
    )
    x, y = store.fill(1)
    order = np.random.default_rng(5).permutation(16)[8:16]
    _, cache = model.run_with_cache(jnp.asarray(ctx[order]), names=["ln2.normalized", "mlp_out"])
    np.testing.assert_allclose(x, np.asarray(cache["ln2.normalized"][LAYER, :, 1:]).reshape(-1, 32), atol=1e-5)
    np.testing.assert_allclose(y, np.asarray(cache["mlp_out"][LAYER, :, 1:]).reshape(-1, 32), atol=1e-5)
    xs, ys = store.batches(1, 24)
    xs2, _ = store.batches(1, 24)
    chex.assert_trees_all_equal(xs, xs2)
    assert xs.shape == (3, 24, 32)
    # the batches are a permutation of the fill's rows, targets paired with their inputs
    match = np.all(np.isclose(np.asarray(xs[0])[:, None], np.asarray(x)[None]), -1)
    rows = match.argmax(1)
    np.testing.assert_allclose(ys[0], np.asarray(y)[rows], atol=1e-6)


def test_corpus_sources(tmp_path):
    (tmp_path / "a.txt").write_text("hello world")
    (tmp_path / "b.txt").write_text("goodbye")
    assert S.corpus_texts(str(tmp_path)) == ["hello world", "goodbye"]
    assert S.corpus_texts(str(tmp_path / "a.txt")) == ["hello world"]
    assert S.corpus_texts(iter(["x", "y"])) == ["x", "y"]
    with pytest.raises(JaxinterpError, match="neither a file nor a folder"):
        S.corpus_texts(str(tmp_path / "missing"))
    with pytest.raises(JaxinterpError, match="must yield str"):
        S.corpus_texts([1, 2])


# ---------------------------------------------------------------------------- splicing


def test_splice_with_error_term_reproduces_logits(model, tokens, sae, transcoder):
    clean = model(tokens)
    chex.assert_trees_all_close(model(tokens, [S.splice(sae, error=True)]), clean, atol=1e-5, rtol=0)
    chex.assert_trees_all_close(S.spliced_forward(model, transcoder, tokens, error=True), clean, atol=1e-5, rtol=0)


def test_splice_without_error_equals_patching_the_reconstruction(model, tokens, sae, transcoder):
    _, cache = model.run_with_cache(tokens, names=["resid_pre", "ln2.normalized"])
    want = model(tokens, [ji.Patch("resid_pre", sae(cache["resid_pre"][LAYER]), layer=LAYER)])
    got = model(tokens, [S.splice(sae)])
    chex.assert_trees_all_close(got, want, atol=1e-5, rtol=0)
    assert float(jnp.abs(got - model(tokens)).max()) > 0.1  # the reconstruction is not the activation
    want = model(tokens, [ji.Patch("mlp_out", transcoder(cache["ln2.normalized"][LAYER]), layer=LAYER)])
    chex.assert_trees_all_close(S.spliced_forward(model, transcoder, tokens), want, atol=1e-5, rtol=0)


def test_feature_ablation_and_steering_equal_adding_decoder_rows(model, tokens, sae):
    _, cache = model.run_with_cache(tokens, names=["resid_pre"])
    f = sae.encode(cache["resid_pre"][LAYER])
    i = int(jnp.argmax(f.sum(0)))
    scale = jnp.ones(64).at[i].set(0.0)
    want = model(tokens, [ji.Add("resid_pre", -f[:, i : i + 1] * sae.W_dec[i], layer=LAYER)])
    chex.assert_trees_all_close(
        model(tokens, [S.splice(sae, error=True, feature_scale=scale)]), want, atol=1e-4, rtol=0
    )
    delta = jnp.zeros(64).at[i].set(3.0)
    want = model(tokens, [ji.Add("resid_pre", 3.0 * sae.W_dec[i], layer=LAYER)])
    chex.assert_trees_all_close(
        model(tokens, [S.splice(sae, error=True, feature_delta=delta)]), want, atol=1e-4, rtol=0
    )


def metric(logits):
    return logits[-1, 3] - logits[-1, 5]


def test_feature_attribution_matches_finite_differences(model, tokens, sae):
    out = S.feature_attribution(model, sae, tokens, metric)
    assert float(out["metric"]) == pytest.approx(float(metric(model(tokens))), abs=1e-5)
    v = jax.random.normal(jax.random.key(9), (tokens.shape[0], 64))
    h = 1e-2
    run = lambda d: float(metric(model(tokens, [S.splice(sae, error=True, feature_delta=d)])))
    fd = (run(h * v) - run(-h * v)) / (2 * h)
    assert float(jnp.sum(out["grad"] * v)) == pytest.approx(fd, rel=2e-3, abs=1e-4)
    f = S.feature_acts(model, sae, tokens)
    np.testing.assert_allclose(out["attribution"], -out["grad"] * f, rtol=1e-6)


def test_feature_patch_equals_a_loop(model, tokens, sae):
    source = jnp.asarray(np.random.default_rng(13).integers(0, CFG.d_vocab, tokens.shape[0]))
    feats = jnp.asarray([0, 5, 17, 40])
    got = S.feature_patch(model, sae, tokens, metric, feats, source_tokens=source)
    f_base, f_src = S.feature_acts(model, sae, tokens), S.feature_acts(model, sae, source)
    for j, i in enumerate(np.asarray(feats)):
        delta = jnp.zeros_like(f_base).at[:, i].set(f_src[:, i] - f_base[:, i])
        want = metric(model(tokens, [S.splice(sae, error=True, feature_delta=delta)]))
        assert float(got[j]) == pytest.approx(float(want), abs=1e-4)


def test_evaluate_matches_direct_computation(model, sae):
    ctx = np.random.default_rng(14).integers(0, CFG.d_vocab, (4, 10)).astype(np.int32)
    m = S.evaluate(model, sae, ctx, batch=2)
    logits = np.asarray(model(jnp.asarray(ctx)), np.float64)
    logp = (
        logits
        - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - logits.max(-1, keepdims=True)
    )
    ce = -np.take_along_axis(logp[:, :-1], ctx[:, 1:, None], -1).mean()
    assert m["ce_original"] == pytest.approx(ce, rel=1e-5)
    # evaluate leaves position 0 (BOS, excluded from training) unspliced
    spliced = np.asarray(
        jax.vmap(lambda t: model.forward(t, [S.splice(sae, pos=jnp.arange(10) >= 1)])[0])(jnp.asarray(ctx)), np.float64
    )
    lps = (
        spliced
        - np.log(np.exp(spliced - spliced.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - spliced.max(-1, keepdims=True)
    )
    assert m["ce_spliced"] == pytest.approx(-np.take_along_axis(lps[:, :-1], ctx[:, 1:, None], -1).mean(), rel=1e-5)
    kl = (np.exp(logp[:, :-1]) * (logp[:, :-1] - lps[:, :-1])).sum(-1).mean()
    assert m["kl"] == pytest.approx(kl, rel=1e-4)
    assert m["ce_recovered_zero"] == pytest.approx(
        (m["ce_zero_ablation"] - m["ce_spliced"]) / (m["ce_zero_ablation"] - m["ce_original"])
    )
    assert m["error_term_max_abs_logit_diff"] < 1e-5
    assert m["l0"] == pytest.approx(8.0)


# ---------------------------------------------------------------------------- files


def test_saelens_file_written_by_hand(tmp_path):
    rng = np.random.default_rng(15)
    d_in, d_sae = 10, 24
    w = {
        "W_enc": rng.normal(size=(d_in, d_sae)),
        "b_enc": rng.normal(size=d_sae) * 0.1,
        "W_dec": rng.normal(size=(d_sae, d_in)),
        "b_dec": rng.normal(size=d_in),
        "threshold": rng.uniform(0.1, 0.5, d_sae),
    }
    w = {k: v.astype(np.float32) for k, v in w.items()}
    x = rng.normal(size=(4, d_in)).astype(np.float32)
    # SAELens 6 layout: hook under metadata; jumprelu, no b_dec subtraction
    (tmp_path / "jr").mkdir()
    save_file(w, str(tmp_path / "jr" / "sae_weights.safetensors"))
    (tmp_path / "jr" / "cfg.json").write_text(
        json.dumps(
            {
                "architecture": "jumprelu",
                "d_in": d_in,
                "d_sae": d_sae,
                "dtype": "float32",
                "device": "cpu",
                "apply_b_dec_to_input": False,
                "normalize_activations": "none",
                "reshape_activations": "none",
                "metadata": {"model_name": "gpt2", "hook_name": "blocks.7.hook_resid_post", "context_size": 128},
            }
        )
    )
    sae = S.load_saelens(str(tmp_path / "jr"))
    assert (sae.kind, sae.cfg.site, sae.cfg.layer) == ("jumprelu", "resid_post", 7)
    pre = x @ w["W_enc"] + w["b_enc"]
    f = pre * (pre > w["threshold"])
    np.testing.assert_allclose(sae(jnp.asarray(x)), f @ w["W_dec"] + w["b_dec"], rtol=1e-4, atol=1e-4)
    # SAELens < 6 layout: top-level hook, standard (ReLU) with b_dec subtracted
    (tmp_path / "std").mkdir()
    save_file({k: v for k, v in w.items() if k != "threshold"}, str(tmp_path / "std" / "sae_weights.safetensors"))
    (tmp_path / "std" / "cfg.json").write_text(
        json.dumps(
            {
                "architecture": "standard",
                "d_in": d_in,
                "d_sae": d_sae,
                "hook_name": "blocks.3.hook_resid_pre",
                "hook_layer": 3,
                "apply_b_dec_to_input": True,
                "activation_fn_str": "relu",
                "normalize_activations": "none",
            }
        )
    )
    sae = S.load_saelens(str(tmp_path / "std"))
    f = np.maximum((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"], 0)
    np.testing.assert_allclose(sae(jnp.asarray(x)), f @ w["W_dec"] + w["b_dec"], rtol=1e-4, atol=1e-4)
    # topk with k in activation_fn_kwargs
    cfg = json.loads((tmp_path / "std" / "cfg.json").read_text())
    (tmp_path / "std" / "cfg.json").write_text(
        json.dumps({**cfg, "architecture": "topk", "activation_fn_kwargs": {"k": 3}})
    )
    sae = S.load_saelens(str(tmp_path / "std"))
    assert sae.k == 3 and int((sae.encode(jnp.asarray(x)) > 0).sum(-1).max()) <= 3
    # our own save is readable as SAELens (a round trip through the same reader)
    for s in all_variants(S.SAEConfig(12, 40, layer=2)):
        s.fold_scale(1.0, 1.0)
        S.save_sae(s, str(tmp_path / s.kind))
        back = S.load_sae(str(tmp_path / s.kind))
        xx = jnp.asarray(rng.normal(size=(3, 12)).astype(np.float32))
        np.testing.assert_allclose(back(xx), s(xx), rtol=1e-6, atol=1e-6)
        assert type(back) is type(s) and back.cfg == s.cfg


def test_gemma_scope_npz(tmp_path):
    rng = np.random.default_rng(16)
    w = {
        "W_enc": rng.normal(size=(10, 20)),
        "W_dec": rng.normal(size=(20, 10)),
        "b_enc": rng.normal(size=20),
        "b_dec": rng.normal(size=10),
        "threshold": rng.uniform(0.05, 0.3, 20),
    }
    np.savez(tmp_path / "params.npz", **{k: v.astype(np.float32) for k, v in w.items()})
    sae = S.load_gemma_scope(str(tmp_path / "params.npz"), site="resid_post", layer=12)
    x = rng.normal(size=(5, 10)).astype(np.float32)
    pre = x @ w["W_enc"] + w["b_enc"]  # Gemma Scope's reference: mask * relu(pre)
    f = (pre > w["threshold"]) * np.maximum(pre, 0)
    np.testing.assert_allclose(sae(jnp.asarray(x)), f @ w["W_dec"] + w["b_dec"], rtol=1e-4, atol=1e-4)


def test_bad_files_raise_clear_errors(tmp_path):
    rng = np.random.default_rng(17)
    good = {
        "W_enc": rng.normal(size=(4, 6)),
        "b_enc": np.zeros(6),
        "W_dec": rng.normal(size=(6, 4)),
        "b_dec": np.zeros(4),
    }
    good = {k: v.astype(np.float32) for k, v in good.items()}
    cfg = {"architecture": "standard", "d_in": 4, "d_sae": 6, "hook_name": "blocks.0.hook_resid_pre"}

    def write(name, arrays, config):
        d = tmp_path / name
        d.mkdir()
        if arrays is not None:
            save_file(arrays, str(d / "sae_weights.safetensors"))
        if config is not None:
            (d / "cfg.json").write_text(json.dumps(config))
        return str(d)

    cases = [
        (write("no_cfg", good, None), "cfg.json not found"),
        (write("no_weights", None, cfg), "sae_weights.safetensors not found"),
        (write("missing", {k: v for k, v in good.items() if k != "b_enc"}, cfg), "no tensor 'b_enc'"),
        (
            write("shape", {**good, "W_dec": good["W_dec"].T.copy()}, cfg),
            r"'W_dec' has shape \(4, 6\), expected \(6, 4\)",
        ),
        (write("arch", good, {**cfg, "architecture": "gated"}), "architecture 'gated' is not supported"),
        (write("jr_no_threshold", good, {**cfg, "architecture": "jumprelu"}), "no tensor 'threshold'"),
        (write("topk_no_k", good, {**cfg, "architecture": "topk"}), "needs 'k'"),
    ]
    d = write("corrupt", good, cfg)
    with open(os.path.join(d, "sae_weights.safetensors"), "r+b") as f:
        f.write(b"\xff" * 16)
    cases.append((d, "not a readable safetensors"))
    d = write("badjson", good, None)
    (tmp_path / "badjson" / "cfg.json").write_text("{not json")
    cases.append((d, "not valid JSON"))
    for path, msg in cases:
        with pytest.raises(S.SAEFileError, match=msg):
            S.load_saelens(path)
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(S.SAEFileError, match="not a readable .npz"):
        S.load_gemma_scope(str(tmp_path / "bad.npz"), site="resid_post", layer=0)
    np.savez(tmp_path / "short.npz", W_enc=good["W_enc"], W_dec=good["W_dec"], b_enc=good["b_enc"], b_dec=good["b_dec"])
    with pytest.raises(S.SAEFileError, match="no tensor 'threshold'"):
        S.load_gemma_scope(str(tmp_path / "short.npz"), site="resid_post", layer=0)
    assert issubclass(S.SAEFileError, JaxinterpError)


def test_bad_arguments_name_what_is_wrong():
    with pytest.raises(JaxinterpError, match="transcoder's input and target differ"):
        S.SAEConfig(8, 16, site="ln2.normalized", target_site="mlp_out")
    with pytest.raises(JaxinterpError, match="k must be in"):
        S.init_sae("topk", S.SAEConfig(8, 16), jax.random.key(0), k=20)
    with pytest.raises(JaxinterpError, match="kind must be one of"):
        S.init_sae("gated", S.SAEConfig(8, 16), jax.random.key(0))
    tc = S.init_sae(
        "relu",
        S.SAEConfig(8, 16, site="ln2.normalized", target_site="mlp_out", apply_b_dec_to_input=False),
        jax.random.key(0),
    )
    with pytest.raises(JaxinterpError, match="pass inputs="):
        S.splice(tc)


# ---------------------------------------------------------------------------- dashboards


class _Tok:
    def decode(self, ids):
        return "".join(f"<t{i}>" for i in ids)  # markup-like strings: the page must escape them


def test_dashboard_html_shows_the_computed_numbers(model, sae, tmp_path):
    import html.parser

    from jaxinterp.report import external_resources
    from jaxinterp.viz.sae_dashboard import save_sae_dashboard

    ctx = np.random.default_rng(18).integers(0, CFG.d_vocab, (6, 12)).astype(np.int32)
    _, cache = model.run_with_cache(jnp.asarray(ctx), names=["resid_pre"])
    acts = np.asarray(sae.encode(cache["resid_pre"][LAYER]))[:, 1:]  # independent of the dashboard's own pass
    rates = (acts > 0).reshape(-1, 64).mean(0)
    feats = [int(np.argmax(rates)), int(np.argsort(rates)[len(rates) // 2])]
    dash = S.feature_dashboards(model, sae, ctx, _Tok(), feats, n_top=3, n_logits=4, bins=5)
    path = save_sae_dashboard(dash, str(tmp_path / "d.html"))
    text = open(path).read()
    assert external_resources(text) == []

    class Parser(html.parser.HTMLParser):
        def __init__(self):
            super().__init__()
            self.cards, self.card = [], None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "section":
                self.card = {
                    "feature": int(a["data-feature"]),
                    "rate": float(a["data-firing-rate"]),
                    "max": float(a["data-max-act"]),
                    "ctx_max": [],
                    "hist": [],
                    "logits": [],
                }
                self.cards.append(self.card)
            elif tag == "div" and "data-max" in a:
                self.card["ctx_max"].append(float(a["data-max"]))
            elif tag == "rect":
                self.card["hist"].append(int(a["data-count"]))
            elif tag == "tr" and "data-value" in a:
                self.card["logits"].append((a["data-token"], float(a["data-value"])))

    p = Parser()
    p.feed(text)
    assert [c["feature"] for c in p.cards] == feats
    W = np.asarray(sae.W_dec) @ np.asarray(model.unembed.W_U)
    for card in p.cards:
        f = card["feature"]
        a = acts[..., f].reshape(-1)
        assert card["rate"] == pytest.approx(rates[f], abs=1e-7)
        assert card["max"] == pytest.approx(a.max(), rel=1e-5)
        np.testing.assert_allclose(card["ctx_max"], np.sort(a)[::-1][: len(card["ctx_max"])], rtol=1e-5)
        assert len(card["ctx_max"]) == min(3, int((a > 0).sum()))
        assert card["hist"] == np.histogram(a[a > 0], bins=5)[0].tolist()
        up = np.argsort(-W[f])[:4]
        down = np.argsort(W[f])[:4]
        assert card["logits"][:4] == [(f"<t{i}>", pytest.approx(W[f, i], rel=1e-5)) for i in up]
        assert card["logits"][4:] == [(f"<t{i}>", pytest.approx(W[f, i], rel=1e-5)) for i in down]
