"""Toy Models of Superposition (Elhage et al. 2022): models, data and a vmapped trainer.

``n_features`` sparse features ``x`` are squeezed into ``d_hidden < n_features``
dimensions and read back out:

    h = W x,     x' = ReLU(W^T h + b)          (`ReLUOutputTMS`)
    h = W x,     x' = W^T h + b                (`LinearTMS`)

with ``W [d_hidden, n_features]`` (the paper's convention: column ``W_i`` is feature
``i``'s direction in the hidden space). Each feature is 0 with probability ``S`` (the
sparsity) and uniform on ``[0, 1]`` otherwise; the loss weights feature ``i``'s squared
error by its importance ``I_i`` (the paper uses ``I_i = r^i``).

`train_tms` trains many models at once: one ``jit``-compiled program that ``vmap``s a
``lax.scan`` of optax Adam steps over a batch of (key, sparsity, importance) triples, so a
whole phase diagram (every sparsity x importance x seed) is one compiled call; a second
call with other values of the same shapes does not compile again. `tms_grid` builds those
triples for a Cartesian product.

    keys, S, I = tms_grid(jax.random.key(0), sparsities=[0.0, 0.9], importances=importance_powers(5, [1.0]), n_seeds=4)
    run = train_tms(keys, S, I, d_hidden=2)
    run.models.W        # [8, 2, 5]: one W per (sparsity, importance, seed)
"""

from __future__ import annotations

import abc
from typing import Literal, NamedTuple, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from jaxinterp.core.errors import JaxinterpError

__all__ = [
    "TMSError",
    "AbstractTMS",
    "ReLUOutputTMS",
    "LinearTMS",
    "init_tms",
    "sparse_features",
    "importance_powers",
    "tms_loss",
    "TMSRun",
    "train_tms",
    "tms_grid",
]

Kind = Literal["relu", "linear"]


class TMSError(JaxinterpError):
    """Bad arguments to the toy-models-of-superposition code (shapes, ranges, kinds)."""


class AbstractTMS(eqx.Module):
    """A toy model of superposition: ``W [d_hidden, n_features]``, ``b [n_features]``.

    Subclasses say what the read-out is. Call on one example ``x [n_features]``; batch
    with ``jax.vmap``."""

    W: eqx.AbstractVar[Float[Array, "d_hidden n_features"]]
    b: eqx.AbstractVar[Float[Array, " n_features"]]

    def hidden(self, x: Float[Array, " n_features"]) -> Float[Array, " d_hidden"]:
        """``h = W x``: the compressed representation."""
        return self.W @ x

    @abc.abstractmethod
    def __call__(self, x: Float[Array, " n_features"]) -> Float[Array, " n_features"]:
        """The reconstruction ``x'`` of ``x``."""


class ReLUOutputTMS(AbstractTMS):
    """``x' = ReLU(W^T W x + b)``: the paper's main model. The ReLU lets it filter out
    small interference, which is what makes superposition pay off for sparse features."""

    W: Float[Array, "d_hidden n_features"]
    b: Float[Array, " n_features"]

    def __call__(self, x: Float[Array, " n_features"]) -> Float[Array, " n_features"]:
        return jax.nn.relu(self.W.T @ self.hidden(x) + self.b)


class LinearTMS(AbstractTMS):
    """``x' = W^T W x + b``: the linear baseline, which never superposes (it learns the
    ``d_hidden`` most important features, orthogonally, like PCA)."""

    W: Float[Array, "d_hidden n_features"]
    b: Float[Array, " n_features"]

    def __call__(self, x: Float[Array, " n_features"]) -> Float[Array, " n_features"]:
        return self.W.T @ self.hidden(x) + self.b


_KINDS = {"relu": ReLUOutputTMS, "linear": LinearTMS}


def init_tms(key: PRNGKeyArray, n_features: int, d_hidden: int, kind: Kind = "relu") -> AbstractTMS:
    """Xavier-normal ``W`` (std ``sqrt(2 / (n_features + d_hidden))``, as the paper's
    PyTorch code), zero ``b``. Works on traced keys (inside ``jit``/``vmap``)."""
    if kind not in _KINDS:
        raise TMSError(f"kind must be one of {sorted(_KINDS)}, got {kind!r}")
    if not (isinstance(n_features, int) and isinstance(d_hidden, int) and n_features >= 1 and d_hidden >= 1):
        raise TMSError(f"n_features and d_hidden must be positive ints, got {n_features!r}, {d_hidden!r}")
    std = (2.0 / (n_features + d_hidden)) ** 0.5
    W = std * jax.random.normal(key, (d_hidden, n_features))
    return _KINDS[kind](W, jnp.zeros(n_features))


