"""The plain sweep: one full forward pass per patch, vmapped and chunked.

Correct for every model and site (bidirectional attention included): each patch is a
`jaxinterp.Patch` run through the model's own forward pass, with its location fields
as traced data, so all patches share one compiled program. The fast engine
(`jaxinterp.causal.patching.fast`) falls back to this where its shortcuts do not hold.
"""

from __future__ import annotations

from typing import Callable, Optional

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

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


def plain_bytes_per_patch(cfg, n_pos: int, readout: Readout) -> int:
    """Rough activation bytes one patch keeps alive (for choosing a default batch size)."""
    n_cols = cfg.d_vocab if readout.columns is None else len(readout.columns)
    per_pos = 8 * cfg.d_model + 3 * max(cfg.d_mlp, 1) * max(cfg.n_experts, 1) + 3 * cfg.n_heads * n_pos
    return 4 * (n_pos * per_pos + len(readout.positions) * n_cols)
