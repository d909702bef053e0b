"""`Hooks`: applies interventions and records the cache at each site, for one layer.

The model calls ``hooks(name, x)`` at every site. A `Hooks` is made fresh for each
layer inside the scan body, so what it records becomes that layer's slice of the
stacked cache: no global state, nothing that outlives one trace.
"""

from __future__ import annotations

from typing import Optional

import jax.numpy as jnp
from jaxtyping import Array

from ..core.config import ModelConfig
from .interventions import Intervention, InterventionError, SiteContext
from ..core.sites import dim_sizes, layer_site_dims, parse_site, top_level_site_dims


class Plan:
    """Interventions grouped by short site name, validated against a config once."""

    def __init__(self, cfg: ModelConfig, interventions):
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


class Hooks:
    """Site callback for one layer (``layer`` traced) or the top level (``layer=None``)."""

    def __init__(self, cfg: ModelConfig, plan: Plan, cache_names: frozenset, layer: Optional[Array]):
        self.cfg, self.plan, self.cache_names, self.layer = cfg, plan, cache_names, layer
        self.dims = top_level_site_dims(cfg) if layer is None else layer_site_dims(cfg)
        self.recorded: dict[str, Array] = {}

    def wants(self, name: str) -> bool:
        """Whether anything reads or writes `name` (for sites computed only on request)."""
        return name in self.cache_names or self.plan.targets(name)

    def __call__(self, name: str, x: Array) -> Array:
        for iv, fixed_layer in self.plan.by_site.get(name, ()):
            ctx = SiteContext(name, self.dims[name], x.shape, self.cfg.n_layers)
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
