"""`ActivationCache`: what `run_with_cache` returns.

Per-layer sites are stored stacked, ``[layer, ...]`` (``[layer, batch, ...]`` for a
batched run, as TransformerLens's ``stack_activation``). Look them up by short name
for the stack, or by full TransformerLens name for one layer::

    cache["resid_pre"]                  # [n_layers, pos, d_model]
    cache["blocks.3.hook_resid_pre"]    # [pos, d_model]

TransformerLens's habits work too: ``cache["resid_pre", 3]``, ``cache["pattern", -1]``,
``cache["scale", 2, "ln1"]`` (keys through `get_act_name`), ``cache.stack_activation``,
``cache.accumulated_resid`` and ``cache.decompose_resid`` (TransformerLens's labels and
``layer`` semantics), and the read-only copies ``hook_mlp_in`` / ``hook_attn_in``.
"""

from __future__ import annotations

from typing import Iterator, Optional, Union

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from ..core.config import ModelConfig
from ..core.errors import SiteError
from ..core.sites import TL_READ_ONLY, get_act_name, parse_site

Key = Union[str, tuple]


class ActivationCache(eqx.Module):
    """A read-only mapping from site names to activations (a pytree: jit/vmap-safe)."""

    data: dict[str, Array]
    cfg: ModelConfig = eqx.field(static=True)
    batched: bool = eqx.field(static=True, default=False)

    def __getitem__(self, key: Key) -> Array:
        """By short name (the ``[layer, ...]`` stack), full name (one layer), or a
        TransformerLens tuple ``(name, layer[, layer_type])`` read through `get_act_name`
        (negative layers count from the end)."""
        name = self._name(key)
        copy = self._read_only(name)
        if copy is not None:
            return copy
        site = parse_site(name, self.cfg)
        if site.name not in self.data:
            raise KeyError(
                f"site {name!r} was not cached; cached sites: {sorted(self.data)}. "
                f"Pass names=[..., {site.name!r}] to run_with_cache."
            )
        stacked = self.data[site.name]
        return stacked if site.layer is None else stacked[site.layer]

    def __contains__(self, key) -> bool:
        try:
            self[key]
        except KeyError:  # SiteError is a KeyError too
            return False
        return True

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

    # ------------------------------------------------- TransformerLens conveniences

    def _name(self, key: Key) -> str:
        """A site name from a string or a TransformerLens ``(name, layer[, layer_type])`` key."""
        if isinstance(key, str):
            return key
        if not isinstance(key, tuple) or not 1 <= len(key) <= 3:
            raise SiteError(
                f"cache keys are site names or (name, layer[, layer_type]) tuples such as ('resid_pre', 3), got {key!r}"
            )
        name, layer, *rest = key + (None,) * (2 - len(key))
        if isinstance(layer, int) and not isinstance(layer, bool) and layer < 0:
            layer += self.cfg.n_layers
        return get_act_name(name, layer, *rest)

    def _read_only(self, name: str) -> Optional[Array]:
        """TransformerLens's ``hook_attn_in`` / ``hook_mlp_in`` (copies of a stream that
        only the next sublayer reads) as the cached stream they copy, or None."""
        try:
            parse_site(name, self.cfg)
            return None
        except SiteError:
            pass
        parts = name.split(".")
        short = parts[-1][5:] if parts[-1].startswith("hook_") else parts[-1]
        if short not in TL_READ_ONLY or len(parts) not in (1, 3):
            return None
        layer = int(parts[1]) if len(parts) == 3 else None
        if short == "mlp_in":
            source = "resid_pre" if self.cfg.parallel_attn_mlp else "resid_mid"
            return self[source if layer is None else f"blocks.{layer}.hook_{source}"]
        x = self["resid_pre" if layer is None else f"blocks.{layer}.hook_resid_pre"]
        return jnp.broadcast_to(x[..., None, :], x.shape[:-1] + (self.cfg.n_heads, x.shape[-1]))

    def stack_activation(self, activation_name: str, layer: int = -1, sublayer_type: Optional[str] = None) -> Array:
        """TransformerLens's ``stack_activation``: the site at layers ``0 .. layer-1``
        (``layer=-1``: every layer), stacked ``[layer, (batch,) ...]``."""
        layer0 = parse_site(get_act_name(activation_name, 0, sublayer_type), self.cfg)  # a per-layer site
        stack = self[layer0.name]
        return stack if layer == -1 else stack[:layer]

    def _check_sum_of_components(self, what: str) -> None:
        if self.cfg.post_norm:
            raise SiteError(
                f"{what}: post-norm models (BERT) renormalise the residual stream in every layer, so it is not a "
                "sum of component outputs"
            )

    def _upto(self, layer: Optional[int]) -> int:
        """TransformerLens's ``layer`` argument: None or -1 for every layer, else 0..n_layers."""
        n = self.cfg.n_layers
        if layer is None or layer == -1:
            return n
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= n:
            raise SiteError(f"layer must be None, -1 or an int in 0..{n}, got {layer!r}")
        return layer

    def accumulated_resid(
        self, layer: Optional[int] = None, incl_mid: bool = False, mlp_input: bool = False, return_labels: bool = False
    ):
        """TransformerLens's ``accumulated_resid``: the residual stream before each layer
        up to and including ``layer``'s input (labels ``"{l}_pre"``; ``"{l}_mid"`` after
        each attention with ``incl_mid``; with ``mlp_input``, ``layer``'s ``resid_mid``);
        with ``layer=None`` every layer then the final stream (``"final_post"``).

        Returns ``stack [component, (batch,) pos, d_model]`` (and the labels with
        ``return_labels``): the same arrays as `jaxinterp.analysis.lens.accumulated_resid`,
        which needs the model and names them ``L{l}_pre`` / ``final``."""
        self._check_sum_of_components("accumulated_resid")
        upto, n = self._upto(layer), self.cfg.n_layers
        if (incl_mid or mlp_input) and self.cfg.parallel_attn_mlp:
            raise SiteError("incl_mid / mlp_input: a parallel attention+MLP block has no resid_mid")
        parts, labels = [], []
        for i in range(upto + 1):
            if i == n:
                parts.append(self["resid_post", n - 1])
                labels.append("final_post")
                continue
            parts.append(self["resid_pre", i])
            labels.append(f"{i}_pre")
            if (incl_mid and i < upto) or (mlp_input and i == upto):
                parts.append(self["resid_mid", i])
                labels.append(f"{i}_mid")
        stack = jnp.stack(parts)
        return (stack, labels) if return_labels else stack

    def decompose_resid(
        self,
        layer: Optional[int] = None,
        mlp_input: bool = False,
        mode: str = "all",
        incl_embeds: bool = True,
        return_labels: bool = False,
    ):
        """TransformerLens's ``decompose_resid``: the residual stream entering ``layer``
        (None: the final stream) as a sum of components: ``embed``, ``pos_embed`` (learned
        positions), then ``"{l}_attn_out"`` and ``"{l}_mlp_out"`` per layer (``mode``
        ``"all"``, ``"attn"`` or ``"mlp"``); with ``mlp_input``, also ``layer``'s attention
        output (the MLP's input in a sequential block).

        Returns ``stack [component, (batch,) pos, d_model]`` (and the labels); summed over
        every component it is the stream (output biases are inside ``attn_out`` /
        ``mlp_out``). Per-head components:
        `jaxinterp.analysis.lens.decompose_resid(model, cache=cache, by="head")`."""
        self._check_sum_of_components("decompose_resid")
        if mode not in ("all", "attn", "mlp"):
            raise SiteError(f"mode must be 'all', 'attn' or 'mlp', got {mode!r}")
        upto = self._upto(layer)
        incl_attn, incl_mlp = mode != "mlp", mode != "attn" and self.cfg.has_mlp
        parts, labels = [], []
        if incl_embeds:
            for name in ("embed", "pos_embed", "token_type_embed"):
                if name in self.data:
                    parts.append(self[name])
                    labels.append(name)
        for i in range(upto):
            if incl_attn:
                parts.append(self["attn_out", i])
                labels.append(f"{i}_attn_out")
            if incl_mlp:
                parts.append(self["mlp_out", i])
                labels.append(f"{i}_mlp_out")
        if mlp_input and incl_attn and upto < self.cfg.n_layers:
            parts.append(self["attn_out", upto])
            labels.append(f"{upto}_attn_out")
        stack = jnp.stack(parts)
        return (stack, labels) if return_labels else stack
