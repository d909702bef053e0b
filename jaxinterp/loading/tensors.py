"""`TensorSource`: the tensors of a checkpoint, read lazily one at a time, converted to
the target dtype as they are read, with bookkeeping of which ones a family's converter
consumed (so unexpected tensors can be reported).

Lean loading: a tensor is read from disk only when a converter takes it, and comes back
already in the model's dtype (bf16 stays bf16: ``ml_dtypes.bfloat16`` numpy arrays), so
no float32 copy of the whole checkpoint ever exists. Safetensors files are read with
plain positioned reads rather than a memory map: pages of a mapped file count towards
the process's resident memory for as long as the map lives, which would add the whole
file to the peak of a load.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import os
import struct
from typing import Callable, Iterable, Optional

import jax.numpy as jnp
import ml_dtypes
import numpy as np

from ..core.errors import CheckpointError

# safetensors dtype names -> numpy dtypes (little-endian, as the format stores them).
SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


def to_dtype(a: np.ndarray, dtype: Optional[np.dtype]) -> np.ndarray:
    """``a`` in ``dtype`` when both are floating (no copy if it already is); integer and
    boolean tensors, and any tensor when ``dtype`` is None, are returned as they are."""
    if dtype is None or a.dtype == dtype or not jnp.issubdtype(a.dtype, jnp.floating):
        return a
    return a.astype(dtype)


def layer_index(name: str) -> Optional[int]:
    """The block a checkpoint tensor belongs to: its first all-digit dotted component
    ("model.layers.3.mlp.up_proj.weight", "transformer.h.3.attn.c_attn.bias",
    "encoder.layer.3...", "blk.3..." -> 3), or None for a tensor outside the blocks."""
    return next((int(part) for part in name.split(".") if part.isdigit()), None)


class TensorSource:
    """A read-only mapping name -> numpy array with a ``take`` that records use.

    ``dtype``: the dtype ``take`` returns floating tensors in (None: as stored)."""

    def __init__(
        self,
        getters: dict[str, Callable[[], np.ndarray]],
        origin: str,
        shapes: Optional[dict] = None,
        dtype=None,
    ):
        self._getters = getters
        self._shapes = shapes or {}
        self.origin = origin
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.used: set[str] = set()
        self.prefix = ""

    @property
    def names(self) -> list[str]:
        return sorted(self._getters)

    def has(self, name: str) -> bool:
        return self.prefix + name in self._getters

    def take(self, name: str) -> np.ndarray:
        """The tensor ``name`` (under the current prefix), read now, in ``self.dtype``."""
        full = self.prefix + name
        if full not in self._getters:
            close = difflib.get_close_matches(full, self._getters, n=3, cutoff=0.6)
            hint = f" (closest present: {', '.join(close)})" if close else ""
            raise CheckpointError(f"checkpoint {self.origin} is missing tensor {full!r}{hint}")
        self.used.add(full)
        try:
            return to_dtype(np.asarray(self._getters[full]()), self.dtype)
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

    def check_all_used(self, ignore: Iterable[str] = (), from_layer: Optional[int] = None) -> None:
        """`CheckpointError` naming the tensors never taken, except those matching a glob
        of ``ignore`` and, with ``from_layer``, those of layers ``from_layer`` and up (a
        load of the first layers only)."""
        ignore = list(ignore)

        def expected_unused(name: str) -> bool:
            if any(fnmatch.fnmatch(name, p) for p in ignore):
                return True
            layer = layer_index(name)
            return from_layer is not None and layer is not None and layer >= from_layer

        left = [n for n in self._getters if n not in self.used and not expected_unused(n)]
        if left:
            shown = ", ".join(sorted(left)[:8]) + (" ..." if len(left) > 8 else "")
            raise CheckpointError(
                f"checkpoint {self.origin} has {len(left)} unexpected tensor(s) this architecture does not use: {shown}"
            )


def safetensors_header(path: str) -> tuple[dict[str, tuple[np.dtype, tuple[int, ...], int, int]], int]:
    """The tensors of one ``.safetensors`` file: name -> (dtype, shape, begin, end), the
    byte range relative to the data section, and where that section starts.

    The format: a little-endian u64 header length, a JSON header, then the data.
    `CheckpointError` "corrupt safetensors file" for anything that does not add up."""
    size = os.path.getsize(path)

    def corrupt(why: str) -> CheckpointError:
        return CheckpointError(f"corrupt safetensors file {path}: {why}")

    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise corrupt(f"{size} bytes, shorter than the header length field")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8:
            raise corrupt(f"header length {n} runs past the end of the {size}-byte file")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise corrupt(f"the header is not JSON ({e})") from e
    if not isinstance(header, dict):
        raise corrupt("the header is not a JSON object")
    start, tensors = 8 + n, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = SAFETENSORS_DTYPES[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise corrupt(f"bad entry for tensor {name!r}: {info!r}") from e
        if end - begin != dtype.itemsize * int(np.prod(shape, dtype=np.int64)) or begin < 0:
            raise corrupt(f"tensor {name!r}: byte range {begin}..{end} does not hold {info['dtype']} {list(shape)}")
        if start + end > size:
            raise corrupt(f"tensor {name!r} ends at byte {start + end}, the file has {size}")
        tensors[name] = (dtype, shape, begin, end)
    return tensors, start


def read_safetensor(path: str, start: int, dtype: np.dtype, shape: tuple[int, ...], begin: int, end: int):
    """One tensor of a safetensors file, read into a fresh array (no memory map)."""
    buf = np.empty(end - begin, np.uint8)
    with open(path, "rb") as f:
        f.seek(start + begin)
        if f.readinto(memoryview(buf)) != end - begin:
            raise CheckpointError(f"corrupt safetensors file {path}: truncated data")
    return buf.view(dtype).reshape(shape)


def read_safetensors_dir(path: str, dtype=None) -> TensorSource:
    """Tensors of an HF directory (``model.safetensors`` or a sharded index), each read
    when taken and returned in ``dtype`` (None: as stored)."""
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
        tensors, start = safetensors_header(full)
        for key, (dt, shape, begin, end) in tensors.items():
            getters[key] = (lambda *a: lambda: read_safetensor(*a))(full, start, dt, shape, begin, end)
    return TensorSource(getters, path, dtype=dtype)


def read_pickled_dir(path: str, dtype=None) -> TensorSource:
    """Opt-in only: pickled ``*.bin`` weights, read with torch (``weights_only=True``)."""
    try:
        import torch
    except ImportError as e:
        raise CheckpointError("allow_pickle=True needs torch installed to read pickled weights") from e

    def numpy(t):  # numpy has no bfloat16: reinterpret the bits as ml_dtypes' bfloat16
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16) if t.dtype == torch.bfloat16 else t.numpy()

    getters = {}
    for fname in sorted(os.listdir(path)):
        if fname.endswith((".bin", ".pt", ".pth")):
            state = torch.load(os.path.join(path, fname), map_location="cpu", weights_only=True)
            for k, v in state.items():
                getters[k] = (lambda t: lambda: numpy(t))(v)
    if not getters:
        raise CheckpointError(f"no pickled weights in {path}")
    return TensorSource(getters, path, dtype=dtype)
