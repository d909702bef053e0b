"""Model names as the command line, the demo and the examples take them: ``smollm2`` (the
bundled SmolLM2-135M GGUF), an HF directory, a hub id or a ``.gguf`` file."""

from __future__ import annotations

import os
from typing import Optional

from ..core.errors import CheckpointError
from .bundled import smollm2_path

__all__ = ["SMOLLM2_ALIASES", "resolve_model_path", "load_model_and_tokenizer"]

SMOLLM2_ALIASES = ("smollm2", "smollm2-135m")


def resolve_model_path(model: str) -> str:
    """``smollm2`` -> the bundled GGUF's path; anything else is returned unchanged."""
    return smollm2_path() if model.lower() in SMOLLM2_ALIASES else model


def load_model_and_tokenizer(model: str, need_tokenizer: bool = True, n_layers: Optional[int] = None):
    """``(Transformer, Tokenizer or None)`` for a model name (see the module docstring);
    `CheckpointError` for a path that does not exist. ``n_layers``: only the first
    blocks (see `jaxinterp.load`)."""
    from . import load
    from .tokenizer import load_tokenizer

    path = resolve_model_path(model)
    if not os.path.exists(path) and (path.startswith((".", "/")) or path.endswith(".gguf")):
        raise CheckpointError(f"no such model file or directory: {path}")
    return load(path, n_layers=n_layers), (load_tokenizer(path) if need_tokenizer else None)
