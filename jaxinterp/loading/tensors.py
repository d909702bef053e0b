"""`TensorSource`: the tensors of a checkpoint, read lazily, with bookkeeping of which
ones a family's converter consumed (so unexpected tensors can be reported)."""

from __future__ import annotations

import difflib
import fnmatch
import json
import os
from typing import Callable, Iterable, Optional

import numpy as np

from ..core.errors import CheckpointError


class TensorSource:
    """A read-only mapping name -> numpy array with a ``take`` that records use."""

    def __init__(self, getters: dict[str, Callable[[], np.ndarray]], origin: str, shapes: Optional[dict] = None):
        self._getters = getters
        self._shapes = shapes or {}
        self.origin = origin
        self.used: set[str] = set()
        self.prefix = ""

    @property
    def names(self) -> list[str]:
        return sorted(self._getters)

    def has(self, name: str) -> bool:
        return self.prefix + name in self._getters

    def take(self, name: str) -> np.ndarray:
        full = self.prefix + name
        if full not in self._getters:
            close = difflib.get_close_matches(full, self._getters, n=3, cutoff=0.6)
            hint = f" (closest present: {', '.join(close)})" if close else ""
            raise CheckpointError(f"checkpoint {self.origin} is missing tensor {full!r}{hint}")
        self.used.add(full)
        try:
            return np.asarray(self._getters[full]())
        except CheckpointError:
            raise
        except Exception as e:  # a truncated or corrupt file surfaces here
            raise CheckpointError(f"could not read tensor {full!r} from {self.origin}: {e}") from e

    def strip_prefix(self, candidates: Iterable[str], probe: str) -> None:
        """Pick the first prefix under which ``probe`` exists (e.g. "transformer.")."""
        for p in candidates:
            if p + probe in self._getters:
                self.prefix = p
                return
        self.prefix = ""

    def check_all_used(self, ignore: Iterable[str] = ()) -> None:
        ignore = list(ignore)
        left = [n for n in self._getters if n not in self.used and not any(fnmatch.fnmatch(n, p) for p in ignore)]
        if left:
            shown = ", ".join(sorted(left)[:8]) + (" ..." if len(left) > 8 else "")
            raise CheckpointError(
                f"checkpoint {self.origin} has {len(left)} unexpected tensor(s) this architecture does not use: {shown}"
            )


def read_safetensors_dir(path: str) -> TensorSource:
    """Tensors of an HF directory: ``model.safetensors`` or a sharded index."""
    from safetensors import safe_open

    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"corrupt safetensors index {index}: {e}") from e
        files = sorted(set(weight_map.values()))
    else:
        files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
        if not files:
            pickles = [f for f in os.listdir(path) if f.endswith((".bin", ".pt", ".pth"))]
            if pickles:
                raise CheckpointError(
                    f"{path} has only pickled weights ({', '.join(pickles)}). Unpickling can run arbitrary "
                    "code, so it is off by default: pass allow_pickle=True to load them (needs torch), "
                    "or convert them to safetensors."
                )
            raise CheckpointError(f"no *.safetensors files in {path}")
    getters: dict[str, Callable[[], np.ndarray]] = {}
    for fname in files:
        full = os.path.join(path, fname)
        if not os.path.exists(full):
            raise CheckpointError(f"the safetensors index names {fname}, which is not in {path}")
        try:
            handle = safe_open(full, framework="numpy")
        except Exception as e:
            raise CheckpointError(f"corrupt safetensors file {full}: {e}") from e
        for key in handle.keys():
            getters[key] = (lambda p, h, k: lambda: _get(p, h, k))(full, handle, key)
    return TensorSource(getters, path)


def _get(path, handle, key):
    if handle.get_slice(key).get_dtype() != "BF16":
        return handle.get_tensor(key)
    # numpy has no bfloat16; the flax framework reads it as a jax array.
    from safetensors import safe_open

    with safe_open(path, framework="flax") as h:
        return np.asarray(h.get_tensor(key).astype("float32"))


def read_pickled_dir(path: str) -> TensorSource:
    """Opt-in only: pickled ``*.bin`` weights, read with torch (``weights_only=True``)."""
    try:
        import torch
    except ImportError as e:
        raise CheckpointError("allow_pickle=True needs torch installed to read pickled weights") from e
    getters = {}
    for fname in sorted(os.listdir(path)):
        if fname.endswith((".bin", ".pt", ".pth")):
            state = torch.load(os.path.join(path, fname), map_location="cpu", weights_only=True)
            for k, v in state.items():
                getters[k] = (lambda t: lambda: t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy())(v)
    if not getters:
        raise CheckpointError(f"no pickled weights in {path}")
    return TensorSource(getters, path)
