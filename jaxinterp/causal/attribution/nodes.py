"""Attribution patching: a first-order estimate of every activation patch at once.

Activation patching (clean into corrupted) asks, for each location ``i`` of a site,
how much the metric moves when the corrupted run's activation ``a_i`` is replaced by
the clean one. To first order that move is ::

    metric(corrupted with a_i := clean_i) - metric(corrupted)
        ~= d metric / d a_i |corrupted  .  (clean_i - corrupted_i)

and the gradient at *every* site and location comes out of one backward pass
(Nanda, "Attribution Patching", 2023; Syed et al. 2023). Summing the elementwise
products over some axes estimates patching those elements jointly, which is how the
per-head (``attn.z`` summed over positions and ``d_head``) and per-position
(``resid_pre`` summed over ``d_model``) maps arise.

Cost (method ``"ap"``): one forward on the clean tokens (cache only, no unembedding),
one forward and one backward on the corrupted tokens, the logits computed only where
``metric.reads`` says. The backward differentiates activations only (weights are
constants), so its matrix products about match the forward's: at most 3 forward passes
in all, whatever the number of sites (`attribution_cost` counts them: 2.4 on SmolLM2).

Integrated gradients (``method="ig"``): the gradient is averaged over ``n_steps``
points on the straight line from the corrupted to the clean token embeddings
(Sundararajan et al. 2017; EAP-IG, Hanna et al. 2024). At the ``embed`` site the sum
of the attributions then approaches ``metric(clean) - metric(corrupted)``
(completeness). Costs ``n_steps`` forward+backward passes plus the two cache runs.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int

from ...core.errors import PairBatchError
from ...core.labelled import LabelledArray
from ...core.sites import COMPONENT_DIMS, POSITION_DIMS, parse_site
from ...engine.grads import Metric, cache_run, check_pair, ig_alphas, metric_and_grads, short_sites, site_dims
from .chunks import dataset_pairs, run_pairs

__all__ = ["attribution_patch", "attribution_scores", "default_over"]

# Axes that name a component (a head, a neuron, an expert): kept by default.
_COMPONENT_AXES = COMPONENT_DIMS
_POSITION_AXES = POSITION_DIMS


def default_over(dims: Sequence[str], per_position: bool = False) -> tuple[str, ...]:
    """The axes `attribution_patch` keeps for a site with stacked ``dims``.

    Residual-like sites (no component axis) keep ``(layer, pos)``, as activation
    patching by layer x position. Sites with a component axis keep ``(layer, head)`` /
    ``(layer, neuron)`` (the component patched at every position), plus the position
    axes when ``per_position``. Feature axes (``d_model``, ``d_head``) are summed.
    """
    has_component = any(d in _COMPONENT_AXES for d in dims)
    keep = []
    for d in dims:
        if d == "layer" or d in _COMPONENT_AXES:
            keep.append(d)
        elif d in _POSITION_AXES and (per_position or not has_component):
            keep.append(d)
    return tuple(keep)


def attribution_scores(
    model,
    base_tokens: Int[Array, " pos"],
    target_tokens: Int[Array, " pos"],
    metric: Metric,
    sites: Sequence[str],
    method: str = "ap",
    n_steps: int = 16,
    interventions: Sequence = (),
) -> dict[str, Array]:
    """Elementwise attributions of one example, stacked like the cache (pure, jittable).
    ``interventions`` apply first in every run (e.g. a spliced SAE).

    ``grad(metric) at base . (target - base)`` per element, the gradient taken in the
    run on ``base_tokens`` (``"ap"``) or averaged along the embedding path from base to
    target (``"ig"``). For the TransformerLens denoising convention, base = corrupted,
    target = clean.
    """
    sites = tuple(sites)
    if method == "ap":
        target_cache = cache_run(model, target_tokens, frozenset(sites), interventions)
        _, base_cache, grads = metric_and_grads(model, base_tokens, metric, sites, extra=interventions)
    elif method == "ig":
        names = frozenset(sites) | {"embed"}
        target_cache = cache_run(model, target_tokens, names, interventions)
        base_cache = cache_run(model, base_tokens, names, interventions)
        e0, e1 = base_cache["embed"], target_cache["embed"]

        def grads_at(alpha):
            return metric_and_grads(
                model, base_tokens, metric, sites, embed=e0 + alpha * (e1 - e0), extra=interventions
            )[2]

        # One forward+backward per step; lax.map keeps only one step's activations live.
        grads = jax.tree_util.tree_map(lambda g: g.mean(0), jax.lax.map(grads_at, ig_alphas(n_steps)))
    else:
        raise ValueError(f"method must be 'ap' (attribution patching) or 'ig' (integrated gradients), got {method!r}")
    return {
        s: grads[s].astype(jnp.float32) * (target_cache[s].astype(jnp.float32) - base_cache[s].astype(jnp.float32))
        for s in sites
    }


def _reduce(raw: dict, plan) -> dict:
    """Each requested name's attributions: its short site's elementwise scores summed
    over the axes the name drops (``plan``: ``(name, short site, summed axes)`` each).
    On the host for one pair (its program is then shared by every ``over``), inside
    the program for a dataset (a chunk's result is then small)."""
    return {name: raw[short].sum(axis=summed) for name, short, summed in plan}


def _reduced_scores(model, sites, method, n_steps, interventions, plan, base, target, metric) -> dict:
    return _reduce(attribution_scores(model, base, target, metric, sites, method, n_steps, interventions), plan)


@eqx.filter_jit
def _one_pair(model, base, target, metric, sites, method, n_steps, interventions):
    return attribution_scores(model, base, target, metric, sites, method, n_steps, interventions)


def attribution_patch(
    model,
    clean_tokens: Int[Array, "... pos"],
    corrupted_tokens: Int[Array, "... pos"],
    metric: Metric,
    sites: Sequence[str] = ("resid_pre", "attn.z"),
    *,
    method: str = "ap",
    n_steps: int = 16,
    over: Optional[Mapping[str, Sequence[str]]] = None,
    per_position: bool = False,
    direction: str = "denoising",
    pos_labels: Optional[Sequence[str]] = None,
    interventions: Optional[Sequence] = None,
    attention_mask=None,
    per_pair: bool = False,
    batch_size: Optional[int] = None,
    checkpoint=None,
    progress: bool = False,
) -> dict[str, LabelledArray]:
    """Estimate activation patching at every location of every site in one backward pass.

    Args:
        model: a `Transformer`.
        clean_tokens, corrupted_tokens: int ``[pos]`` (or ``[batch, pos]``: a dataset of
            pairs, the metric averaged over it) of the same shape.
        metric: ``metric(logits [pos, d_vocab]) -> scalar`` for one example, or with a
            batch one per pair (a `PairMetric`: ``pair_logit_diff(io, s, pos=last)``).
        sites: short or full site names (``"resid_pre"``, ``"blocks.3.attn.hook_z"``),
            or ``"all"`` for every site of the model.
        method: ``"ap"`` (gradient at the corrupted run) or ``"ig"`` (integrated
            gradients along the embeddings, ``n_steps`` midpoints).
        over: per site, the axes to keep (others are summed), from the site's stacked
            axes ``("layer", *site axes)``; default `default_over`. An empty tuple sums
            everything; the site's full axis list keeps every element.
        per_position: with the default ``over``, also keep position axes of component
            sites (``attn.z`` -> ``[layer, pos, head]``).
        direction: ``"denoising"`` estimates patching clean activations into the
            corrupted run (TransformerLens's convention, as
            `jaxinterp.causal.patching.activation_patch`); ``"noising"`` patching corrupted into
            clean (gradient at the clean run).
        pos_labels: token strings to label position axes with.
        interventions: applied first in every run (clean, corrupted and the gradient
            run), e.g. an SAE spliced in with its error term, whose feature activations
            then become attributable sites.
        attention_mask: ``[batch, pos]``, right-padded pairs (1: real token; causal
            models: padding after a prompt changes nothing its metric reads, and its
            attributions there are 0). See `jaxinterp.causal.pairs`.
        per_pair: with a batch, keep each pair's attributions along a leading ``"pair"``
            axis instead of their mean.
        batch_size: with a batch, run ``batch_size`` pairs at a time (one compiled
            program; the last chunk is padded with a repeat of the last pair, weight 0)
            to bound memory; the mean is the pair-count-weighted mean of the chunks.
            None: every pair in one chunk.
        checkpoint: a directory (or a `jaxinterp.engine.checkpoint.SweepCheckpoint`):
            each finished chunk of pairs is saved there as it finishes, and a call with
            the same inputs (after a crash, SIGKILL) loads those chunks instead of
            computing them again. Keyed on the model, both prompts, the attention mask,
            the metric, the sites and kept axes (``over``, ``per_position``), ``method``,
            ``n_steps`` (IG), ``direction``, ``interventions``, ``batch_size`` and
            ``per_pair``; any of them different raises `ResumeError` naming it. Needs a
            dataset (``[batch, pos]`` tokens): with one ``[pos]`` pair it raises
            `PairBatchError`. See docs/long_runs.md.
        progress: a tqdm bar over the chunks, with its ETA (one log line per chunk on
            the ``jaxinterp.checkpoint`` logger either way).

    Returns:
        ``{site: LabelledArray}``. Each value estimates ``metric(patched) -
        metric(unpatched run)``: e.g. ``resid_pre -> [layer, pos]`` (summed over
        ``d_model``), ``attn.z -> [layer, head]`` (summed over positions and ``d_head``),
        the shapes of exact activation patching. A full name (``blocks.3.hook_z``)
        gives that layer's slice, without the layer axis.
    """
    _check_options(method, n_steps, direction)
    pairs = dataset_pairs(model, clean_tokens, corrupted_tokens, metric, attention_mask, checkpoint)
    if pairs is None:
        if per_pair:
            raise PairBatchError("per_pair=True needs a batch of pairs: clean/corrupted tokens [batch, pos]")
        clean_tokens, corrupted_tokens = check_pair(model, clean_tokens, corrupted_tokens)
    if isinstance(sites, str) and sites != "all":
        sites = (sites,)
    shorts = short_sites(model, sites)
    names = shorts if sites == "all" else list(sites)
    if over is not None:
        stray = [k for k in over if k not in names]
        if stray:
            raise ValueError(f"over names sites {stray} that were not requested; requested: {list(names)}")
    plan, kept_dims = [], {}
    for name in names:
        short = parse_site(name, model.cfg).name
        dims = site_dims(model.cfg, short)
        keep = _keep_axes(name, dims, over, per_position)
        plan.append((name, short, tuple(i for i, d in enumerate(dims) if d not in keep)))
        kept_dims[name] = tuple(d for d in dims if d in keep)
    extra = tuple(interventions or ())
    if pairs is None:
        base, target = (
            (corrupted_tokens, clean_tokens) if direction == "denoising" else (clean_tokens, corrupted_tokens)
        )
        raw = _one_pair(model, base, target, metric, shorts, method, n_steps, extra)
        raw = _reduce({short: np.asarray(v) for short, v in raw.items()}, plan)
    else:
        one = jax.tree_util.Partial(_reduced_scores, model, shorts, method, n_steps, extra, tuple(plan))
        raw = run_pairs(
            one,
            model,
            pairs,
            direction,
            batch_size=batch_size,
            per_pair=per_pair,
            checkpoint=checkpoint,
            progress=progress,
            technique="attribution patching",
            settings={
                "sites and kept axes": plan,
                "method": method,
                "IG steps": n_steps if method == "ig" else None,
                "interventions": extra,
            },
        )
    lead = ("pair",) if per_pair else ()

    out: dict[str, LabelledArray] = {}
    for name in names:
        site = parse_site(name, model.cfg)
        values, kept = np.asarray(raw[name]), kept_dims[name]
        if site.layer is not None:  # a full per-layer name: that layer's slice
            values, kept = values[(slice(None),) * len(lead) + (site.layer,)], kept[1:]
        kept = lead + kept
        labels = {d: list(pos_labels) for d in kept if d in _POSITION_AXES and pos_labels is not None}
        out[name] = LabelledArray(values, kept, labels, name=f"attribution ({method}) {name}")
    return out


def _check_options(method, n_steps, direction):
    if method not in ("ap", "ig"):
        raise ValueError(f"method must be 'ap' (attribution patching) or 'ig' (integrated gradients), got {method!r}")
    if method == "ig":
        ig_alphas(n_steps)  # validates n_steps
    if direction not in ("denoising", "noising"):
        raise ValueError(
            f"direction must be 'denoising' (clean into corrupted) or 'noising' (corrupted into clean), got {direction!r}"
        )


def _keep_axes(name, dims, over, per_position):
    if over is not None and name in over:
        keep = tuple(over[name])
        unknown = [d for d in keep if d not in dims]
        if unknown:
            raise ValueError(f"over[{name!r}] names axes {unknown} that the site does not have; its axes are {dims}")
        if "layer" in dims and "layer" not in keep and name.startswith("blocks."):
            raise ValueError(f"over[{name!r}]: a full per-layer name needs 'layer' in the kept axes")
        return keep
    return default_over(dims, per_position)
