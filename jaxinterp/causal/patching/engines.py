"""Patching engines as objects that own their policy: how patches are computed (`Fast`,
`Plain`), in how much memory, on which devices, compiled how. `activation_patch` states
the experiment (model, prompts, metric, site, axes); the engine runs it::

    activation_patch(model, clean, corrupt, metric, "attn.z", ("layer", "head"),
                     engine=Fast(batch_size=64, shortcuts=True))

Both engines give the same numbers; ``engine="auto"`` picks `Fast` where it applies
(causal attention) and `Plain` elsewhere.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Optional

import equinox as eqx
import jax
import numpy as np

from ...core.errors import PatchingError
from ...core.pair_metrics import PairMetric
from ...core.readout import Readout
from ...engine.checkpoint import SweepCheckpoint
from ...model.sharding import auto_axes, model_parallel
from .fast import CachedRuns, fast_bytes, fast_supported, fast_sweep
from .layout import MAX_BLOCK_TOKENS
from .locations import PatchGrid
from .plain import pair_source_site, plain_bytes_per_patch, plain_pair_sweep, plain_sweep

__all__ = ["PatchingEngine", "Fast", "Plain", "engine_for", "DEFAULT_MEMORY"]

DEFAULT_MEMORY = 1 << 29  # bytes of activations one chunk may keep alive (512 MiB)


class PatchingEngine(eqx.Module):
    """Abstract: computes the metric of every patch of a grid.

    ``batch_size``: patches per chunk (memory is that of one chunk); None: as many as fit
    in ``DEFAULT_MEMORY`` of activations. ``shortcuts``: opt-in, metric- and data-aware
    savings (logits only for the token ids the metric reads; patches skipped where the
    clean and corrupted activations agree). ``progress``: a progress bar over chunks.
    ``mesh``: a `jax.sharding.Mesh` whose first axis the patches are sharded over.
    Weights sharded over its other axes (`jaxinterp.model.sharding`) stay sharded in the
    plain engine; the fast engine's per-device program gathers them.
    ``checks``: range-check the patch locations (the fast engine: on the host, before
    compiling, since its layout is numpy; the plain engine: inside the compiled sweep with
    `eqx.error_if`); False skips them (``benchmarks/validation_overhead.py`` measures what
    they cost). `activation_patch` validates its grid on the host anyway.
    """

    batch_size: eqx.AbstractVar[Optional[int]]
    shortcuts: eqx.AbstractVar[bool]
    progress: eqx.AbstractVar[bool]
    mesh: eqx.AbstractVar[Optional[jax.sharding.Mesh]]
    checks: eqx.AbstractVar[bool]

    def __check_init__(self):
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise PatchingError(f"batch_size must be a positive number of patches, got {self.batch_size!r}")

    @abc.abstractmethod
    def supports(self, cfg) -> bool:
        """Whether the engine computes exact results for models of this config."""

    @property
    @abc.abstractmethod
    def needs_cached_runs(self) -> bool:
        """Whether `run` reads the base and source runs' `CachedRuns`."""

    @abc.abstractmethod
    def run(
        self,
        model,
        base,
        source,
        grid: PatchGrid,
        metric,
        readout: Readout,
        runs: Optional[CachedRuns],
        keep: Optional[np.ndarray],
        interventions: tuple = (),
        checkpoint: Optional[SweepCheckpoint] = None,
        attention_mask=None,
    ) -> np.ndarray:
        """``[n_patches]`` metric values (NaN where ``keep`` is False); ``interventions``
        apply before each patch in every run (engines that cannot honour them refuse).
        ``checkpoint``: save finished chunks there and load those a previous run saved
        (keyed by `keyed_checkpoint`). A batch of pairs (``base`` / ``source``
        ``[pair, pos]``, ``metric`` a `PairMetric`, ``keep`` ``[n_patches, pair]``,
        optional right-padding ``attention_mask [pair, pos]``): ``[n_patches, pair]``."""

    def keyed_checkpoint(
        self, checkpoint: SweepCheckpoint, model, base, source, grid: PatchGrid, metric, readout, keep, interventions
    ) -> SweepCheckpoint:
        """``checkpoint`` keyed on everything that decides this sweep's values: the model
        (weights and config), both prompts, the metric, the site and patches, the readout,
        the patches kept, the extra interventions and the engine's settings (all but
        ``progress`` and ``checks``, which do not change the values)."""
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        settings = {k: v for k, v in settings.items() if k not in ("progress", "checks")}
        return checkpoint.with_inputs(
            model=model,
            **{"base prompt": base, "source prompt": source},
            metric=metric,
            **{"site and patches": grid, "read positions": readout, "kept patches": keep},
            interventions=tuple(interventions),
            engine=(type(self).__name__, settings),
        )


