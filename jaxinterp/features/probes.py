"""Linear probes: logistic (binary / multiclass) and ridge regression, trained with optax,
every layer at once with `jax.vmap`.

A probe reads standardised activations ``z = (x - mean) / std`` (train-split statistics)
and minimises, full batch,

- ridge: ``0.5 * mean((z W + b - y)^2) + 0.5 * l2 * |W|^2`` (``y`` standardised inside and
  mapped back, which leaves the minimiser unchanged);
- logistic: ``mean(cross-entropy(z W + b, y)) + 0.5 * l2 * |W|^2`` (sigmoid for 2 classes,
  softmax for more);

with L-BFGS (``optax.lbfgs``, the default: these losses are smooth and convex, so it
reaches the optimum in a few hundred steps) or Adam. Early stopping: with a validation
split and ``patience``, the parameters with the lowest validation loss are kept and
training freezes after ``patience`` steps without improvement. A grid of ``l2`` values is
trained in the same vmapped program and the best one on validation kept per layer.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Union

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from jaxinterp.errors import JaxinterpError

__all__ = [
    "ProbeError",
    "LinearProbe",
    "ProbeResult",
    "fit_probe",
    "fit_probe_jit",
    "train_probes",
    "split_indices",
    "accuracy",
    "roc_auc",
    "r2_score",
    "spearman",
    "pearson",
]

KINDS = ("binary", "multiclass", "regression")


class ProbeError(JaxinterpError):
    """A bad argument to a probe function."""


class LinearProbe(eqx.Module):
    """A linear readout of standardised activations; fields may carry a leading ``layer`` axis.

    ``decision(x) = ((x - mean) / std) @ W + b``: logits (binary: ``[..., 1]``, the log-odds
    of class 1; multiclass: ``[..., n_classes]``) or the regression prediction ``[..., 1]``.
    """

    W: Float[Array, "d_in n_out"]
    b: Float[Array, " n_out"]
    mean: Float[Array, " d_in"]
    std: Float[Array, " d_in"]
    kind: str = eqx.field(static=True)

    def __check_init__(self):
        if self.kind not in KINDS:
            raise ProbeError(f"kind must be one of {KINDS}, got {self.kind!r}")

    def decision(self, x: Float[Array, "... d_in"]) -> Float[Array, "... n_out"]:
        return ((x - self.mean) / self.std) @ self.W + self.b

    def predict(self, x: Float[Array, "... d_in"]) -> Array:
        """Class ids (classification) or values (regression), ``[...]``."""
        out = self.decision(x)
        if self.kind == "binary":
            return (out[..., 0] > 0).astype(jnp.int32)
        if self.kind == "multiclass":
            return jnp.argmax(out, -1)
        return out[..., 0]

    def score(self, x: Float[Array, "... d_in"]) -> Array:
        """A scalar per example: the log-odds (binary), the prediction (regression), or
        the logits ``[..., n_classes]`` (multiclass)."""
        out = self.decision(x)
        return out if self.kind == "multiclass" else out[..., 0]

    def direction(self) -> Float[Array, "d_in n_out"]:
        """The probe's weights on raw (unstandardised) activations: ``W / std``. Moving
        ``x`` by ``t * direction[:, k] / |direction[:, k]|^2`` moves output ``k`` by ``t``."""
        return self.W / self.std[..., :, None]


def _standardise(X, eps=1e-6):
    mean = X.mean(0)
    std = jnp.sqrt(X.var(0) + eps)
    return mean, std


def _data_loss(kind, params, Z, y):
    W, b = params
    out = Z @ W + b
    if kind == "regression":
        return 0.5 * jnp.mean((out[:, 0] - y) ** 2)
    if kind == "binary":
        return jnp.mean(optax.sigmoid_binary_cross_entropy(out[:, 0], y.astype(out.dtype)))
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, y.astype(jnp.int32)))


def fit_probe(
    X: Float[Array, "n d_in"],
    y: Array,
    kind: str,
    l2: Union[float, Array] = 1e-3,
    X_val: Optional[Array] = None,
    y_val: Optional[Array] = None,
    *,
    n_classes: int = 2,
    n_steps: int = 200,
    patience: Optional[int] = None,
    optimizer: str = "lbfgs",
    learning_rate: float = 1e-2,
) -> tuple[LinearProbe, Array]:
    """Train one probe (pure and traceable: vmap it over layers or ``l2``).

    Args:
        X: ``[n, d_in]`` training activations; y: ``[n]`` class ids or values.
        kind: ``"binary"``, ``"multiclass"`` (with ``n_classes``) or ``"regression"``.
        l2: the weight penalty (on standardised inputs; the bias is not penalised).
        X_val, y_val: a validation split for early stopping (``patience`` steps).
        optimizer: ``"lbfgs"``, ``"adam"`` (with ``learning_rate``), or ``"newton"``
            (binary / regression: Newton / IRLS, exact in a few steps, fast to compile;
            no early stopping).

    Returns:
        ``(probe, validation loss)``: with ``patience``, the best iterate on validation
        and its loss; else the last iterate and its validation (or regularised training) loss.
    """
    if kind not in KINDS:
        raise ProbeError(f"kind must be one of {KINDS}, got {kind!r}")
    if optimizer not in ("lbfgs", "adam", "newton"):
        raise ProbeError(f"optimizer must be 'lbfgs', 'adam' or 'newton', got {optimizer!r}")
    if optimizer == "newton" and kind == "multiclass":
        raise ProbeError("optimizer='newton' is for binary and regression probes; use 'lbfgs' for multiclass")
    X = jnp.asarray(X, jnp.float32)
    y = jnp.asarray(y)
    mean, std = _standardise(X)
    Z = (X - mean) / std
    y_mean, y_std = jnp.float32(0.0), jnp.float32(1.0)
    if kind == "regression":
        y = y.astype(jnp.float32)
        y_mean, y_std = y.mean(), y.std() + 1e-12
        y = (y - y_mean) / y_std
    n_out = n_classes if kind == "multiclass" else 1
    params = (jnp.zeros((X.shape[1], n_out), jnp.float32), jnp.zeros((n_out,), jnp.float32))

    def loss(p):
        return _data_loss(kind, p, Z, y) + 0.5 * l2 * jnp.sum(p[0] ** 2)

    has_val = X_val is not None
    if has_val:
        Zv = (jnp.asarray(X_val, jnp.float32) - mean) / std
        yv = jnp.asarray(y_val)
        if kind == "regression":
            yv = (yv.astype(jnp.float32) - y_mean) / y_std

        def val_loss(p):
            return _data_loss(kind, p, Zv, yv)
    else:
        val_loss = loss
    # Without patience, no early stopping: the last iterate (the optimum) is returned.
    use_best = has_val and patience is not None
    patience_ = patience if use_best else n_steps

    if optimizer == "newton":
        params = _newton(kind, Z, y, l2, 1 if kind == "regression" else min(n_steps, 12))  # ridge: one exact step
        W, b = params
        if kind == "regression":
            W, b = W * y_std, b * y_std + y_mean
        return LinearProbe(W, b, mean, std, kind), val_loss(params)

    opt = optax.lbfgs() if optimizer == "lbfgs" else optax.adam(learning_rate)
    vg = optax.value_and_grad_from_state(loss) if optimizer == "lbfgs" else jax.value_and_grad(loss)

    def step(carry, _):
        p, state, best_p, best_v, since = carry
        if optimizer == "lbfgs":
            value, grad = vg(p, state=state)
            updates, new_state = opt.update(grad, state, p, value=value, grad=grad, value_fn=loss)
        else:
            value, grad = vg(p)
            updates, new_state = opt.update(grad, state, p)
        new_p = optax.apply_updates(p, updates)
        frozen = since >= patience_
        new_p = jax.tree_util.tree_map(lambda a, b: jnp.where(frozen, a, b), p, new_p)
        new_state = jax.tree_util.tree_map(lambda a, b: jnp.where(frozen, a, b), state, new_state)
        v = val_loss(new_p)
        better = (v < best_v) & ~frozen
        best_p = jax.tree_util.tree_map(lambda a, b: jnp.where(better, b, a), best_p, new_p)
        best_v = jnp.where(better, v, best_v)
        since = jnp.where(better, 0, since + 1)
        return (new_p, new_state, best_p, best_v, since), None

    init = (params, opt.init(params), params, val_loss(params), jnp.int32(0))
    (p, _, best_p, best_v, _), _ = jax.lax.scan(step, init, None, length=n_steps)
    W, b = best_p if use_best else p
    if kind == "regression":  # back to the original target scale
        W, b = W * y_std, b * y_std + y_mean
    final = best_v if use_best else val_loss(p)
    return LinearProbe(W, b, mean, std, kind), final


def _newton(kind, Z, y, l2, n_iter):
    """Newton's method (IRLS for logistic; one exact step for ridge) on ``[Z, 1]``: a
    d+1 linear solve per step, cheap to compile."""
    n, d = Z.shape
    A = jnp.concatenate([Z, jnp.ones((n, 1), Z.dtype)], 1)
    R = jnp.diag(jnp.concatenate([jnp.full((d,), l2, Z.dtype), jnp.zeros((1,), Z.dtype)]))
    y = y.astype(Z.dtype)

    def step(theta, _):
        out = A @ theta
        if kind == "regression":
            g = A.T @ (out - y) / n + R @ theta
            H = A.T @ A / n + R
        else:
            p = jax.nn.sigmoid(out)
            g = A.T @ (p - y) / n + R @ theta
            H = (A * (p * (1 - p))[:, None]).T @ A / n + R
        return theta - jnp.linalg.solve(H + 1e-9 * jnp.eye(d + 1, dtype=Z.dtype), g), None

    theta, _ = jax.lax.scan(step, jnp.zeros(d + 1, Z.dtype), None, length=max(n_iter, 1))
    return theta[:d, None], theta[d:]


#: `fit_probe` under `equinox.filter_jit` (array arguments traced, the rest static).
_fit_probe_jit = eqx.filter_jit(fit_probe)


def fit_probe_jit(*args, **kwargs):
    """`fit_probe` compiled with `eqx.filter_jit` (one program per shape and static options)."""
    return _fit_probe_jit(*args, **kwargs)


def split_indices(
    n: int, fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0, stratify: Optional[np.ndarray] = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train / validation / test index arrays (random; per class if ``stratify``)."""
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6 or fractions[0] == 0:
        raise ProbeError(
            f"fractions must be 3 non-negative numbers summing to 1 with a non-empty train split, got {fractions}"
        )
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if stratify is None else [np.flatnonzero(stratify == c) for c in np.unique(stratify)]
    parts = ([], [], [])
    for g in groups:
        g = rng.permutation(g)
        a = int(round(fractions[0] * len(g)))
        b = a + int(round(fractions[1] * len(g)))
        for part, idx in zip(parts, (g[:a], g[a:b], g[b:])):
            part.append(idx)
    return tuple(rng.permutation(np.concatenate(p)).astype(np.int64) for p in parts)


