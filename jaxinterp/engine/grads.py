"""The one primitive every attribution method is built on: the gradient of a metric
with respect to zero-valued `Add` interventions, taken in a single forward+backward.

``jax.grad`` of ``metric(model(tokens, [Add(site, delta)]))`` at ``delta = 0`` is the
gradient of the metric with respect to the activation at ``site``: no hooks that store
gradients, no second model. The same forward also records the activations (the cache
holds the value after the zero `Add`, i.e. the activation itself).
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..core.metrics import Metric
from ..core.readout import evaluate_metric, readout_for
from ..core.sites import is_top_level, layer_site_dims, parse_site, site_shape, top_level_site_dims
from ..model.interventions import Add, Patch
from ..model.transformer import check_pair as check_model_pair


def short_sites(model, sites: Sequence[str]) -> tuple[str, ...]:
    """Short names for ``sites`` (validated, de-duplicated, order kept). ``"all"`` means
    every site of the model, ``attn.result`` included."""
    cfg = model.cfg
    if isinstance(sites, str):
        if sites == "all":
            return tuple(top_level_site_dims(cfg)) + tuple(layer_site_dims(cfg))
        sites = (sites,)
    out: list[str] = []
    for s in sites:
        name = parse_site(s, cfg).name
        if name not in out:
            out.append(name)
    return tuple(out)


def site_dims(cfg, short: str) -> tuple[str, ...]:
    """Dimension names of a site's stacked array: ``("layer", ...)`` for per-layer sites."""
    if is_top_level(short):
        return top_level_site_dims(cfg)[short]
    return ("layer",) + layer_site_dims(cfg)[short]


def zero_deltas(model, sites: Sequence[str], n_pos: int, dtype=jnp.float32) -> dict[str, Array]:
    """Zero `Add` deltas, stacked over layers for per-layer sites."""
    cfg = model.cfg
    out = {}
    for s in sites:
        shape = site_shape(cfg, s, n_pos)
        out[s] = jnp.zeros(shape if is_top_level(s) else (cfg.n_layers,) + shape, dtype)
    return out


def cache_run(model, tokens: Int[Array, " pos"], names: frozenset, interventions=()) -> dict[str, Array]:
    """The activations at ``names``, without the unembedding (nobody reads the logits)."""
    return model.run(tokens, list(interventions), cache=frozenset(names), readout=None)[1]


def metric_of_run(model, x, interventions, cache_names: frozenset, metric: Metric, start: int = 0):
    """``(metric value, cache)`` of a forward pass (from tokens ``x``, or from the residual
    stream ``x`` entering layer ``start``) that computes logits only at the
    positions the metric declares in ``metric.reads`` (the metric sees NaN elsewhere, so
    a wrong declaration shows). Unembedding all positions costs ~20% of a small model's
    forward (SmolLM2: 49k vocabulary), and as much again in a backward pass."""
    readout = readout_for(metric, x.shape[0], model.cfg.d_vocab)
    logits, cache = model.run(x, list(interventions), layers=(start, None), cache=cache_names, readout=readout)
    return evaluate_metric(metric, logits, readout), cache


def metric_and_grads(
    model,
    tokens: Int[Array, " pos"],
    metric: Metric,
    sites: Sequence[str],
    cache_names: frozenset = frozenset(),
    embed: Optional[Float[Array, "pos d_model"]] = None,
    extra: Sequence = (),
) -> tuple[Array, dict[str, Array], dict[str, Array]]:
    """``(metric value, cache, {site: d metric / d activation})`` for one example.

    One forward and one backward pass. ``embed`` replaces the token embeddings (the
    integrated-gradients path); ``extra`` are further interventions applied first.
    Gradients come back stacked like the cache: ``[layer, *site shape]``.
    """
    n_pos = tokens.shape[0]
    sites = tuple(sites)
    cache_names = frozenset(cache_names) | frozenset(sites)

    def run(deltas):
        ivs = list(extra)
        if embed is not None:
            ivs.append(Patch("embed", embed))
        ivs += [Add(s, deltas[s]) for s in sites]
        return metric_of_run(model, tokens, ivs, cache_names, metric)

    (value, cache), grads = jax.value_and_grad(run, has_aux=True)(zero_deltas(model, sites, n_pos))
    return value, cache, grads


def ig_alphas(n_steps: int) -> Array:
    """Midpoints of ``n_steps`` equal intervals of [0, 1]: the midpoint Riemann rule,
    whose error on the integral falls as 1/n_steps^2 (left/right sums: 1/n_steps)."""
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive int, got {n_steps!r}")
    return (jnp.arange(n_steps, dtype=jnp.float32) + 0.5) / n_steps


def check_pair(model, clean: Array, corrupted: Array) -> tuple[Array, Array]:
    """`jaxinterp.model.check_pair` for ``model``."""
    return check_model_pair(clean, corrupted, model.cfg)
