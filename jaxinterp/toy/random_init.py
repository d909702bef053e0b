"""Random weights drawn with numpy: a fast stand-in for `Transformer.init` in toys and tests.

`Transformer.init` draws with ``jax.random``, which compiles one threefry program per
distinct weight shape: seconds per model on a small CPU, paid again in every process.
Drawing with numpy costs nothing to compile; the model is otherwise identical.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..core.config import ModelConfig
from ..model import Transformer

__all__ = ["random_model"]


def random_model(cfg: ModelConfig, seed=0, std: float = 0.02, norm_std: float = 0.0, dtype=jnp.float32) -> Transformer:
    """A `Transformer` whose float weights are ``N(0, std^2)`` (biases included) and whose
    norm weights are ``1 + N(0, norm_std^2)`` (in effective terms: Gemma-style ``1 + w``
    norms store ``w = N(0, norm_std^2)``). Deterministic given ``seed`` (anything
    ``numpy.random.default_rng`` accepts, e.g. an int or ``jax.random.key_data(key)``)."""
    shapes = eqx.filter_eval_shape(Transformer.init, cfg, jax.random.key(0), dtype)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        if not isinstance(leaf, jax.ShapeDtypeStruct):
            return leaf
        if not jnp.issubdtype(leaf.dtype, jnp.floating):  # per-layer attention windows
            return jnp.asarray(cfg.windows, leaf.dtype)
        x = rng.normal(size=leaf.shape)
        if getattr(path[-1], "name", None) == "w":  # a norm weight
            x = 1.0 - cfg.norm_weight_offset + norm_std * x
        else:
            x = std * x
        return jnp.asarray(x, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)
