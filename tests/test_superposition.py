"""Toy models of superposition: trained geometry against the paper's results and closed
forms, the analytic phase boundaries against Monte Carlo, and one compile per sweep.

References: Elhage et al. 2022 (pentagon at high sparsity with 5 features in 2 dimensions;
only the d_hidden most important features at zero sparsity; dimensionalities 1, 1/2, 2/5),
a direct 2-parameter optimisation of the pentagon family (norm and bias) as a second
method for the pentagon's norm, and Monte Carlo estimates of each phase's loss."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxinterp.toy import (
    ReLUOutputTMS,
    TMSError,
    analytic_losses,
    analytic_phase,
    classify_phase,
    dimensions_per_feature,
    feature_dimensionality,
    feature_norms,
    gram,
    importance_powers,
    sparse_features,
    superposition,
    tms_grid,
    tms_loss,
    train_phase_diagram,
    train_tms,
)

N_SEEDS = 8


@pytest.fixture(scope="module")
def five_in_two():
    """One compiled call: 8 seeds at S = 0.9 with equal importance, 8 seeds at S = 0 with
    importance 0.7^i; the best seed (least eval loss) of each."""
    keys, S, I = tms_grid(jax.random.key(0), [0.9, 0.0], importance_powers(5, [1.0, 0.7])[[0, 1]], N_SEEDS)
    # keep (S=0.9, r=1) and (S=0, r=0.7): rows 0..7 and 24..31 of the 2x2 grid
    pick = np.r_[0:N_SEEDS, 3 * N_SEEDS : 4 * N_SEEDS]
    run = train_tms(keys[pick], S[pick], I[pick], d_hidden=2, steps=2000)
    W = np.asarray(run.models.W).reshape(2, N_SEEDS, 2, 5)
    best = np.asarray(run.eval_loss).reshape(2, N_SEEDS).argmin(-1)
    return W[0, best[0]], W[1, best[1]], np.asarray(run.models.b).reshape(2, N_SEEDS, 5)[0, best[0]]


def _pentagon_optimum(sparsity: float) -> float:
    """Second method: the loss-optimal norm ``a`` of a regular pentagon ``W_i = a (cos 72i,
    sin 72i)`` with one shared bias, fitted directly (2 parameters) on 100k samples."""
    x = sparse_features(jax.random.key(7), 100_000, 5, sparsity)
    ang = 2 * np.pi * np.arange(5) / 5
    D = jnp.asarray(np.stack([np.cos(ang), np.sin(ang)]), jnp.float32)

    def loss(p):
        return tms_loss(ReLUOutputTMS(p[0] * D, jnp.full(5, p[1])), x, jnp.ones(5))

    opt = optax.adam(2e-2)

    @jax.jit
    def fit(p):
        def step(carry, _):
            p, s = carry
            g = jax.grad(loss)(p)
            u, s = opt.update(g, s)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (p, opt.init(p)), None, length=400)[0][0]

    return float(fit(jnp.array([1.0, 0.0]))[0])


def test_sparse_features_pentagon(five_in_two):
    W, _, b = five_in_two
    angles = np.sort(np.degrees(np.arctan2(W[1], W[0])))
    gaps = np.diff(np.r_[angles, angles[0] + 360])  # consecutive directions around the circle
    np.testing.assert_allclose(gaps, 72.0, atol=5.0)
    cos = (W.T @ W) / np.outer(np.linalg.norm(W, axis=0), np.linalg.norm(W, axis=0))
    pairwise = np.degrees(np.arccos(np.clip(cos[np.triu_indices(5, 1)], -1, 1)))
    assert np.all(np.minimum(np.abs(pairwise - 72), np.abs(pairwise - 144)) < 5.0), pairwise
    norms = np.linalg.norm(W, axis=0)
    # |norm - 1| <= 0.1 holds only at the edge: the loss-optimal pentagon has norm ~1.10
    # at S = 0.9 (a negative bias filters interference; a longer W_i makes up for it).
    assert np.all(np.abs(norms - 1.0) < 0.12), norms
    np.testing.assert_allclose(norms, _pentagon_optimum(0.9), atol=0.02)
    assert np.all(b < 0)  # the bias that removes interference
    np.testing.assert_allclose(np.asarray(feature_dimensionality(W)), 2 / 5, atol=0.03)  # the paper's pentagon


def test_dense_features_keep_only_the_most_important(five_in_two):
    _, W, _ = five_in_two
    norms = np.linalg.norm(W, axis=0)
    assert set(np.flatnonzero(norms > 0.5)) == {0, 1}, norms  # importance 0.7^i: features 0 and 1
    assert np.all(norms[2:] < 0.1), norms
    np.testing.assert_allclose(norms[:2], 1.0, atol=0.05)
    assert abs(W[:, 0] @ W[:, 1]) < 0.05  # orthogonal: no superposition without sparsity


def test_metrics_closed_forms():
    ang = 2 * np.pi * np.arange(5) / 5
    pentagon = np.stack([np.cos(ang), np.sin(ang)])
    antipodal = np.array([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])  # a pair, a dedicated, a dropped
    np.testing.assert_allclose(feature_dimensionality(jnp.asarray(pentagon)), 0.4, atol=1e-5)
    np.testing.assert_allclose(feature_dimensionality(jnp.asarray(antipodal)), [0.5, 0.5, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(dimensions_per_feature(jnp.asarray(pentagon)), 2 / 5, atol=1e-6)
    W = np.random.default_rng(0).normal(size=(3, 3, 7))  # batch of 3 models
    for k in range(3):
        Wk = W[k]
        n = np.linalg.norm(Wk, axis=0)
        direct = np.array([sum((Wk[:, i] / n[i] @ Wk[:, j]) ** 2 for j in range(7) if j != i) for i in range(7)])
        np.testing.assert_allclose(superposition(jnp.asarray(W))[k], direct, rtol=1e-4)
        np.testing.assert_allclose(feature_dimensionality(jnp.asarray(W))[k], n**2 / (n**2 + direct), rtol=1e-4)
        np.testing.assert_allclose(gram(jnp.asarray(W))[k], Wk.T @ Wk, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(feature_norms(jnp.asarray(W))[k], n, rtol=1e-5)


@pytest.mark.parametrize("r, p", [(0.3, 0.9), (3.0, 0.8), (1.0, 0.1), (0.2, 0.05)])
def test_analytic_losses_match_monte_carlo(r, p):
    """The closed-form losses of the three configurations equal the model's loss on samples."""
    x = sparse_features(jax.random.key(3), 400_000, 2, 1.0 - p)
    imp = jnp.array([1.0, r])
    configs = [
        ReLUOutputTMS(jnp.array([[1.0, 0.0]]), jnp.array([0.0, p / 2])),
        ReLUOutputTMS(jnp.array([[0.0, 1.0]]), jnp.array([p / 2, 0.0])),
        ReLUOutputTMS(jnp.array([[1.0, -1.0]]), jnp.zeros(2)),
    ]
    mc = np.array([float(tms_loss(m, x, imp)) for m in configs])
    np.testing.assert_allclose(analytic_losses(r, p), mc, rtol=0.03, atol=2e-4)
    assert analytic_phase(r, p) == np.argmin(mc)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_phase_diagram_regions_in_one_compiled_call():
    """Cells far from the boundaries land in the paper's three regions; the whole grid of
    (density, importance, seed) is one compiled program, and new values of the same shapes
    (and a new learning rate) reuse it."""
    records = _Records()
    logger = logging.getLogger("jax")
    logger.addHandler(records)
    try:
        with jax.log_compiles():
            diagram = train_phase_diagram(jax.random.key(0), [0.1, 10.0], [1.0, 0.03], n_seeds=2, steps=1500)
            compiled = [m for m in records.messages if m.startswith("Compiling") and "_train_many" in m]
            keys, S, I = tms_grid(jax.random.key(1), [0.5, 0.99], importance_powers(2, [0.9, 0.5]), n_seeds=2)
            records.messages.clear()
            other = train_tms(keys, S, I, d_hidden=1, steps=1500, learning_rate=3e-3)
            again = [m for m in records.messages if m.startswith("Compiling")]
    finally:
        logger.removeHandler(records)
    assert len(compiled) == 1 and again == [], (compiled, again)
    assert other.models.W.shape == (8, 1, 2) and other.losses.shape == (8, 1500)
    # density 1: not represented (r = 0.1), dedicated (r = 10); density 0.03: superposition
    np.testing.assert_array_equal(diagram.phase, [[0, 1], [2, 2]])
    np.testing.assert_array_equal(diagram.analytic, [[0, 1], [2, 2]])
    W = diagram.W[1, 1, 0]
    assert W[0] * W[1] < 0  # antipodal
    np.testing.assert_array_equal(classify_phase(jnp.array([[[1.0, 0.01]], [[0.0, 1.0]], [[0.9, -0.8]]])), [0, 1, 2])