class Plain(PatchingEngine):
    """One vmapped full forward pass per patch: any model, any site."""

    batch_size: Optional[int] = None
    shortcuts: bool = False
    progress: bool = False
    mesh: Optional[jax.sharding.Mesh] = None
    checks: bool = True

    def supports(self, cfg) -> bool:
        return True

    @property
    def needs_cached_runs(self) -> bool:
        return False

    def run(
        self,
        model,
        base,
        source,
        grid,
        metric,
        readout,
        runs,
        keep,
        interventions=(),
        checkpoint=None,
        attention_mask=None,
    ):
        if isinstance(metric, PairMetric):
            if checkpoint is not None:
                raise PatchingError(
                    "checkpoint= with a dataset of pairs needs the fast engine (engine='fast'); the plain "
                    "engine's pair sweep does not checkpoint yet"
                )
            return self._run_pairs(
                model, base, source, grid, metric, readout, runs, keep, interventions, attention_mask
            )
        if checkpoint is not None:
            checkpoint = self.keyed_checkpoint(
                checkpoint, model, base, source, grid, metric, readout, keep, interventions
            )
        if runs is None:
            _, cache = model.run_with_cache(source, names=[grid.site], interventions=list(interventions))
            src = cache.stack(grid.site)
        else:
            src = runs.site[1, :, 0]
        if keep is not None:
            grid = grid.subset(keep)
        batch_size = self.batch_size
        if batch_size is None:
            batch_size = max(1, DEFAULT_MEMORY // plain_bytes_per_patch(model.cfg, base.shape[0], readout))
        out = np.asarray(
            plain_sweep(
                model,
                base,
                src,
                grid,
                metric,
                readout,
                batch_size,
                self.progress,
                self.mesh,
                interventions,
                self.checks,
                checkpoint,
            )
        )
        if keep is None:
            return out
        full = np.full(keep.shape, np.nan, out.dtype)
        full[keep] = out
        return full

    def _run_pairs(self, model, base, source, grid, metric, readout, runs, keep, interventions, attention_mask):
        if runs is None:
            src = pair_source_site(model, source, grid.site, interventions, attention_mask)
        else:
            src = jax.numpy.moveaxis(runs.site[1], 1, 0)  # [pair, layer, ...]
        n_patches = grid.n_patches
        if keep is not None:  # a patch runs if it changes some pair
            grid = grid.subset(keep.any(axis=1))
        batch_size = self.batch_size
        if batch_size is None:
            per_patch = plain_bytes_per_patch(model.cfg, base.shape[1], readout) * base.shape[0]
            batch_size = max(1, DEFAULT_MEMORY // per_patch)
        out = np.asarray(
            plain_pair_sweep(
                model,
                base,
                src,
                grid,
                metric,
                readout,
                batch_size,
                self.progress,
                self.mesh,
                interventions,
                self.checks,
                attention_mask,
            )
        )
        if keep is None:
            return out
        full = np.full((n_patches, base.shape[0]), np.nan, out.dtype)
        full[keep.any(axis=1)] = out
        return np.where(keep, full, np.nan)


class Fast(PatchingEngine):
    """Causal models: recompute only the layers from a patch's layer on and the positions
    from its position on, packed into fixed-size blocks that one compiled layer runs.

    ``quick_compile`` (CPU): skip XLA's LLVM optimisation, compiling in a fraction of a
    second instead of ~1.5 s but running ~1.5x slower; None does so for small sweeps.
    ``max_block_tokens``: the largest block (tokens per packed matmul)."""

    batch_size: Optional[int] = None
    shortcuts: bool = False
    progress: bool = False
    mesh: Optional[jax.sharding.Mesh] = None
    quick_compile: Optional[bool] = None
    max_block_tokens: int = MAX_BLOCK_TOKENS
    checks: bool = True

    def supports(self, cfg) -> bool:
        return fast_supported(cfg)

    @property
    def needs_cached_runs(self) -> bool:
        return True

    def run(
        self,
        model,
        base,
        source,
        grid,
        metric,
        readout,
        runs,
        keep,
        interventions=(),
        checkpoint=None,
        attention_mask=None,
    ):
        # attention_mask: right padding never reaches the real positions of a causal
        # model (`jaxinterp.causal.pairs`), so the blocks run without it.
        if interventions:
            raise PatchingError(
                "the fast engine recomputes from cached runs and cannot apply extra interventions: "
                "use engine='plain' (engine='auto' does)"
            )
        if checkpoint is not None:
            checkpoint = self.keyed_checkpoint(
                checkpoint, model, base, source, grid, metric, readout, keep, interventions
            )
        n_chunks = self._chunks(model.cfg, grid, base.shape[-1], keep, readout, runs.n_pairs)
        return fast_sweep(
            model,
            runs,
            grid,
            metric,
            readout,
            n_chunks=n_chunks,
            last_layer_subset=self.shortcuts,
            progress=self.progress,
            keep=keep,
            quick_compile=self.quick_compile,
            max_block_tokens=self.max_block_tokens,
            mesh=self.mesh,
            checks=self.checks,
            checkpoint=checkpoint,
        )

    def _chunks(self, cfg, grid: PatchGrid, n_pos: int, keep, readout: Readout, n_pairs: int = 1) -> int:
        """Chunks of about ``batch_size`` patched runs (a patch on one pair is one run)."""
        keep = np.ones((grid.n_patches, n_pairs), bool) if keep is None else keep.reshape(grid.n_patches, -1)
        keep = np.broadcast_to(keep, (grid.n_patches, n_pairs))
        n = int(keep.sum())
        if n == 0:
            return 1
        if self.batch_size is not None:
            return math.ceil(n / self.batch_size)
        lengths = (n_pos - grid.start_pos)[:, None] * keep
        return max(1, math.ceil(fast_bytes(cfg, int(lengths.sum()), n, len(readout.positions)) / DEFAULT_MEMORY))


def engine_for(engine, cfg, interventions: tuple = (), **options) -> PatchingEngine:
    """The engine for ``engine`` (``"auto"``, ``"fast"``, ``"plain"`` or a `PatchingEngine`)
    and the legacy keyword ``options`` (``batch_size``, ``shortcuts``, ``progress``,
    ``quick_compile``, ``mesh``), checked against the model's config."""
    if options.get("mesh") is not None:  # jax.make_mesh's explicit axes: run as automatic ones
        options = {**options, "mesh": auto_axes(options["mesh"])}
    given = {k: v for k, v in options.items() if v not in (None, False)}
    if isinstance(engine, PatchingEngine):
        if given:
            raise PatchingError(
                f"give {sorted(given)} to the engine object ({type(engine).__name__}(...)), not to "
                "activation_patch, when passing engine="
            )
        chosen = engine
    elif engine in ("auto", "fast", "plain"):
        # Extra interventions change the runs the fast engine caches: auto takes plain then.
        # A mesh with a model axis (weights sharded, jaxinterp.model.sharding): auto takes
        # plain, which keeps them sharded; the fast engine's per-device program gathers them.
        fast = engine == "fast" or (
            engine == "auto" and fast_supported(cfg) and not interventions and not model_parallel(options.get("mesh"))
        )
        plain_options = {k: v for k, v in options.items() if k != "quick_compile"}
        chosen = Fast(**options) if fast else Plain(**plain_options)
    else:
        raise PatchingError(
            f"engine must be 'auto', 'fast', 'plain' or a PatchingEngine (Fast(...), Plain(...)), got {engine!r}"
        )
    if interventions and isinstance(chosen, Fast):
        raise PatchingError(
            "the fast engine recomputes from cached runs and cannot apply extra interventions: "
            "use engine='plain' (engine='auto' does)"
        )
    if not chosen.supports(cfg):
        raise PatchingError(
            "method='fast' needs causal attention (a patch at position p must not change earlier positions) "
            "and one attention input shared by the heads; this model "
            + ("has split per-head inputs (split_qkv_input)" if cfg.split_qkv_input else "is bidirectional")
            + ": use method='plain' or 'auto'"
        )
    return chosen
