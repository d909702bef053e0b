"""Site callbacks. The model calls ``hooks(name, x)`` at every site and asks
``hooks.wants(name)`` before computing an activation that exists only on request
(``attn.result``). `SiteHooks` is that interface; its implementations:

- `Hooks`: applies a `Plan` of interventions and records the cache. The model makes one
  fresh for each layer inside the scan body, so what it records becomes that layer's
  slice of the stacked cache: no global state, nothing that outlives one trace.
- `NoHooks` (the instance `NO_HOOKS`): does nothing, for norms without a site.
- the fast patching engine's packed patches (`jaxinterp.causal.patching.packed`).

Only the model constructs `Hooks`: techniques pass interventions to `Transformer.run`.
"""

from __future__ import annotations

import abc
from typing import Optional

import jax.numpy as jnp
from jaxtyping import Array

from ..core.config import ModelConfig
from ..core.sites import dim_sizes, layer_site_dims, parse_site, top_level_site_dims
from .interventions import Intervention, InterventionError, SiteContext


class Plan:
    """Interventions grouped by short site name, validated against a config once.

    ``checks``: range-check traced intervention locations when the program runs
    (`jaxinterp.model.interventions.check_index`); False skips those checks (concrete
    locations are still checked by `check_locations`)."""

    def __init__(self, cfg: ModelConfig, interventions, checks: bool = True):
        self.cfg, self.checks = cfg, bool(checks)
        if interventions is None:
            interventions = ()
        if isinstance(interventions, Intervention):
            interventions = (interventions,)
        self.by_site: dict[str, list[tuple[Intervention, Optional[int]]]] = {}
        top = top_level_site_dims(cfg)
        for iv in interventions:
            if not isinstance(iv, Intervention):
                raise InterventionError(f"expected an Intervention (Patch, Add, ...), got {type(iv).__name__}")
            site = parse_site(iv.site, cfg)
            if site.layer is not None and iv.layer is not None:
                raise InterventionError(f"{iv.site!r} names a layer already; do not also pass layer=")
            if site.name in top and iv.layer is not None:
                raise InterventionError(f"{iv.site!r} is not a per-layer site: give no layer=")
            self.by_site.setdefault(site.name, []).append((iv, site.layer))

    def targets(self, name: str) -> bool:
        return name in self.by_site

    def check_locations(self, n_pos: int) -> None:
        """Range-check every concrete location against the model's dims for ``n_pos``
        tokens (`InterventionError` naming the field, the value and the range)."""
        sizes = dim_sizes(self.cfg, n_pos)
        dims = {**top_level_site_dims(self.cfg), **layer_site_dims(self.cfg)}
        heads = f"this model: {self.cfg.n_heads} query heads, {self.cfg.n_kv_heads} key/value heads"
        for name, ivs in self.by_site.items():
            for iv, _ in ivs:
                iv.where.check(iv.site, dims[name], sizes, self.cfg.n_layers, heads)


class SiteHooks(abc.ABC):
    """What the model calls at each site."""

    @abc.abstractmethod
    def __call__(self, name: str, x: Array) -> Array:
        """The activation at site ``name`` (short name) after any edit."""

    @abc.abstractmethod
    def wants(self, name: str) -> bool:
        """Whether anything reads or writes ``name`` (for sites computed only on request)."""


class NoHooks(SiteHooks):
    """Hooks that do nothing (norms with no site, residual rows read by an engine)."""

    def __call__(self, name: str, x: Array) -> Array:
        return x

    def wants(self, name: str) -> bool:
        return False


NO_HOOKS = NoHooks()


class Hooks(SiteHooks):
    """Applies a `Plan` and records ``cache_names``, for one layer (``layer`` traced) or
    the top level (``layer=None``). ``positions`` / ``key_positions``: see `SiteContext`."""

    def __init__(
        self,
        cfg: ModelConfig,
        plan: Plan,
        cache_names: frozenset,
        layer: Optional[Array],
        positions: Optional[Array] = None,
        key_positions: Optional[Array] = None,
    ):
        self.cfg, self.plan, self.cache_names, self.layer = cfg, plan, cache_names, layer
        # Absolute positions of the queries / keys when they are not 0..n-1 (explicit
        # positions, a KV cache): interventions' locations then name positions.
        self.positions, self.key_positions = positions, key_positions
        self.dims = top_level_site_dims(cfg) if layer is None else layer_site_dims(cfg)
        self.recorded: dict[str, Array] = {}

    def wants(self, name: str) -> bool:
        return name in self.cache_names or self.plan.targets(name)

    def __call__(self, name: str, x: Array) -> Array:
        for iv, fixed_layer in self.plan.by_site.get(name, ()):
            ctx = SiteContext(
                name,
                self.dims[name],
                x.shape,
                self.cfg.n_layers,
                self.positions,
                self.key_positions,
                self.plan.checks,
            )
            if fixed_layer is None:
                x = iv.apply(x, self.layer, ctx)
            else:
                x = _apply_at_layer(iv, x, self.layer, fixed_layer, ctx)
        if name in self.cache_names:
            self.recorded[name] = x
        return x


def _apply_at_layer(iv, x, layer, fixed_layer, ctx):
    # A full name ("blocks.3.hook_z") fixes the layer statically; inside the scan the
    # layer is traced, so select with a comparison rather than a Python branch.
    # Passing the fixed layer lets a value stacked over layers pick its own slice.
    new = iv.apply(x, jnp.asarray(fixed_layer), ctx)
    return jnp.where(layer == fixed_layer, new, x)
