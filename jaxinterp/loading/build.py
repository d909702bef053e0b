"""Assemble a `Transformer` from a config and a flat dict of converted weights.

Parameter names are the model's own pytree paths with layers stacked, e.g.
``embed.W_E``, ``blocks.attn.W_Q`` (``[layer, head, d_model, d_head]``),
``blocks.mlp.W_out``, ``ln_final.w``, ``unembed.W_U``. The expected names and shapes
come from the model skeleton itself, so they cannot drift from the modules.
"""

from __future__ import annotations

from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from ..core.config import ModelConfig
from ..core.errors import CheckpointError, ConfigError
from ..model import Transformer
from ..model.sharding import DEFAULT_RULES, AxisRules, param_shapes, param_shardings, path_name, shard_model


def expected_params(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every float parameter the architecture has, with its (layer-stacked) shape: what
    a converted checkpoint must provide (`jaxinterp.model.sharding.param_shapes`)."""
    return param_shapes(cfg)


def check_dtype(dtype) -> jnp.dtype:
    """``dtype`` as a floating numpy dtype (float32, bfloat16, float16, ...): `ConfigError`
    otherwise (an int dtype would round every weight to 0; complex gives complex logits)."""
    try:
        dt = jnp.dtype(dtype)
    except TypeError as e:
        raise ConfigError(f"dtype must be a floating dtype (float32, bfloat16, float16), got {dtype!r}") from e
    if not jnp.issubdtype(dt, jnp.floating):
        raise ConfigError(f"dtype must be a floating dtype (float32, bfloat16, float16), got {dt}")
    return dt


def build_model(
    cfg: ModelConfig,
    params: dict[str, np.ndarray],
    dtype=jnp.float32,
    origin: str = "checkpoint",
    *,
    mesh: Optional[Mesh] = None,
    rules: AxisRules = DEFAULT_RULES,
    consume: bool = False,
) -> Transformer:
    """A `Transformer` whose float leaves are ``params`` (cast to ``dtype``).

    ``mesh``: place each weight straight onto its sharding under ``rules``
    (`jaxinterp.model.sharding.param_specs`): every device receives only its own block,
    cut and cast on the host, so no device ever holds a whole sharded weight.
    ``consume=True`` pops each array from ``params`` as it is placed on the device, so its
    host copy is freed as soon as nothing else holds it and a load never holds the model
    twice (the loaders pass it; ``params`` is then left empty)."""
    dtype = check_dtype(dtype)
    expected = expected_params(cfg)
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{origin}: converted weights do not match the architecture; "
            f"missing {missing or 'none'}, unexpected {unexpected or 'none'}"
        )
    for name, shape in expected.items():
        got = tuple(np.shape(params[name]))
        if got != shape:
            raise CheckpointError(f"{origin}: tensor for {name} has shape {got}, expected {shape} from the config")
    skeleton = eqx.filter_eval_shape(Transformer.init, cfg, jax.random.key(0), dtype)
    paths, treedef = jax.tree_util.tree_flatten_with_path(skeleton)
    shardings = None if mesh is None else param_shardings(cfg, mesh, rules)
    leaves = []
    for path, leaf in paths:
        name = path_name(path)
        if name in params:
            array = params.pop(name) if consume else params[name]
            if shardings is not None:
                leaves.append(_place(array, dtype, shardings[name]).block_until_ready())
            else:
                array = np.asarray(array).astype(dtype, copy=False)
                # device_put, not jnp.asarray (which keeps an extra host copy alive); and wait
                # for each transfer, which otherwise runs asynchronously holding its host
                # array, so queued transfers would keep the whole host model alive at once.
                leaves.append(jax.device_put(array).block_until_ready())
            del array
        else:  # non-parameter data such as the per-layer attention windows
            leaves.append(jnp.asarray(cfg.windows, jnp.int32) if name == "blocks.window" else None)
    model = jax.tree_util.tree_unflatten(treedef, leaves)
    return model if mesh is None else shard_model(model, mesh, rules)  # the windows: replicated


def _place(tensor, dtype, sharding: NamedSharding) -> jax.Array:
    """``tensor`` (host) as a global array with ``sharding``: each device's block is cut
    from the host tensor and cast to ``dtype`` on its own, then transferred."""

    def block(index):
        return np.asarray(tensor[index]).astype(dtype, copy=False)

    return jax.make_array_from_callback(tuple(np.shape(tensor)), sharding, block)