def sparse_features(
    key: PRNGKeyArray, batch: int, n_features: int, sparsity: Float[Array, ""] | float
) -> Float[Array, "batch n_features"]:
    """``[batch, n_features]`` samples: each entry independently 0 with probability
    ``sparsity``, else uniform on ``[0, 1]``. ``sparsity`` may be traced. (`train_tms`
    draws its batches the same way.)"""
    values, presence = _uniform_pair(key, batch, n_features)
    return jnp.where(presence >= sparsity, values, 0.0)


def importance_powers(n_features: int, ratios: Sequence[float]) -> Float[np.ndarray, "ratio n_features"]:
    """Importances ``I_i = r^i`` for each ``r`` in ``ratios``: ``[len(ratios), n_features]``
    (``r = 1`` is equal importance)."""
    r = np.asarray(ratios, dtype=np.float32)
    if r.ndim != 1 or np.any(r <= 0):
        raise TMSError(f"ratios must be a 1-D list of positive numbers, got {ratios!r}")
    return r[:, None] ** np.arange(n_features, dtype=np.float32)[None, :]


def tms_loss(
    model: AbstractTMS, x: Float[Array, "batch n_features"], importance: Float[Array, " n_features"]
) -> Float[Array, ""]:
    """Importance-weighted reconstruction error ``mean_batch sum_i I_i (x_i - x'_i)^2``."""
    err = x - jax.vmap(model)(x)
    return jnp.mean(jnp.sum(importance * err**2, axis=-1))


class TMSRun(NamedTuple):
    """The result of `train_tms`; every leaf has a leading ``model`` axis.

    ``models``: the trained models stacked (``models.W [model, d_hidden, n_features]``);
    ``losses [model, steps]``: the training loss at each step; ``eval_loss [model]``: the
    final loss on ``eval_batch`` fresh samples (drawn from ``eval_key``, shared by every
    model so that seeds of one setting are compared on the same data)."""

    models: AbstractTMS
    losses: Float[Array, "model steps"]
    eval_loss: Float[Array, " model"]


def _check_batch(keys, sparsity, importance) -> tuple[Array, Array]:
    sparsity = jnp.asarray(sparsity, jnp.float32)
    importance = jnp.asarray(importance, jnp.float32)
    n = keys.shape[0] if keys.ndim else None
    if n is None or sparsity.shape != (n,) or importance.ndim != 2 or importance.shape[0] != n:
        raise TMSError(
            "train_tms needs one entry per model: keys [model], sparsity [model], importance [model, n_features]; "
            f"got keys {keys.shape}, sparsity {sparsity.shape}, importance {importance.shape}"
        )
    if not isinstance(sparsity, jax.core.Tracer):
        s = np.asarray(sparsity)
        if np.any((s < 0) | (s > 1)):
            raise TMSError(f"sparsity must be in [0, 1], got values from {s.min()} to {s.max()}")
    return sparsity, importance


def train_tms(
    keys: PRNGKeyArray,
    sparsity: Float[Array, " model"],
    importance: Float[Array, "model n_features"],
    *,
    d_hidden: int,
    kind: Kind = "relu",
    steps: int = 4000,
    batch_size: int = 1024,
    learning_rate: float = 1e-2,
    data_key: PRNGKeyArray | None = None,
    eval_key: PRNGKeyArray | None = None,
    eval_batch: int = 8192,
) -> TMSRun:
    """Train one toy model per entry of ``keys`` (typed keys ``[model]``, e.g. from
    `tms_grid`), with its own ``sparsity`` and ``importance``, all in one compiled call.

    Each model is initialised by `init_tms` from its key, then trained for ``steps`` Adam
    steps (learning rate cosine-decayed from ``learning_rate`` to 5% of it) on fresh
    batches of ``batch_size`` samples as in `sparse_features`. The batches come from
    ``data_key`` and are shared by every model (each masks the same uniform draws at its
    own sparsity: common random numbers, and the random bits are drawn once per step
    rather than once per model), so seeds differ in their initialisation only.
    Deterministic given the inputs.
    Compiles once per (shapes, ``d_hidden``, ``kind``, ``steps``, ``batch_size``,
    ``eval_batch``); the values of ``keys``, ``sparsity``, ``importance`` and
    ``learning_rate`` are data.
    """
    if kind not in _KINDS:
        raise TMSError(f"kind must be one of {sorted(_KINDS)}, got {kind!r}")
    sparsity, importance = _check_batch(keys, sparsity, importance)
    if not (isinstance(steps, int) and steps >= 1 and isinstance(batch_size, int) and batch_size >= 1):
        raise TMSError(f"steps and batch_size must be positive ints, got {steps!r}, {batch_size!r}")
    data_key = jax.random.key(0) if data_key is None else data_key
    eval_key = jax.random.key(2**31 - 1) if eval_key is None else eval_key
    return _train_many(
        keys,
        sparsity,
        importance,
        jnp.asarray(learning_rate, jnp.float32),
        data_key,
        eval_key,
        d_hidden=d_hidden,
        kind=kind,
        steps=steps,
        batch_size=batch_size,
        eval_batch=eval_batch,
    )


