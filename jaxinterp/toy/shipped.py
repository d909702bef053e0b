"""Small trained toy language models that ship with the package (safetensors + config
JSON + tokenizer.json), so examples run without training.

    model, tokenizer = jaxinterp.toy.load("attn-only-1l")

Names (`SHIPPED`): ``"bigram-0l"`` (0 layers: a bigram table of rank 64),
``"attn-only-1l"`` (1 attention-only layer, 4 heads), ``"mlp-2l"`` (2 layers with ReLU
MLPs of 256 neurons: the universal-neurons model, seed 0). All are trained on the bundled
Shakespeare corpus with one byte-level BPE vocabulary of 1024 tokens;
``python -m jaxinterp.toy.make`` regenerates them bit for bit. ``load`` also takes the
path of a folder written by `save_toy`.
"""

from __future__ import annotations

import dataclasses
import json
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import ModelConfig, Transformer
from jaxinterp.core.errors import JaxinterpError
from jaxinterp.toy.random_init import random_model

__all__ = ["SHIPPED", "WEIGHTS_DIR", "ToyLoadError", "save_toy", "load", "toy_info"]

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
SHIPPED = ("bigram-0l", "attn-only-1l", "mlp-2l")
_WEIGHTS, _CONFIG, _INFO = "model.safetensors", "config.json", "training.json"


class ToyLoadError(JaxinterpError):
    """An unknown toy name or a toy folder that is missing files."""


def _leaf_name(path) -> str:
    return ".".join(str(getattr(k, "name", getattr(k, "key", k))) for k in path)


def save_toy(folder: str, model: Transformer, tokenizer, info: dict | None = None) -> None:
    """Write ``model.safetensors`` (float leaves by dotted field name, e.g.
    ``blocks.attn.W_Q``), ``config.json`` (the `ModelConfig`), ``tokenizer.json`` +
    ``tokenizer_config.json`` and ``training.json`` (``info``). Byte-deterministic."""
    from safetensors.numpy import save_file

    from jaxinterp.toy.bpe import save_tokenizer

    os.makedirs(folder, exist_ok=True)
    leaves = jax.tree_util.tree_flatten_with_path(eqx.filter(model, eqx.is_inexact_array))[0]
    tensors = {_leaf_name(p): np.ascontiguousarray(np.asarray(v)) for p, v in leaves}
    save_file(tensors, os.path.join(folder, _WEIGHTS))
    with open(os.path.join(folder, _CONFIG), "w") as f:
        json.dump(dataclasses.asdict(model.cfg), f, indent=1, sort_keys=True)
    save_tokenizer(tokenizer, folder)
    with open(os.path.join(folder, _INFO), "w") as f:
        json.dump(info or {}, f, indent=1, sort_keys=True)


def _folder(name_or_path: str) -> str:
    if name_or_path in SHIPPED:
        return os.path.join(WEIGHTS_DIR, name_or_path)
    if os.path.isdir(name_or_path):
        return name_or_path
    raise ToyLoadError(f"unknown toy {name_or_path!r}: expected one of {list(SHIPPED)} or a folder written by save_toy")


def load(name_or_path: str) -> tuple[Transformer, object]:
    """``(model, tokenizer)`` of a shipped toy (a name in `SHIPPED`) or a `save_toy` folder."""
    from safetensors.numpy import load_file

    from jaxinterp import load_tokenizer

    folder = _folder(name_or_path)
    missing = [f for f in (_WEIGHTS, _CONFIG, "tokenizer.json") if not os.path.exists(os.path.join(folder, f))]
    if missing:
        raise ToyLoadError(f"toy folder {folder} lacks {', '.join(missing)}")
    with open(os.path.join(folder, _CONFIG)) as f:
        cfg = ModelConfig(**json.load(f))
    tensors = load_file(os.path.join(folder, _WEIGHTS))
    skeleton = random_model(cfg, seed=0)

    def fill(path, leaf):
        if not eqx.is_inexact_array(leaf):
            return leaf
        name = _leaf_name(path)
        if name not in tensors or tensors[name].shape != leaf.shape:
            raise ToyLoadError(f"{folder}/{_WEIGHTS}: tensor {name} {leaf.shape} missing or of another shape")
        return jnp.asarray(tensors[name], leaf.dtype)

    model = jax.tree_util.tree_map_with_path(fill, skeleton)
    return model, load_tokenizer(folder)


def toy_info(name_or_path: str) -> dict:
    """The ``training.json`` of a toy: how it was trained and its measured losses."""
    with open(os.path.join(_folder(name_or_path), _INFO)) as f:
        return json.load(f)
