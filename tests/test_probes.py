"""Probes against references we did not write: the ridge normal equations (numpy), Newton's
method / IRLS for binary logistic regression (numpy), scipy's L-BFGS for softmax
regression, scipy.stats for Spearman, pair counting for AUC; vmapped per-layer training
against a loop; activations from padded batches against single unpadded runs."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats

import jaxinterp as ji
from jaxinterp.features.activations import ActivationsError, collect_activations, last_entity_positions
from jaxinterp.features.control_tasks import control_targets
from jaxinterp.features.datasets import DatasetError, load_csv, load_jsonl, load_sae_probes
from jaxinterp.features.probes import ProbeError, r2_score, roc_auc, spearman, train_probes
from jaxinterp.features.probes import fit_probe_jit as fit_probe
from jaxinterp.features.sparse_probing import rank_l1, rank_mean_difference, sparse_probe_curve
from jaxinterp.toy import random_model

jax.config.update("jax_default_matmul_precision", "highest")

N, D, L2 = 90, 6, 0.05


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D)) * rng.uniform(0.5, 3, size=D) + rng.normal(size=D)
    w = rng.normal(size=D)
    logits = X @ w - (X @ w).mean()
    return X, w, X @ w + rng.normal(size=N), (rng.uniform(size=N) < 1 / (1 + np.exp(-logits))).astype(np.int32)


def _z(X):
    mu, sd = X.mean(0), np.sqrt(X.var(0) + 1e-6)
    return (X - mu) / sd


def test_ridge_equals_normal_equations(data):
    X, _, y, _ = data
    probe, _ = fit_probe(X, y, "regression", L2, n_steps=100)
    Z, ys = _z(X), y.std()
    # minimise 0.5 mean((Z W + b - y)^2) + 0.5 l2 |W|^2 over standardised y: the normal
    # equations of the centred problem; the intercept is the mean.
    W = np.linalg.solve(Z.T @ Z / N + L2 * np.eye(D), Z.T @ ((y - y.mean()) / ys) / N) * ys
    np.testing.assert_allclose(np.asarray(probe.W[:, 0]), W, atol=1e-4 * np.abs(W).max())
    np.testing.assert_allclose(float(probe.b[0]), y.mean(), rtol=1e-5)
    pred = np.asarray(probe.predict(jnp.asarray(X)))
    np.testing.assert_allclose(pred, Z @ W + y.mean(), rtol=1e-4, atol=1e-4)


def test_binary_logistic_equals_newton(data):
    X, _, _, yb = data
    probe, _ = fit_probe(X, yb, "binary", L2, n_steps=100)
    A = np.c_[_z(X), np.ones(N)]
    R = np.diag([L2] * D + [0.0])
    th = np.zeros(D + 1)
    for _ in range(50):  # Newton / IRLS on the same objective
        p = 1 / (1 + np.exp(-A @ th))
        th -= np.linalg.solve(A.T @ (A * (p * (1 - p))[:, None]) / N + R, A.T @ (p - yb) / N + R @ th)
    np.testing.assert_allclose(np.asarray(probe.W[:, 0]), th[:D], atol=1e-4)
    np.testing.assert_allclose(float(probe.b[0]), th[D], atol=1e-4)
    newton, _ = fit_probe(X, yb, "binary", L2, optimizer="newton")  # the jax Newton option
    np.testing.assert_allclose(np.asarray(newton.W[:, 0]), th[:D], atol=1e-4)


def test_multiclass_logistic_equals_scipy(data):
    X, w, _, _ = data
    y = np.digitize(X @ w, np.quantile(X @ w, [1 / 3, 2 / 3])).astype(np.int32)  # 3 classes
    probe, _ = fit_probe(X, y, "multiclass", L2, n_classes=3, n_steps=200)
    Z = _z(X)

    def f(theta):
        W, b = theta[: D * 3].reshape(D, 3), theta[D * 3 :]
        out = Z @ W + b
        lse = scipy.special.logsumexp(out, axis=1)
        P = np.exp(out - lse[:, None])
        onehot = np.eye(3)[y]
        loss = np.mean(lse - out[np.arange(N), y]) + 0.5 * L2 * np.sum(W**2)
        gW = Z.T @ (P - onehot) / N + L2 * W
        return loss, np.r_[gW.ravel(), (P - onehot).mean(0)]

    ref = scipy.optimize.minimize(
        f, np.zeros(D * 3 + 3), jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 5000}
    )
    W_ref = ref.x[: D * 3].reshape(D, 3)
    # Softmax logits are defined up to a constant per row: compare centred weights.
    W = np.asarray(probe.W)
    np.testing.assert_allclose(W - W.mean(1, keepdims=True), W_ref - W_ref.mean(1, keepdims=True), atol=2e-4)


def test_vmapped_layers_equal_loop(data):
    X, w, y, yb = data
    rng = np.random.default_rng(1)
    acts = np.stack([X, X @ rng.normal(size=(D, D)), rng.normal(size=(N, D))])  # [layer, n, d]
    everything = np.arange(N)
    res = train_probes(
        acts, yb, "binary", l2=L2, splits={"train": everything, "val": everything[:0], "test": everything}, n_steps=100
    )
    for layer in range(3):
        one, _ = fit_probe(acts[layer], yb, "binary", L2, n_steps=100)  # a plain loop over layers
        np.testing.assert_allclose(np.asarray(res.layer(layer).W), np.asarray(one.W), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(res.layer(layer).b), np.asarray(one.b), rtol=1e-4, atol=1e-5)
    # The informative layers beat the noise layer 2.
    assert min(res.test()[:2]) > res.test()[2] + 0.1


def test_early_stopping_keeps_best_validation(data):
    X, _, y, _ = data
    # Adam from zero with a tiny patience: the kept parameters have the validation loss
    # reported, and training with the same budget but no validation differs.
    p_es, v = fit_probe(
        X[:60], y[:60], "regression", 0.0, X[60:], y[60:], n_steps=50, patience=3, optimizer="adam", learning_rate=0.3
    )
    pred = np.asarray(p_es.predict(jnp.asarray(X[60:])))
    ys = y[:60].std()
    np.testing.assert_allclose(float(v), 0.5 * np.mean(((pred - y[60:]) / ys) ** 2), rtol=1e-4)


def test_metrics_against_references():
    rng = np.random.default_rng(2)
    s = np.round(rng.normal(size=60), 1)  # ties
    y = (rng.uniform(size=60) < 0.5).astype(int)
    pairs = [(a > b) + 0.5 * (a == b) for a in s[y == 1] for b in s[y == 0]]
    assert roc_auc(s, y) == pytest.approx(np.mean(pairs), abs=1e-12)
    t = s + rng.normal(size=60)
    assert spearman(s, t) == pytest.approx(scipy.stats.spearmanr(s, t).statistic, abs=1e-12)
    assert r2_score(t, s) == pytest.approx(1 - np.sum((s - t) ** 2) / np.sum((s - s.mean()) ** 2))


def test_control_targets_are_a_function_of_type():
    types = np.array([5, 3, 5, 9, 3, 5, 7])
    targets = np.array([0, 1, 1, 0, 1, 0, 1])
    c = control_targets(types, targets, seed=3)
    for t in np.unique(types):
        assert len(set(c[types == t])) == 1
    assert set(c) <= set(targets)


def test_sparse_probing_finds_the_signal_neurons():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(400, 40)).astype(np.float32)
    y = (X[:, 3] + X[:, 17] > 0).astype(np.int32)
    for rank in (rank_mean_difference(X, y), rank_l1(X, y)):
        assert set(rank[:2]) == {3, 17}
    c = sparse_probe_curve(X[:300], y[:300], X[300:], y[300:], (1, 2, 40))
    assert c["accuracy"][1] > 0.95 and c["accuracy"][0] < c["accuracy"][1]
    with pytest.raises(ProbeError, match="every k"):
        sparse_probe_curve(X[:300], y[:300], X[300:], y[300:], (0, 41))


# -- activations ------------------------------------------------------------------------------------


class CharTokenizer:
    """A stand-in tokenizer: one token per character (ids 3..), pad 0."""

    pad_token_id, eos_token_id = 0, 1

    def encode(self, text, prepend_bos=None):
        return [3 + (ord(c) % 40) for c in text]


@pytest.fixture(scope="module")
def tiny():
    cfg = ji.ModelConfig(
        d_model=16,
        n_layers=2,
        n_heads=2,
        d_head=8,
        d_mlp=32,
        d_vocab=48,
        n_ctx=32,
        act_fn="silu",
        normalization="rmsnorm",
        positional="rotary",
        gated_mlp=True,
        family="llama",
    )
    return random_model(cfg, seed=0, std=0.3)


def test_padded_batches_equal_single_runs(tiny, tmp_path):
    tok = CharTokenizer()
    prompts = ["hello", "a longer one", "xy", "abcde", "q"]  # 5, 12, 2, 5, 1 tokens
    # Single unpadded runs, one per prompt: the reference ([layer, pos, d] each).
    singles = [
        np.asarray(tiny.run_with_cache(jnp.asarray(tok.encode(p)), names=["resid_post"])[1]["resid_post"])
        for p in prompts
    ]
    for position in ("last", "mean", [1, 10, 0, 2, 0]):
        got = collect_activations(
            tiny, tok, prompts, "resid_post", position, batch_size=2, pad_multiple=8, cache_dir=str(tmp_path)
        )
        assert got.acts.shape == (2, 5, 16)
        for i, a in enumerate(singles):
            want = a.mean(1) if position == "mean" else a[:, -1 if position == "last" else position[i]]
            np.testing.assert_allclose(got.acts[:, i], want, atol=1e-4, rtol=1e-4)
    files = os.listdir(tmp_path)
    assert len(files) == 3
    again = collect_activations(
        tiny, tok, prompts, "resid_post", [1, 10, 0, 2, 0], batch_size=2, pad_multiple=8, cache_dir=str(tmp_path)
    )
    np.testing.assert_array_equal(again.acts, got.acts)
    one = collect_activations(tiny, tok, prompts, "blocks.1.hook_resid_post", "last", batch_size=2, pad_multiple=8)
    np.testing.assert_allclose(one.acts, np.stack([a[1, -1] for a in singles]), atol=1e-4, rtol=1e-4)
    assert last_entity_positions(tok, ["the cat sat"], ["cat"]) == [6]
    with pytest.raises(ActivationsError, match="outside prompt"):
        collect_activations(tiny, tok, prompts, "resid_post", 7)
    with pytest.raises(ji.SiteError):
        collect_activations(tiny, tok, prompts, "resid_mystery")


# -- datasets -----------------------------------------------------------------------------------------


def test_bundled_sae_probes():
    sst2 = load_sae_probes("92_glue_sst2")
    assert len(sst2) == 5000 and sst2.kind == "classification" and sst2.classes == ("0", "1")
    lat = load_sae_probes("18_world_latitude")
    assert lat.kind == "regression" and -90 <= lat.targets.min() and lat.targets.max() <= 90
    sample = sst2.sample(100, seed=0)
    assert len(sample) == 100 and sample.targets.sum() == 50
    with pytest.raises(DatasetError, match="no sae-probes dataset"):
        load_sae_probes("92_glue_sst")


def test_user_files(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('text,label\n"good film",pos\n"bad film",neg\n"fine",pos\n')
    ds = load_csv(str(p), "text", "label")
    assert ds.classes == ("neg", "pos") and ds.targets.tolist() == [1, 0, 1]
    with pytest.raises(DatasetError, match="lacks column"):
        load_csv(str(p))
    j = tmp_path / "d.jsonl"
    j.write_text('{"prompt": "Paris", "target": 48.9}\n{"prompt": "Oslo", "target": 59.9}\n')
    assert load_jsonl(str(j), kind="regression").targets.tolist() == [48.9, 59.9]
    j.write_text('{"prompt": "Paris", "target": 48.9}\nnot json\n')
    with pytest.raises(DatasetError, match="line 2 is not JSON"):
        load_jsonl(str(j))
