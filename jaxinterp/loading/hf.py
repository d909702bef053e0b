"""Loading HuggingFace checkpoints: ``config.json`` + safetensors, local or from the hub."""

from __future__ import annotations

import json
import os
from typing import Optional

import jax.numpy as jnp

from ..core.errors import CheckpointError, JaxinterpError
from ..model import Transformer
from .build import build_model, check_dtype
from .families import family_for
from .hf_config import config_from_hf
from .tensors import read_pickled_dir, read_safetensors_dir


def resolve_local(path_or_id: str) -> str:
    """A local directory for ``path_or_id``: the directory itself, or a hub id's snapshot
    (downloaded when online; from the local HF cache when offline)."""
    if os.path.isdir(path_or_id):
        return path_or_id
    if os.path.exists(path_or_id):
        raise CheckpointError(f"{path_or_id} is a file; expected an HF model directory, a hub id, or a .gguf file")
    if path_or_id.count("/") > 1 or path_or_id.startswith((".", "/")):
        raise CheckpointError(f"no such directory: {path_or_id}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.model"]
    try:
        return snapshot_download(path_or_id, allow_patterns=patterns, local_files_only=offline)
    except LocalEntryNotFoundError as e:
        raise CheckpointError(
            f"{path_or_id!r} is not a local directory and is not in the HF cache"
            + (" (HF_HUB_OFFLINE is set, so nothing was downloaded)" if offline else "")
        ) from e
    except Exception as e:  # network failure, unknown repo, ...
        try:
            return snapshot_download(path_or_id, allow_patterns=patterns, local_files_only=True)
        except Exception:
            raise CheckpointError(f"could not get {path_or_id!r} from the hub or the local cache: {e}") from e


def read_config(path: str) -> dict:
    cfg_path = os.path.join(path, "config.json")
    if not os.path.exists(cfg_path):
        raise CheckpointError(f"{path} has no config.json")
    try:
        with open(cfg_path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"corrupt config.json in {path}: {e}") from e


def load_hf(
    path_or_id: str, dtype=jnp.float32, allow_pickle: bool = False, n_layers: Optional[int] = None, **placement
) -> Transformer:
    """``placement``: ``mesh=`` / ``rules=`` of `build_model` (weights placed on their
    shardings). ``n_layers``: only the first blocks (see `jaxinterp.load`)."""
    dtype = check_dtype(dtype)
    path = resolve_local(path_or_id)
    hf = read_config(path)
    if not isinstance(hf, dict) or "model_type" not in hf:
        raise CheckpointError(f"config.json in {path} has no model_type")
    if not isinstance(hf["model_type"], str):
        raise CheckpointError(f"config.json in {path}: model_type must be a string, got {hf['model_type']!r}")
    family = family_for(hf["model_type"])
    cfg = config_from_hf(hf, family, hf["model_type"])
    if n_layers is not None:
        cfg = cfg.first_layers(n_layers)
    has_safetensors = any(f.endswith(".safetensors") for f in os.listdir(path))
    src = read_pickled_dir(path, dtype) if allow_pickle and not has_safetensors else read_safetensors_dir(path, dtype)
    try:
        params = family.convert(src, cfg)
    except JaxinterpError:
        raise
    except (ValueError, TypeError, IndexError) as e:  # a reshape to the config's widths failed
        raise CheckpointError(
            f"{path}: the tensors do not match config.json ({hf['model_type']}): {e}; check the widths and head counts"
        ) from e
    src.check_all_used(family.IGNORED, from_layer=n_layers)
    return build_model(cfg, params, dtype, origin=path, consume=True, **placement)
