"""The plain sweep: one full forward pass per patch, vmapped and chunked.

Correct for every model and site (bidirectional attention included): each patch is a
`jaxinterp.Patch` run through the model's own forward pass, with its location fields
as traced data, so all patches share one compiled program. The fast engine
(`jaxinterp.causal.patching.fast`) falls back to this where its shortcuts do not hold.
"""

from __future__ import annotations

from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ...core.pair_metrics import PairMetric
from ...core.readout import Readout, evaluate_metric, split_metric
from ...engine.sweep import sweep
from ...model.interventions import Patch
from .locations import PatchGrid


class PatchedMetric(eqx.Module):
    """``(location, model, source, tokens) -> metric`` of one patched forward pass.

    A module rather than a closure so that equal sweeps reuse the compiled program:
    the site and readout are static, the metric's arrays (token ids, ...) are traced.
    """

    site: str = eqx.field(static=True)
    metric: Callable
    readout: Readout = eqx.field(static=True)
    extra: tuple = ()  # interventions applied before the patch in every run
    checks: bool = eqx.field(static=True, default=True)  # run-time range checks (`Transformer.run`)

    def __call__(self, loc: dict, model, source: Array, tokens: Int[Array, " pos"]) -> Float[Array, ""]:
        # Logits only at the read positions: the rest of the unembedding is dead work.
        logits, _ = model.run(
            tokens, [*self.extra, Patch(self.site, source, **loc)], readout=self.readout, checks=self.checks
        )
        return evaluate_metric(self.metric, logits, self.readout)


def plain_sweep(
    model,
    base_tokens: Int[Array, " pos"],
    source: Float[Array, "layer ..."],
    grid: PatchGrid,
    metric: Callable,
    readout: Readout,
    batch_size: Optional[int] = None,
    progress: bool = False,
    mesh=None,
    interventions: tuple = (),
    checks: bool = True,
    checkpoint=None,
) -> Float[Array, " patch"]:
    """Metric of the base run with each patch of ``grid`` applied, ``[n_patches]``.
    ``mesh``: shard the patches over a `jax.sharding.Mesh` (see `sweep`).

    ``source``: the stacked activation ``[n_layers, ...]`` at ``grid.site`` of the run
    the values come from (clean, when denoising). ``checkpoint``: see `sweep`.
    """
    locations = {f: np.asarray(v) for f, v in grid.fields.items()}
    fn = PatchedMetric(grid.site, eqx.combine(*split_metric(metric, readout)), readout, tuple(interventions), checks)
    return sweep(
        fn,
        locations,
        model,
        source,
        jnp.asarray(base_tokens),
        batch_size=batch_size,
        progress=progress,
        mesh=mesh,
        checkpoint=checkpoint,
    )


class PairPatchedMetric(eqx.Module):
    """``(location, model, source, tokens, mask) -> [pair]``: one patch applied to every
    pair's base run (``tokens [pair, pos]``, values from ``source [pair, layer, ...]``),
    each scored by its own metric (a `PairMetric`), vmapped over pairs."""

    site: str = eqx.field(static=True)
    metric: PairMetric
    readout: Readout = eqx.field(static=True)
    extra: tuple = ()
    checks: bool = eqx.field(static=True, default=True)
    masked: bool = eqx.field(static=True, default=False)  # pass the attention mask to the runs

    def __call__(self, loc: dict, model, source: Array, tokens: Int[Array, "pair pos"], mask) -> Float[Array, " pair"]:
        def one(src, toks, m, pair):
            logits, _ = model.run(
                toks,
                [*self.extra, Patch(self.site, src, **loc)],
                readout=self.readout,
                checks=self.checks,
                attention_mask=m if self.masked else None,
            )
            return evaluate_metric(self.metric.at(pair), logits, self.readout)

        return jax.vmap(one)(source, tokens, mask, jnp.arange(tokens.shape[0]))


def plain_pair_sweep(
    model,
    base_tokens: Int[Array, "pair pos"],
    source: Float[Array, "pair layer ..."],
    grid: PatchGrid,
    metric: PairMetric,
    readout: Readout,
    batch_size: Optional[int] = None,
    progress: bool = False,
    mesh=None,
    interventions: tuple = (),
    checks: bool = True,
    attention_mask: Optional[Int[Array, "pair pos"]] = None,
) -> Float[Array, "patch pair"]:
    """`plain_sweep` over a batch of pairs: ``[n_patches, n_pairs]``, one compiled program
    (``batch_size``: patches per chunk, each run on every pair)."""
    locations = {f: np.asarray(v) for f, v in grid.fields.items()}
    masked = attention_mask is not None
    mask = attention_mask if masked else jnp.ones(base_tokens.shape, jnp.int32)
    fn = PairPatchedMetric(grid.site, metric, readout, tuple(interventions), checks, masked)
    return sweep(
        fn,
        locations,
        model,
        source,
        jnp.asarray(base_tokens),
        mask,
        batch_size=batch_size,
        progress=progress,
        mesh=mesh,
    )


def pair_source_site(model, tokens: Int[Array, "pair pos"], site: str, interventions: tuple = (), attention_mask=None):
    """Every pair's activation at ``site``, ``[pair, layer, ...]`` (``interventions``
    applied, padding masked)."""
    return _pair_source_site(model, tokens, attention_mask, tuple(interventions), site)


@eqx.filter_jit
def _pair_source_site(model, tokens, mask, interventions, site):
    def one(t, m):
        return model.run(t, list(interventions), cache=frozenset({site}), readout=None, attention_mask=m)[1][site]

    if mask is None:
        return jax.vmap(lambda t: one(t, None))(tokens)
    return jax.vmap(one)(tokens, mask)


def plain_bytes_per_patch(cfg, n_pos: int, readout: Readout) -> int:
    """Rough activation bytes one patch keeps alive (for choosing a default batch size)."""
    n_cols = cfg.d_vocab if readout.columns is None else len(readout.columns)
    per_pos = 8 * cfg.d_model + 3 * max(cfg.d_mlp, 1) * max(cfg.n_experts, 1) + 3 * cfg.n_heads * n_pos
    return 4 * (n_pos * per_pos + len(readout.positions) * n_cols)
