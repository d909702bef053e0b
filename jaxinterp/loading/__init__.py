"""Loading models and tokenizers: HF directories, hub ids, GGUF files."""

from __future__ import annotations

import jax.numpy as jnp

from ..core.errors import CheckpointError, UnsupportedArchitectureError
from ..model import Transformer
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


def load(path_or_id: str, dtype=jnp.float32, *, allow_pickle: bool = False) -> Transformer:
    """Load a model from an HF directory, a hub id, or a ``.gguf`` file.

    ``dtype``: the parameter dtype (float32 by default; bfloat16 works). Pickled
    checkpoints (``*.bin``) are refused unless ``allow_pickle=True``.
    """
    path = str(path_or_id)
    if path.endswith(".gguf"):
        from .gguf import load_gguf

        return load_gguf(path, dtype)
    return load_hf(path, dtype, allow_pickle=allow_pickle)