@eqx.filter_jit
def _train_many(
    keys, sparsity, importance, learning_rate, data_key, eval_key, *, d_hidden, kind, steps, batch_size, eval_batch
):
    n_features = importance.shape[-1]
    # The schedule's scale is data (a traced learning rate), so changing it does not recompile.
    schedule = optax.cosine_decay_schedule(1.0, steps, alpha=0.05)
    optimizer = optax.chain(optax.scale_by_adam(), optax.scale_by_schedule(schedule))
    models = jax.vmap(lambda k: init_tms(k, n_features, d_hidden, kind))(keys)
    opt_states = jax.vmap(optimizer.init)(models)

    def update(model, opt_state, x, imp):
        loss, grads = jax.value_and_grad(tms_loss)(model, x, imp)
        updates, opt_state = optimizer.update(grads, opt_state, model)
        updates = jax.tree_util.tree_map(lambda u: -learning_rate * u, updates)
        return eqx.apply_updates(model, updates), opt_state, loss

    def step(carry, k):
        models, opt_states = carry
        # One draw per step shared by every model (common random numbers): random bits
        # dominate the cost of these tiny models, and a shared draw costs 1/n_models.
        values, presence = _uniform_pair(k, batch_size, n_features)
        xs = jax.vmap(lambda s: jnp.where(presence >= s, values, 0.0))(sparsity)
        models, opt_states, losses = jax.vmap(update)(models, opt_states, xs, importance)
        return (models, opt_states), losses

    (models, _), losses = jax.lax.scan(step, (models, opt_states), jax.random.split(data_key, steps))
    values, presence = _uniform_pair(eval_key, eval_batch, n_features)
    eval_x = jax.vmap(lambda s: jnp.where(presence >= s, values, 0.0))(sparsity)
    eval_loss = jax.vmap(tms_loss)(models, eval_x, importance)
    return TMSRun(models, losses.T, eval_loss)


def _uniform_pair(key, batch, n_features):
    k_value, k_mask = jax.random.split(key)
    return jax.random.uniform(k_value, (batch, n_features)), jax.random.uniform(k_mask, (batch, n_features))


def tms_grid(
    key: PRNGKeyArray,
    sparsities: Sequence[float],
    importances: Float[np.ndarray, "importance n_features"],
    n_seeds: int = 1,
) -> tuple[PRNGKeyArray, Float[Array, " model"], Float[Array, "model n_features"]]:
    """Inputs of `train_tms` for every (sparsity, importance, seed): ``keys [model]``,
    ``sparsity [model]``, ``importance [model, n_features]`` with ``model = len(sparsities)
    * len(importances) * n_seeds`` in that (row-major) order, so results reshape to
    ``[sparsity, importance, seed, ...]``. Seed ``k`` of every setting uses the same key."""
    s = np.asarray(sparsities, np.float32)
    imp = np.asarray(importances, np.float32)
    if s.ndim != 1 or imp.ndim != 2 or n_seeds < 1:
        raise TMSError(
            f"tms_grid needs sparsities [n], importances [k, n_features], n_seeds >= 1; got {s.shape}, {imp.shape}, {n_seeds}"
        )
    n_s, n_i = len(s), len(imp)
    seed_keys = jax.random.split(key, n_seeds)
    keys = seed_keys[np.tile(np.arange(n_seeds), n_s * n_i)]
    sparsity = jnp.asarray(np.repeat(s, n_i * n_seeds))
    importance = jnp.asarray(np.tile(np.repeat(imp, n_seeds, axis=0), (n_s, 1)))
    return keys, sparsity, importance
