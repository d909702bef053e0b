"""`ActivationCache`: what `run_with_cache` returns.

Per-layer sites are stored stacked, ``[layer, ...]`` (``[layer, batch, ...]`` for a
batched run, as TransformerLens's ``stack_activation``). Look them up by short name
for the stack, or by full TransformerLens name for one layer::

    cache["resid_pre"]                  # [n_layers, pos, d_model]
    cache["blocks.3.hook_resid_pre"]    # [pos, d_model]
"""

from __future__ import annotations

from typing import Iterator

import equinox as eqx
from jaxtyping import Array

from ..core.config import ModelConfig
from ..core.sites import parse_site


class ActivationCache(eqx.Module):
    """A read-only mapping from site names to activations (a pytree: jit/vmap-safe)."""

    data: dict[str, Array]
    cfg: ModelConfig = eqx.field(static=True)
    batched: bool = eqx.field(static=True, default=False)

    def __getitem__(self, name: str) -> Array:
        site = parse_site(name, self.cfg)
        if site.name not in self.data:
            raise KeyError(
                f"site {name!r} was not cached; cached sites: {sorted(self.data)}. "
                f"Pass names=[..., {site.name!r}] to run_with_cache."
            )
        stacked = self.data[site.name]
        return stacked if site.layer is None else stacked[site.layer]

    def __contains__(self, name) -> bool:
        try:
            site = parse_site(name, self.cfg)
        except KeyError:
            return False
        return site.name in self.data

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def keys(self):
        return self.data.keys()

    def items(self):
        return self.data.items()

    def values(self):
        return self.data.values()

    def stack(self, name: str) -> Array:
        """The layer-stacked array of a per-layer site, ``[layer, ...]``."""
        return self[parse_site(name, self.cfg).name]
