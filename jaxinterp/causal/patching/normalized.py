"""A patching sweep in TransformerLens's convention: normalised so that 0 is the corrupted
run's metric and 1 the clean run's, over the default axes of a site."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax.numpy as jnp
import numpy as np
from jaxtyping import Int

from ...core.errors import PatchingError
from ...core.labelled import LabelledArray
from ...core.sites import layer_site_dims, top_level_site_dims
from .activation import activation_patch

__all__ = ["sweep_axes", "patching_sweep"]


def sweep_axes(cfg, site: str) -> tuple[str, ...]:
    """The axes a patching sweep of a per-layer ``site`` covers by default: ``(layer,
    head)`` (each head at every position) for per-head sites, else ``(layer, pos)``."""
    if site in top_level_site_dims(cfg):
        raise PatchingError(f"{site!r} is not a per-layer site; sweep a per-layer one such as 'resid_pre' or 'attn.z'")
    dims = layer_site_dims(cfg)[site]
    if "head" in dims or "kv_head" in dims:
        return ("layer", "head" if "head" in dims else "kv_head")
    return ("layer", "pos")


def patching_sweep(
    model,
    clean: Int[np.ndarray, " pos"],
    corrupt: Int[np.ndarray, " pos"],
    site: str,
    metric: Callable,
    labels: Optional[Sequence[str]] = None,
    method: str = "auto",
) -> LabelledArray:
    """`jaxinterp.causal.patching.activation_patch` over `sweep_axes`, normalised so that 0 is
    the corrupted run's metric and 1 the clean run's (TransformerLens's convention).

    Patches whose clean and corrupted activations agree (a shared prompt prefix) are
    skipped: their value is the unpatched run's (``shortcuts=True``). ``method``: the
    patching engine (``"auto"``, ``"fast"`` or ``"plain"``).
    """
    clean, corrupt = jnp.asarray(clean), jnp.asarray(corrupt)  # type: ignore[assignment]
    clean_value, corrupt_value = float(metric(model(clean))), float(metric(model(corrupt)))
    if clean_value == corrupt_value:
        raise PatchingError("the clean and corrupted runs score the same under this metric: nothing to patch")
    raw = activation_patch(
        model,
        clean,
        corrupt,
        metric,
        site,
        sweep_axes(model.cfg, site),
        shortcuts=True,
        method=method,
        str_tokens=None if labels is None else list(labels),
    )
    values = (np.asarray(raw) - corrupt_value) / (clean_value - corrupt_value)
    return LabelledArray(values, raw.dims, raw.labels, name=f"patching {site}")
