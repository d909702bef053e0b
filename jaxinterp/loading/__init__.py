"""Loading models and tokenizers: HF directories, hub ids, GGUF files."""

from __future__ import annotations

import numbers
from typing import Optional

import jax.numpy as jnp
from jax.sharding import Mesh

from ..core.errors import CheckpointError, ConfigError, UnsupportedArchitectureError
from ..model import Transformer
from ..model.sharding import DEFAULT_RULES, AxisRules
from .build import build_model, expected_params
from .hf import load_hf
from .verify import VerifyReport, verify

__all__ = [
    "load",
    "build_model",
    "expected_params",
    "verify",
    "VerifyReport",
    "CheckpointError",
    "UnsupportedArchitectureError",
]


def load(
    path_or_id: str,
    dtype=jnp.float32,
    *,
    allow_pickle: bool = False,
    mesh: Optional[Mesh] = None,
    rules: AxisRules = DEFAULT_RULES,
    n_layers: Optional[int] = None,
) -> Transformer:
    """Load a model from an HF directory, a hub id, or a ``.gguf`` file.

    ``dtype``: the parameter dtype (float32 by default; bfloat16 works). Pickled
    checkpoints (``*.bin``) are refused unless ``allow_pickle=True``.

    ``mesh``: a `jax.sharding.Mesh` (e.g. `jaxinterp.model.sharding.make_mesh`); each
    weight goes straight onto its sharding under ``rules`` (logical axis -> mesh axis,
    default: heads, MLP neurons, experts and vocabulary split over ``"model"``): every
    device receives only its block, so a model bigger than one device loads. On several
    processes (`jax.distributed`) every process loads the same file and builds only the
    blocks of its own devices.

    ``n_layers``: load only the first ``n_layers`` blocks (then the final norm and the
    unembedding). The same model as ``load(path).first_layers(n_layers)``, but the later
    layers' tensors are never read or converted: a fraction of the time and memory, for
    studies of early layers and quick runs of code written for the full model.
    `ConfigError` unless ``1 <= n_layers <=`` the checkpoint's layer count.
    """
    path = str(path_or_id)
    if n_layers is not None and (isinstance(n_layers, bool) or not isinstance(n_layers, numbers.Integral)):
        raise ConfigError(f"n_layers must be an int (the number of blocks to load) or None, got {n_layers!r}")
    placement = {} if mesh is None else {"mesh": mesh, "rules": rules}
    if path.endswith(".gguf"):
        from .gguf import load_gguf

        return load_gguf(path, dtype, n_layers=n_layers, **placement)
    return load_hf(path, dtype, allow_pickle=allow_pickle, n_layers=n_layers, **placement)
