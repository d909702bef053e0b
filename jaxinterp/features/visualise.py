"""Feature visualisation by optimisation for language models: find input text that
maximises a neuron, a direction, a head's attention, or any scalar of the activations.

Tokens are discrete, so the input is relaxed: each free position holds a distribution
over the vocabulary, ``softmax(theta / temperature)``, whose expected embedding is
spliced into ``hook_embed`` with a `jaxinterp.Fn` intervention (the prefix keeps its real
tokens). ``theta`` is optimised with Adam for ``n_restarts`` random starts at once
(``vmap``), with an entropy penalty that pushes each position towards one token. The
result is read back as discrete tokens (the argmax of each position) and **re-run on
those tokens**: the true activation is what is reported, since the soft optimum can
exploit mixtures that no real text produces.

An objective is any ``fn(cache) -> scalar`` of the cached activations (``{short site:
[layer, pos, ...]}``) with a ``sites`` attribute naming what it reads: `neuron`,
`direction`, `attention` build them, and an SAE feature is ``fn(cache) = encoder(cache[site][layer, pos])[i]``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int

import jaxinterp as ji
from jaxinterp.errors import JaxinterpError

__all__ = [
    "VisualisationError",
    "Neuron",
    "Direction",
    "Attention",
    "neuron",
    "direction",
    "attention",
    "visualise",
    "Visualisation",
    "evaluate_tokens",
]


class VisualisationError(JaxinterpError):
    """A bad argument to feature visualisation."""


class Neuron(eqx.Module):
    """``cache[site][layer, pos, index]`` (e.g. ``mlp.post``: an MLP neuron)."""

    layer: int = eqx.field(static=True)
    index: int = eqx.field(static=True)
    site: str = eqx.field(static=True, default="mlp.post")
    pos: int = eqx.field(static=True, default=-1)

    @property
    def sites(self):
        return (self.site,)

    def __call__(self, cache):
        return cache[self.site][self.layer, self.pos, self.index]


class Direction(eqx.Module):
    """``cache[site][layer, pos] . vector`` (a probe or steering direction, an SAE decoder row)."""

    vector: Float[Array, " d"]
    layer: int = eqx.field(static=True)
    site: str = eqx.field(static=True, default="resid_post")
    pos: int = eqx.field(static=True, default=-1)

    @property
    def sites(self):
        return (self.site,)

    def __call__(self, cache):
        return cache[self.site][self.layer, self.pos] @ self.vector


class Attention(eqx.Module):
    """``attn.pattern[layer, head, query_pos, key_pos]``: how much a head attends from
    ``query_pos`` to ``key_pos``."""

    layer: int = eqx.field(static=True)
    head: int = eqx.field(static=True)
    query_pos: int = eqx.field(static=True, default=-1)
    key_pos: int = eqx.field(static=True, default=0)

    @property
    def sites(self):
        return ("attn.pattern",)

    def __call__(self, cache):
        return cache["attn.pattern"][self.layer, self.head, self.query_pos, self.key_pos]


def neuron(layer: int, index: int, site: str = "mlp.post", pos: int = -1) -> Neuron:
    """Objective: the activation of unit ``index`` of ``site`` at ``layer``, position ``pos``."""
    return Neuron(layer, index, site, pos)


def direction(vector, layer: int, site: str = "resid_post", pos: int = -1) -> Direction:
    """Objective: the projection of ``site`` at ``layer``, position ``pos``, on ``vector``."""
    return Direction(jnp.asarray(vector, jnp.float32), layer, site, pos)


def attention(layer: int, head: int, query_pos: int = -1, key_pos: int = 0) -> Attention:
    """Objective: the attention of ``head`` at ``layer`` from ``query_pos`` to ``key_pos``."""
    return Attention(layer, head, query_pos, key_pos)


def _splice(x, soft):
    """Replace the last ``n_free`` embeddings with the soft ones."""
    return jnp.concatenate([x[: x.shape[0] - soft.shape[0]], soft.astype(x.dtype)], 0)


def _soft_value(model, prefix, table, theta, temperature, objective, names):
    p = jax.nn.softmax(theta / temperature, -1)
    soft = p @ table
    tokens = jnp.concatenate([prefix, jnp.zeros(theta.shape[0], prefix.dtype)])
    _, cache = model.forward(tokens, [ji.Fn("embed", _splice, soft)], names)
    entropy = -(p * jnp.log(p + 1e-12)).sum(-1).mean()
    return objective(cache), entropy


@eqx.filter_jit
def _optimise(model, prefix, table, theta0, objective, names, n_steps, lr, entropy_weight, temperature):
    opt = optax.adam(lr)

    def loss(theta):
        value, entropy = _soft_value(model, prefix, table, theta, temperature, objective, names)
        return -value + entropy_weight * entropy, (value, entropy)

    def run(theta):
        def step(carry, _):
            theta, state = carry
            (_, aux), g = jax.value_and_grad(loss, has_aux=True)(theta)
            updates, state = opt.update(g, state, theta)
            return (optax.apply_updates(theta, updates), state), aux

        (theta, _), trace = jax.lax.scan(step, (theta, opt.init(theta)), None, length=n_steps)
        return theta, trace

    return jax.vmap(run)(theta0)


@eqx.filter_jit
def _token_scores(model, tokens, table, objective, names):
    """First-order gain of swapping each position's token for each vocabulary token
    (HotFlip / GCG): ``(table - current embedding) . d objective / d embedding``. ``[batch, pos, d_vocab]``."""

    def one(t):
        def f(delta):
            return objective(model.forward(t, [ji.Add("embed", delta)], names)[1])

        g = jax.grad(f)(jnp.zeros((t.shape[0], table.shape[1]), table.dtype))
        return g @ table.T - (g * table[t]).sum(-1, keepdims=True)

    return jax.vmap(one)(tokens)


@eqx.filter_jit
def _true_values(model, tokens, objective, names):
    return jax.vmap(lambda t: objective(model.forward(t, None, names)[1]))(tokens)


def evaluate_tokens(
    model, tokens: Int[Array, "batch pos"], objective, sites: Optional[Sequence[str]] = None
) -> np.ndarray:
    """The objective on real token sequences ``[batch, pos]`` -> ``[batch]``."""
    names = frozenset(ji.parse_site(s, model.cfg).name for s in (sites or objective.sites))
    return np.asarray(_true_values(model, jnp.asarray(tokens), objective, names))


@dataclasses.dataclass(frozen=True)
class Visualisation:
    """Results, best first.

    Attributes:
        tokens: ``[n_restarts, pos]`` prefix + the free tokens (argmax, then refined).
        true_values: ``[n_restarts]`` the objective re-run on those tokens.
        soft_values: ``[n_restarts]`` the objective on the final soft input.
        entropy: ``[n_restarts]`` the final mean entropy per position (nats; 0 = one-hot).
        trace: ``[n_restarts, n_steps]`` the soft objective during optimisation.
    """

    tokens: np.ndarray
    true_values: np.ndarray
    soft_values: np.ndarray
    entropy: np.ndarray
    trace: np.ndarray


def visualise(
    model,
    objective: Callable,
    n_free: int,
    prefix: Sequence[int] = (),
    *,
    sites: Optional[Sequence[str]] = None,
    n_restarts: int = 8,
    n_steps: int = 200,
    learning_rate: float = 0.1,
    entropy_weight: float = 0.05,
    temperature: float = 1.0,
    seed: int = 0,
    allowed: Optional[Array] = None,
    refine_top_k: int = 8,
    refine_sweeps: int = 1,
) -> Visualisation:
    """Optimise ``n_free`` soft tokens after ``prefix`` to maximise ``objective(cache)``.

    Args:
        objective: ``fn(cache) -> scalar``; its ``sites`` attribute (or ``sites=``) names
            the cached short sites it reads. Positions it reads index the whole sequence.
        n_free: number of optimised positions (after the fixed ``prefix`` token ids).
        n_restarts: random starts, optimised together (vmap).
        entropy_weight: weight of the mean per-position entropy in the loss (pushes each
            distribution towards one token, so the argmax is what was optimised).
        allowed: optional bool ``[d_vocab]``: tokens the input may use (others get
            probability 0), e.g. to exclude special tokens.
        refine_top_k, refine_sweeps: after the soft optimisation, greedy coordinate
            ascent on real tokens: at each free position in turn, try the ``refine_top_k``
            most probable tokens of that position's distribution and the ``refine_top_k``
            tokens with the largest first-order gain (gradient at the current tokens, as
            in HotFlip / GCG), the others held fixed, and keep the best true value;
            ``refine_top_k=1`` is the plain argmax.
    """
    if n_free < 1:
        raise VisualisationError(f"n_free must be >= 1, got {n_free}")
    sites = sites if sites is not None else getattr(objective, "sites", None)
    if not sites:
        raise VisualisationError("name the sites the objective reads: give it a `sites` attribute or pass sites=")
    names = frozenset(ji.parse_site(s, model.cfg).name for s in sites)
    V = model.cfg.d_vocab
    prefix = jnp.asarray(prefix, jnp.int32).reshape(-1)
    if prefix.shape[0] + n_free > model.cfg.n_ctx:
        raise VisualisationError(f"prefix + n_free = {prefix.shape[0] + n_free} exceeds n_ctx={model.cfg.n_ctx}")
    table = model.embed(jnp.arange(V))  # [d_vocab, d_model]: the embedding of every token
    # drawn flat: the same numbers, but a 3-D threefry draw compiles for seconds on CPU
    theta0 = 0.1 * jax.random.normal(jax.random.key(seed), (n_restarts * n_free * V,)).reshape(n_restarts, n_free, V)
    if allowed is not None:
        allowed = jnp.asarray(allowed, bool)
        if allowed.shape != (V,):
            raise VisualisationError(f"allowed must be a bool mask [d_vocab] = [{V}], got {allowed.shape}")
        theta0 = jnp.where(allowed, theta0, -1e9)
    theta, (trace, entropies) = _optimise(
        model, prefix, table, theta0, objective, names, n_steps, learning_rate, entropy_weight, temperature
    )
    if allowed is not None:
        theta = jnp.where(allowed, theta, -jnp.inf)
    tokens = np.array(
        jnp.concatenate([jnp.broadcast_to(prefix, (n_restarts, prefix.shape[0])), jnp.argmax(theta, -1)], 1)
    )
    true = evaluate_tokens(model, tokens, objective, sites)
    if refine_top_k > 1:
        soft_top = np.asarray(jax.lax.top_k(theta, min(refine_top_k, V))[1])  # [restart, free, k]
        P = prefix.shape[0]
        for _ in range(refine_sweeps):
            gain = _token_scores(model, jnp.asarray(tokens), table, objective, names)[:, P:]
            if allowed is not None:
                gain = jnp.where(allowed, gain, -jnp.inf)
            cands = np.concatenate([soft_top, np.asarray(jax.lax.top_k(gain, min(refine_top_k, V))[1])], -1)
            k = cands.shape[-1]
            for j in range(n_free):
                trial = np.repeat(tokens[:, None], k, 1)  # [restart, k, pos]
                trial[:, :, P + j] = cands[:, j]
                values = evaluate_tokens(model, trial.reshape(n_restarts * k, -1), objective, sites).reshape(
                    n_restarts, k
                )
                best = values.argmax(1)
                better = values[np.arange(n_restarts), best] > true
                tokens[better] = trial[np.arange(n_restarts), best][better]
                true = np.where(better, values[np.arange(n_restarts), best], true)
    soft = np.asarray(
        jax.vmap(lambda th: _soft_value(model, prefix, table, th, temperature, objective, names)[0])(
            jnp.where(jnp.isfinite(theta), theta, -1e9)
        )
    )
    order = np.argsort(-true)
    return Visualisation(
        tokens[order], true[order], soft[order], np.asarray(entropies)[order, -1], np.asarray(trace)[order]
    )