# ----------------------------------------------------------------------------- metrics


def accuracy(pred, y) -> float:
    """Fraction of predictions equal to the labels."""
    return float(np.mean(np.asarray(pred) == np.asarray(y)))


def _ranks(x):
    """Ranks 1..n with ties averaged."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1
        i = j + 1
    return ranks


def roc_auc(score, y) -> float:
    """Area under the ROC curve of ``score`` for binary labels ``y`` (Mann-Whitney U, ties half)."""
    y = np.asarray(y).astype(bool)
    n1, n0 = y.sum(), (~y).sum()
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = _ranks(score)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def r2_score(pred, y) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot``."""
    pred, y = np.asarray(pred, np.float64), np.asarray(y, np.float64)
    return float(1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


def pearson(a, b) -> float:
    """Pearson correlation of two equal-length arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def spearman(a, b) -> float:
    """Spearman's rank correlation (Pearson correlation of tie-averaged ranks)."""
    return pearson(_ranks(a), _ranks(b))


# ------------------------------------------------------------------- every layer at once


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """Probes for every layer and their metrics.

    Attributes:
        probe: a `LinearProbe` whose fields carry a leading ``[layer]`` axis.
        kind: ``"binary"``, ``"multiclass"`` or ``"regression"``.
        metrics: ``{split: {metric: [layer] array}}`` for splits ``train``, ``val``,
            ``test``; metrics ``accuracy``, ``auc`` (binary) or ``r2``, ``spearman``,
            ``pearson`` (regression).
        l2: ``[layer]`` the penalty chosen on validation per layer.
        splits: ``{split: indices}``.
    """

    probe: LinearProbe
    kind: str
    metrics: dict
    l2: np.ndarray
    splits: dict

    def layer(self, i: int) -> LinearProbe:
        return jax.tree_util.tree_map(lambda a: a[i], self.probe)

    @property
    def main_metric(self) -> str:
        return "r2" if self.kind == "regression" else "accuracy"

    def test(self, metric: Optional[str] = None) -> np.ndarray:
        """``[layer]`` test-split values of ``metric`` (default accuracy / R^2)."""
        return self.metrics["test"][metric or self.main_metric]


@eqx.filter_jit
def _fit_grid(X, y, Xv, yv, l2s, kind, n_classes, n_steps, patience, optimizer, learning_rate):
    def one(Xl, Xvl, l2):
        return fit_probe(
            Xl,
            y,
            kind,
            l2,
            Xvl,
            yv,
            n_classes=n_classes,
            n_steps=n_steps,
            patience=patience,
            optimizer=optimizer,
            learning_rate=learning_rate,
        )

    over_l2 = jax.vmap(one, in_axes=(None, None, 0))
    return jax.vmap(over_l2, in_axes=(0, 0, None))(X, Xv, l2s)  # [layer, l2]


def train_probes(
    acts: Float[np.ndarray, "layer n d_in"],
    targets: np.ndarray,
    kind: Optional[str] = None,
    l2: Union[float, Sequence[float]] = (1e-3, 1e-2, 1e-1, 1.0, 10.0),
    *,
    splits: Union[Sequence[float], dict] = (0.6, 0.2, 0.2),
    seed: int = 0,
    n_steps: int = 200,
    patience: Optional[int] = None,
    optimizer: Optional[str] = None,
    learning_rate: float = 1e-2,
) -> ProbeResult:
    """Train a probe at every layer (one vmapped program over layers x ``l2`` values).

    Args:
        acts: ``[layer, n, d_in]`` (or ``[n, d_in]``: one layer), e.g.
            `collect_activations(...).acts`.
        targets: ``[n]`` class ids ``0..C-1`` or real values.
        kind: ``"binary"``, ``"multiclass"``, ``"regression"``; None infers it (float
            targets -> regression, else binary / multiclass by the number of classes).
        l2: one penalty or a grid; the best on the validation split is kept per layer
            (lowest validation loss). This is the regulariser that matters when there
            are fewer prompts than dimensions.
        splits: train/val/test fractions (stratified for classification) or
            ``{"train": idx, "val": idx, "test": idx}``.
        optimizer: default ``"lbfgs"``; ``"newton"`` (binary / regression) compiles
            faster but costs a ``(d+1)^2`` Hessian per step.
        n_steps, patience, learning_rate: see `fit_probe`. Early stopping
            (``patience``) suits Adam; with L-BFGS and fewer prompts than dimensions the
            first step already overfits, and stopping would keep the all-zero probe.
    """
    acts = np.asarray(acts, np.float32)
    if acts.ndim == 2:
        acts = acts[None]
    if acts.ndim != 3:
        raise ProbeError(f"acts must be [layer, n, d_in] or [n, d_in], got shape {acts.shape}")
    targets = np.asarray(targets)
    if targets.shape != (acts.shape[1],):
        raise ProbeError(f"targets must be [n] = [{acts.shape[1]}] to match acts {acts.shape}, got {targets.shape}")
    if kind is None:
        if np.issubdtype(targets.dtype, np.floating):
            kind = "regression"
        else:
            kind = "binary" if len(np.unique(targets)) <= 2 else "multiclass"
    if kind not in KINDS:
        raise ProbeError(f"kind must be one of {KINDS} or None, got {kind!r}")
    n_classes = 1
    if kind != "regression":
        if not np.issubdtype(targets.dtype, np.integer) or targets.min() < 0:
            raise ProbeError("classification targets must be non-negative integer class ids")
        n_classes = int(targets.max()) + 1
        if kind == "binary" and n_classes > 2:
            raise ProbeError(f"kind='binary' needs class ids 0/1, got up to {n_classes - 1}")
        n_classes = max(n_classes, 2)
    if optimizer is None:
        optimizer = "lbfgs"
    if isinstance(splits, dict):
        tr, va, te = (np.asarray(splits[k]) for k in ("train", "val", "test"))
    else:
        tr, va, te = split_indices(len(targets), splits, seed, None if kind == "regression" else targets)
    if len(va) == 0:
        va = tr  # no validation split: select on training loss, no early stopping
        patience = None
    l2s = jnp.asarray(np.atleast_1d(np.asarray(l2, np.float32)))
    probes, val_losses = _fit_grid(
        jnp.asarray(acts[:, tr]),
        jnp.asarray(targets[tr]),
        jnp.asarray(acts[:, va]),
        jnp.asarray(targets[va]),
        l2s,
        kind,
        n_classes,
        n_steps,
        patience,
        optimizer,
        learning_rate,
    )
    best = np.asarray(jnp.argmin(jnp.where(jnp.isfinite(val_losses), val_losses, jnp.inf), axis=1))
    layers = np.arange(acts.shape[0])
    probe = jax.tree_util.tree_map(lambda a: a[layers, best], probes)
    result = ProbeResult(probe, kind, {}, np.asarray(l2s)[best], {"train": tr, "val": va, "test": te})
    for name, idx in result.splits.items():
        result.metrics[name] = evaluate(probe, acts[:, idx], targets[idx]) if len(idx) else {}
    return result


def evaluate(probe: LinearProbe, acts: Float[np.ndarray, "layer n d_in"], targets: np.ndarray) -> dict:
    """``{metric: [layer]}`` of a layer-stacked probe on ``acts``."""
    score = np.asarray(jax.vmap(lambda p, x: p.score(x))(probe, jnp.asarray(acts)))
    pred = np.asarray(jax.vmap(lambda p, x: p.predict(x))(probe, jnp.asarray(acts)))
    L = acts.shape[0]
    if probe.kind == "regression":
        return {
            "r2": np.asarray([r2_score(pred[i], targets) for i in range(L)]),
            "spearman": np.asarray([spearman(pred[i], targets) for i in range(L)]),
            "pearson": np.asarray([pearson(pred[i], targets) for i in range(L)]),
        }
    out = {"accuracy": np.asarray([accuracy(pred[i], targets) for i in range(L)])}
    if probe.kind == "binary":
        out["auc"] = np.asarray([roc_auc(score[i], targets) for i in range(L)])
    return out