def test_bad_arguments():
    keys, S, I = tms_grid(jax.random.key(0), [0.5], importance_powers(3, [1.0]), n_seeds=2)
    with pytest.raises(TMSError, match="one entry per model"):
        train_tms(keys, S[:1], I, d_hidden=2)
    with pytest.raises(TMSError, match=r"sparsity must be in \[0, 1\]"):
        train_tms(keys, S + 1.0, I, d_hidden=2)
    with pytest.raises(TMSError, match="kind must be one of"):
        train_tms(keys, S, I, d_hidden=2, kind="tanh")
    with pytest.raises(TMSError, match="reads W"):
        classify_phase(jnp.zeros((2, 2)))


def test_linear_model_does_not_superpose_even_when_sparse():
    """The paper's linear baseline: at S = 0.9 it still keeps only the d_hidden most
    important features, orthogonally (a ReLU model superposes there)."""
    keys, S, I = tms_grid(jax.random.key(0), [0.9], importance_powers(5, [0.7]), 2)
    run = train_tms(keys, S, I, d_hidden=2, kind="linear", steps=1000)
    W = np.asarray(run.models.W)[int(np.argmin(run.eval_loss))]
    norms = np.linalg.norm(W, axis=0)
    assert set(np.flatnonzero(norms > 0.5)) == {0, 1}, norms
    assert np.all(norms[2:] < 0.1) and abs(W[:, 0] @ W[:, 1]) < 0.05
    x = np.random.default_rng(0).uniform(size=5).astype(np.float32)
    model = jax.tree_util.tree_map(lambda a: a[0], run.models)
    np.testing.assert_allclose(model(jnp.asarray(x)), model.W.T @ model.W @ x + model.b, rtol=1e-5, atol=1e-6)
