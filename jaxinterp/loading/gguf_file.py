"""A fast reader for the GGUF container: metadata and tensor views, no dequantising.

``gguf.GGUFReader`` builds a numpy view for every metadata item; for a tokenizer's
49k-entry string arrays that takes ~10 s per open (profiled on SmolLM2), and every
model, tokenizer and chat-template load opened the file again. This reader walks the
same layout with ``struct`` over an ``mmap`` (~0.1 s) and leaves tensor data as
zero-copy ``numpy`` views of the mapped file, in the form ``gguf.quants.dequantize``
takes: a typed array for float/int tensors, raw block bytes (``uint8``) for quantised
ones. The ``gguf`` package stays the reference: tests compare both readers field by
field and tensor by tensor.

Layout (GGUF v2/v3, little-endian): magic ``GGUF``, version u32, tensor count u64,
metadata count u64; each metadata item is a key string, a value type u32 and the value;
each tensor info is a name, n_dims u32, dims u64 (fastest first), ggml type u32 and a
data offset u64 relative to the data section, which starts at the next multiple of
``general.alignment`` (default 32) after the infos.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.errors import CheckpointError

_MAGIC = b"GGUF"
_DEFAULT_ALIGNMENT = 32

# GGUF value types -> struct format (scalars) ; 8 = string, 9 = array.
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_NUMPY = {0: "u1", 1: "i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of a GGUF file.

    Attributes:
        name: the GGUF tensor name (``blk.3.attn_q.weight``).
        shape: dims in GGUF order (fastest first), as ``GGUFReader`` reports them.
        tensor_type: the ``gguf.GGMLQuantizationType``.
        data: a read-only view of the mapped file in numpy (row-major) order: typed
            elements for float/int types, ``uint8`` block bytes ``[..., row_bytes]`` for
            quantised types (what ``gguf.quants.dequantize`` takes).
    """

    name: str
    shape: tuple[int, ...]
    tensor_type: Any
    data: np.ndarray
    offset: int = 0


