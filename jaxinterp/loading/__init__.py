"""Loading models and tokenizers: HF directories, hub ids, GGUF files."""

from __future__ import annotations

from typing import Optional

import jax.numpy as jnp
from jax.sharding import Mesh

from ..core.errors import CheckpointError, UnsupportedArchitectureError
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
    """
    path = str(path_or_id)
    placement = {} if mesh is None else {"mesh": mesh, "rules": rules}
    if path.endswith(".gguf"):
        from .gguf import load_gguf

        return load_gguf(path, dtype, **placement)
    return load_hf(path, dtype, allow_pickle=allow_pickle, **placement)
