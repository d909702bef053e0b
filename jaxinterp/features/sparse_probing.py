"""Sparse probing (Gurnee et al. 2023, "Finding Neurons in a Haystack: Case Studies with
Sparse Probing"): how well do the best ``k`` neurons (or residual dimensions) predict a
binary feature, for ``k`` from 1 up?

Neurons are ranked on the training split by the absolute difference of the class means of
standardised activations (the paper's fast baseline), or by the weights of an
L1-regularised logistic probe (proximal gradient descent). Then a logistic probe is
trained on the top ``k`` only, for every ``k`` at once (one vmapped program: the other
inputs are masked to zero), and scored on the test split.
"""

from __future__ import annotations

from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Float

from jaxinterp.features.probes import ProbeError, accuracy, fit_probe, roc_auc

__all__ = ["rank_mean_difference", "rank_l1", "sparse_probe_curve"]


def rank_mean_difference(X: Float[np.ndarray, "n d"], y: np.ndarray) -> np.ndarray:
    """Feature indices, best first, by ``|mean(z | y=1) - mean(z | y=0)|`` of standardised
    ``z``. Multiclass: the largest one-vs-rest difference."""
    X = np.asarray(X, np.float64)
    y = np.asarray(y)
    z = (X - X.mean(0)) / (X.std(0) + 1e-6)
    classes = np.unique(y)
    if len(classes) < 2:
        raise ProbeError("rank_mean_difference needs at least 2 classes in y")
    scores = np.max(
        [np.abs(z[y == c].mean(0) - z[y != c].mean(0)) for c in classes[(1 if len(classes) == 2 else 0) :]], 0
    )
    return np.argsort(-scores, kind="stable")


@eqx.filter_jit
def _l1_logistic(Z, y, l1, n_steps, lr):
    """Binary logistic regression with an L1 penalty by proximal gradient (ISTA)."""
    w, b = jnp.zeros(Z.shape[1]), jnp.zeros(())

    def step(carry, _):
        w, b = carry
        gw, gb = jax.grad(lambda w, b: jnp.mean(optax.sigmoid_binary_cross_entropy(Z @ w + b, y)), argnums=(0, 1))(w, b)
        w = w - lr * gw
        w = jnp.sign(w) * jnp.maximum(jnp.abs(w) - lr * l1, 0.0)  # soft threshold
        return (w, b - lr * gb), None

    (w, b), _ = jax.lax.scan(step, (w, b), None, length=n_steps)
    return w


def rank_l1(
    X: Float[np.ndarray, "n d"], y: np.ndarray, l1: float = 0.01, n_steps: int = 500, lr: float = 0.5
) -> np.ndarray:
    """Feature indices, best first, by ``|w|`` of an L1-regularised binary logistic probe on
    standardised features; features with ``w = 0`` follow, ordered by mean difference."""
    X = np.asarray(X, np.float32)
    y = np.asarray(y)
    if set(np.unique(y)) - {0, 1}:
        raise ProbeError("rank_l1 is for binary targets 0/1")
    Z = (X - X.mean(0)) / (X.std(0) + 1e-6)
    w = np.abs(np.asarray(_l1_logistic(jnp.asarray(Z), jnp.asarray(y, jnp.float32), l1, n_steps, lr)))
    md = np.empty(X.shape[1])
    md[rank_mean_difference(X, y)] = np.arange(X.shape[1])  # rank position by mean difference
    return np.lexsort((md, -w))


@eqx.filter_jit
def _fit_masked(X, y, masks, l2, n_classes, kind, n_steps, optimizer):
    return jax.vmap(
        lambda m: fit_probe(X * m, y, kind, l2, n_classes=n_classes, n_steps=n_steps, optimizer=optimizer)[0]
    )(masks)


def sparse_probe_curve(
    X_train: Float[np.ndarray, "n d"],
    y_train: np.ndarray,
    X_test: Float[np.ndarray, "m d"],
    y_test: np.ndarray,
    ks: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128, 256),
    method: str = "mean_difference",
    l2: float = 1e-3,
    n_steps: int = 200,
    optimizer: str = "lbfgs",
) -> dict:
    """Test accuracy of logistic probes on the top-``k`` features, for each ``k``.

    Args:
        X_train, y_train, X_test, y_test: one layer's activations and class ids.
        ks: the numbers of features (each at most ``d``).
        method: ``"mean_difference"`` or ``"l1"`` (`rank_mean_difference`, `rank_l1`).
        l2, n_steps, optimizer: of each probe (`jaxinterp.features.probes.fit_probe`).

    Returns:
        ``{"k": [n_k], "accuracy": [n_k], "auc": [n_k] (binary), "ranking": [d]}``.
    """
    X_train, X_test = np.asarray(X_train, np.float32), np.asarray(X_test, np.float32)
    d = X_train.shape[1]
    ks = np.asarray(ks, np.int64)
    if ks.min() < 1 or ks.max() > d:
        raise ProbeError(f"every k must be in 1..{d} (the number of features), got {ks.tolist()}")
    if method == "mean_difference":
        ranking = rank_mean_difference(X_train, y_train)
    elif method == "l1":
        ranking = rank_l1(X_train, y_train)
    else:
        raise ProbeError(f"method must be 'mean_difference' or 'l1', got {method!r}")
    position = np.empty(d, np.int64)
    position[ranking] = np.arange(d)
    masks = (position[None, :] < ks[:, None]).astype(np.float32)  # [n_k, d]
    n_classes = max(int(np.max(y_train)) + 1, 2)
    kind = "binary" if n_classes == 2 else "multiclass"
    probes = _fit_masked(
        jnp.asarray(X_train),
        jnp.asarray(y_train),
        jnp.asarray(masks),
        l2,
        n_classes,
        kind,
        n_steps,
        optimizer if kind == "binary" else "lbfgs",
    )
    out = {"k": ks, "ranking": ranking, "accuracy": [], "auc": []}
    for i in range(len(ks)):
        p = jax.tree_util.tree_map(lambda a: a[i], probes)
        Xm = jnp.asarray(X_test * masks[i])
        out["accuracy"].append(accuracy(np.asarray(p.predict(Xm)), y_test))
        if kind == "binary":
            out["auc"].append(roc_auc(np.asarray(p.score(Xm)), y_test))
    out["accuracy"] = np.asarray(out["accuracy"])
    out["auc"] = np.asarray(out["auc"])
    return out
