"""SAE features as patchable and attributable nodes.

The splice (`splice`) carries an additive ``feature_delta [pos, d_sae]`` as traced
data, so

- `feature_attribution`: one forward and one backward pass give ``d metric / d f`` for
  every feature at every position; times ``(f_source - f_base)`` it estimates patching
  each feature from the source run into the base run (attribution patching, the
  denoising convention of `jaxinterp.attribution.attribution_patch`: base = corrupted,
  source = clean), and with ``source=None`` it estimates zero-ablating each feature
  (``-f * grad``).
- `feature_patch`: the exact effect of patching (or ablating) each of the listed
  features at every position, vmapped over features in one compiled program.

Both splice with the error term, so the unedited run is the model's own and each edit
acts only through the feature's decoder row (Marks et al. 2024, "Sparse Feature Circuits").
"""

from __future__ import annotations

from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .errors import SAEError
from .modules import SAE
from .splice import _short, spliced_forward

__all__ = ["feature_acts", "feature_attribution", "feature_patch"]


def feature_acts(model, sae: SAE, tokens: Int[Array, " pos"]) -> Float[Array, "pos d_sae"]:
    """One example's feature activations at the SAE's layer (no jit)."""
    name = _short(model, sae.cfg.site)
    _, cache = model.forward(tokens, None, frozenset({name}))
    return sae.encode(cache[name][sae.cfg.layer])


@eqx.filter_jit
def _attribution(model, sae, base, source, metric):
    f_base = feature_acts(model, sae, base)
    f_source = jnp.zeros_like(f_base) if source is None else feature_acts(model, sae, source)

    def run(delta):
        return metric(spliced_forward(model, sae, base, error=True, feature_delta=delta))

    value, grad = jax.value_and_grad(run)(jnp.zeros_like(f_base))
    return value, grad, grad * (f_source - f_base)


def feature_attribution(
    model,
    sae: SAE,
    base_tokens: Int[Array, " pos"],
    metric: Callable,
    source_tokens: Optional[Int[Array, " pos"]] = None,
) -> dict[str, Array]:
    """Attribution of ``metric(logits [pos, d_vocab])`` to every SAE feature at every
    position of one example.

    Returns ``{"metric": value on base, "grad": [pos, d_sae], "attribution": [pos,
    d_sae]}``: ``grad * (f_source - f_base)`` (``source_tokens`` of the same length), or
    ``-grad * f_base`` (zero-ablation) when ``source_tokens`` is None. Sum over
    positions for one number per feature.
    """
    base = jnp.asarray(base_tokens)
    if base.ndim != 1:
        raise SAEError(f"base_tokens must be one prompt [pos], got shape {base.shape}")
    source = None if source_tokens is None else jnp.asarray(source_tokens)
    if source is not None and source.shape != base.shape:
        raise SAEError(f"source_tokens {source.shape} must match base_tokens {base.shape}")
    value, grad, attr = _attribution(model, sae, base, source, metric)
    return {"metric": value, "grad": grad, "attribution": attr}


@eqx.filter_jit
def _patch(model, sae, base, source, metric, features):
    f_base = feature_acts(model, sae, base)
    f_source = jnp.zeros_like(f_base) if source is None else feature_acts(model, sae, source)
    d_sae = f_base.shape[-1]

    def one(i):
        onehot = (jnp.arange(d_sae) == i).astype(f_base.dtype)
        delta = (f_source - f_base) * onehot
        return metric(spliced_forward(model, sae, base, error=True, feature_delta=delta))

    return jax.vmap(one)(features)


def feature_patch(
    model,
    sae: SAE,
    base_tokens: Int[Array, " pos"],
    metric: Callable,
    features,
    source_tokens: Optional[Int[Array, " pos"]] = None,
) -> Float[Array, " feature"]:
    """``metric`` of the base run with each feature in ``features`` (int array) set to its
    value in the source run at every position (``source_tokens=None``: zero-ablated),
    the error term kept. One vmapped, compiled program; ``[len(features)]``. Subtract
    the unpatched metric for effects comparable to `feature_attribution` summed over
    positions."""
    features = jnp.asarray(features)
    if features.ndim != 1 or not jnp.issubdtype(features.dtype, jnp.integer):
        raise SAEError(f"features must be a 1-d int array of latent indices, got {features.dtype} {features.shape}")
    base = jnp.asarray(base_tokens)
    source = None if source_tokens is None else jnp.asarray(source_tokens)
    return _patch(model, sae, base, source, metric, features)