class _Cursor:
    """Sequential little-endian reads from a buffer; out-of-range reads raise
    `CheckpointError` (a truncated file)."""

    def __init__(self, buf, path: str):
        self.buf, self.path, self.pos = buf, path, 0

    def unpack(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.buf):
            raise CheckpointError(
                f"{self.path} is not a readable GGUF file (corrupt or truncated?): header runs past the end"
            )
        value = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return value[0] if len(value) == 1 else value

    def string(self) -> str:
        n = self.unpack("Q")
        if self.pos + n > len(self.buf):
            raise CheckpointError(
                f"{self.path} is not a readable GGUF file (corrupt or truncated?): string runs past the end"
            )
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as e:
            raise CheckpointError(f"{self.path} is not a readable GGUF file (corrupt?): a string is not UTF-8") from e

    def skip_strings(self, n: int) -> None:
        """Step over ``n`` strings without decoding them."""
        for _ in range(n):
            length = self.unpack("Q")  # (not `pos += unpack()`: that reads pos before the unpack moves it)
            self.pos += length
        if self.pos > len(self.buf):
            raise CheckpointError(
                f"{self.path} is not a readable GGUF file (corrupt or truncated?): array runs past the end"
            )

    def value(self, kind: int) -> Any:
        if kind in _SCALAR:
            return self.unpack(_SCALAR[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, n = self.unpack("I"), self.unpack("Q")
            if item in _NUMPY:
                dtype = np.dtype(_NUMPY[item])
                if self.pos + n * dtype.itemsize > len(self.buf):
                    raise CheckpointError(
                        f"{self.path} is not a readable GGUF file (corrupt or truncated?): array runs past the end"
                    )
                out = np.frombuffer(self.buf, dtype, n, self.pos).tolist()
                self.pos += n * dtype.itemsize
                return out
            return [self.value(item) for _ in range(n)]
        raise CheckpointError(f"{self.path} is not a readable GGUF file (corrupt?): unknown metadata value type {kind}")


class GGUFFile:
    """A GGUF file opened for reading.

    Attributes:
        path: the file.
        version: the GGUF version (2 or 3).
        metadata: every metadata key -> its Python value (str, int, float, bool, list).
        tensors: the tensors in file order (`GGUFTensor`).

    ``skip``: metadata keys whose string arrays are stepped over undecoded and left out
    (loading only the model need not decode the tokenizer's 49k-entry vocabulary).

    Raises `CheckpointError` naming the path for a missing, truncated, big-endian or
    otherwise unreadable file.
    """

    def __init__(self, path: str, skip: tuple[str, ...] = ()):
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        self.path = path = str(path)
        if not os.path.isfile(path):
            raise CheckpointError(f"no such GGUF file: {path}")
        if os.path.getsize(path) < 24:
            raise CheckpointError(
                f"{path} is not a readable GGUF file (corrupt or truncated?): {os.path.getsize(path)} bytes"
            )
        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        cur = _Cursor(self._map, path)
        if self._map[:4] != _MAGIC:
            raise CheckpointError(f"{path} is not a readable GGUF file (corrupt or truncated?): no GGUF magic")
        cur.pos = 4
        self.version = cur.unpack("I")
        if self.version not in (2, 3):
            hint = " (a big-endian file?)" if self.version & 0xFFFF == 0 else ""
            raise CheckpointError(f"{path}: GGUF version {self.version} is not supported (2 or 3){hint}")
        n_tensors, n_meta = cur.unpack("Q"), cur.unpack("Q")
        self.metadata: dict[str, Any] = {}
        for _ in range(n_meta):
            key = cur.string()
            kind = cur.unpack("I")
            if key in skip and kind == _ARRAY:
                item, n = cur.unpack("I"), cur.unpack("Q")
                if item == _STRING:
                    cur.skip_strings(n)
                    continue
                cur.pos -= 12  # not a string array: read it as usual
            self.metadata[key] = cur.value(kind)
        infos = []
        for _ in range(n_tensors):
            name = cur.string()
            n_dims = cur.unpack("I")
            if n_dims > 8:
                raise CheckpointError(
                    f"{path} is not a readable GGUF file (corrupt?): tensor {name!r} has {n_dims} dims"
                )
            dims = tuple(int(cur.unpack("Q")) for _ in range(n_dims))
            infos.append((name, dims, cur.unpack("I"), cur.unpack("Q")))
        align = self.metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
        if not isinstance(align, int) or align <= 0 or align & (align - 1):
            raise CheckpointError(f"{path}: general.alignment must be a power of two, got {align!r}")
        start = -(-cur.pos // align) * align
        self.tensors: list[GGUFTensor] = []
        seen = set()
        for name, dims, raw_type, offset in infos:
            if name in seen:
                raise CheckpointError(f"{path} is not a readable GGUF file (corrupt?): duplicate tensor {name!r}")
            seen.add(name)
            try:
                qtype = GGMLQuantizationType(raw_type)
                block, type_size = GGML_QUANT_SIZES[qtype]
            except (ValueError, KeyError) as e:
                raise CheckpointError(f"{path}: tensor {name!r} has unknown ggml type {raw_type}") from e
            np_shape = tuple(reversed(dims))
            n = int(np.prod(dims, dtype=np.int64))
            if dims and dims[0] % block:
                raise CheckpointError(
                    f"{path}: tensor {name!r} row of {dims[0]} is not a whole number of {block}-blocks"
                )
            n_bytes = n * type_size // block
            begin = start + offset
            if begin + n_bytes > len(self._map):
                raise CheckpointError(
                    f"{path} is not a readable GGUF file (corrupt or truncated?): tensor {name!r} ends at byte "
                    f"{begin + n_bytes}, the file has {len(self._map)}"
                )
            if qtype.name in _ELEMENT:  # plain element types: a typed view
                data = np.frombuffer(self._map, _ELEMENT[qtype.name], n, begin).reshape(np_shape)
            else:  # quantised (and BF16): rows of raw bytes, as gguf.quants.dequantize takes them
                row = np_shape[:-1] + (np_shape[-1] // block * type_size,)
                data = np.frombuffer(self._map, np.uint8, n_bytes, begin).reshape(row)
            self.tensors.append(GGUFTensor(name, dims, qtype, data, begin))

    def release(self, tensor: GGUFTensor) -> None:
        """Drop ``tensor``'s pages from this process's resident memory. They stay in the
        OS page cache and a later read of ``tensor.data`` maps them again; loading calls
        this after converting each tensor, so the mapped file does not add its whole
        size to the peak memory of a load."""
        if _DONTNEED is None:
            return
        page = mmap.PAGESIZE
        begin = tensor.offset // page * page
        self._map.madvise(_DONTNEED, begin, tensor.offset + tensor.data.nbytes - begin)


# Absent on Windows, where mapped pages then simply stay until the file is closed.
_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)

_ELEMENT: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "F64": np.dtype("<f8"),
    "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
}
