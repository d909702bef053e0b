"""Checkpointed sweeps: finished chunks saved to a directory, resumed after a crash.

A long sweep runs in chunks (`jaxinterp.engine.sweep`). Given a `SweepCheckpoint`, each
finished chunk's results are written to ``<directory>/chunk-000003.npz`` and a run that
finds them (after SIGKILL, a pre-empted TPU VM, a closed laptop) loads them instead of
computing them again. ``<directory>/manifest.json`` holds a fingerprint of every input
that decides the results (the model's weights and config, the prompts, the metric's
code and arrays, the site and axes, the engine's settings, the chunking); resuming
with any of them different raises `ResumeError` naming what differs, so a directory
never mixes chunks of two experiments.

Writes are atomic: a file is written under a temporary name in the same directory,
flushed and fsync'ed, then renamed over its final name (`os.replace`), and the
directory fsync'ed. A kill at any moment leaves either the complete file or none.

Fingerprints: arrays by dtype, shape and bytes; Equinox modules and dataclasses by type
and fields; plain functions by their code (bytecode, constants, names) and the values
they close over or read from their module's globals. A value that cannot be
fingerprinted (an arbitrary object a metric closes over) refuses to checkpoint with
`ResumeError` rather than risk a wrong resume; ``SweepCheckpoint(directory,
key="my-metric-v2")`` then names the metric instead of fingerprinting it.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import inspect
import io
import json
import logging
import os
import time
import types
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import jax
import numpy as np

from ..core.errors import ResumeError

__all__ = ["SweepCheckpoint", "ChunkStore", "fingerprint", "run_checkpointed", "LOG"]

LOG = logging.getLogger("jaxinterp.checkpoint")
MANIFEST = "manifest.json"
FORMAT = 1


class SweepCheckpoint:
    """Where a sweep saves its finished chunks, and what it is keyed on.

    ``directory``: created if missing; empty, or holding a checkpoint of the same sweep.
    ``key``: a string naming the metric (or the swept function) instead of
    fingerprinting it: for metrics that close over objects jaxinterp cannot hash. Change
    it whenever the metric changes; a wrong key resumes with stale chunks.

    Techniques add their named inputs with `with_inputs` (the engines: model, prompts,
    metric, site, axes, engine settings); `open` then checks them against the directory.
    """

    def __init__(self, directory: str | os.PathLike, key: Optional[str] = None, _inputs: Optional[dict] = None):
        if not isinstance(directory, (str, os.PathLike)):
            raise ResumeError(
                f"checkpoint directory must be a path (str or os.PathLike), got {type(directory).__name__}"
            )
        if key is not None and not isinstance(key, str):
            raise ResumeError(f"checkpoint key must be a string naming the metric, got {type(key).__name__}")
        self.directory = Path(directory)
        self.key = key
        self.inputs: dict[str, str] = dict(_inputs or {})

    def __repr__(self):
        return f"SweepCheckpoint({str(self.directory)!r}, key={self.key!r}, inputs={sorted(self.inputs)})"

    def with_inputs(self, metric_names: tuple = ("metric",), **named: Any) -> SweepCheckpoint:
        """A copy with each named input's fingerprint added (``metric_names``: the inputs
        that ``key``, when given, stands for)."""
        digests = dict(self.inputs)
        for name, value in named.items():
            if self.key is not None and name in metric_names:
                digests[name] = "key:" + self.key
            else:
                digests[name] = fingerprint(value, name)
        return SweepCheckpoint(self.directory, self.key, digests)

    def open(self, n_chunks: int, chunking: Any) -> ChunkStore:
        """The store for a sweep of ``n_chunks`` chunks (``chunking``: anything else that
        fixes what a chunk holds, e.g. its shapes), after checking the directory."""
        inputs = dict(self.inputs, chunking=fingerprint((int(n_chunks), chunking), "chunking"))
        return ChunkStore(self.directory, inputs, int(n_chunks))


def as_checkpoint(checkpoint) -> Optional[SweepCheckpoint]:
    """``checkpoint`` (a path or a `SweepCheckpoint`, or None) as a `SweepCheckpoint`."""
    if checkpoint is None or isinstance(checkpoint, SweepCheckpoint):
        return checkpoint
    if isinstance(checkpoint, (str, os.PathLike)):
        return SweepCheckpoint(checkpoint)
    raise ResumeError(
        f"checkpoint must be a directory path or a SweepCheckpoint(directory, key=...), got {type(checkpoint).__name__}"
    )


class ChunkStore:
    """One sweep's checkpoint directory: the manifest checked or written, chunks saved
    and loaded. Made by `SweepCheckpoint.open`."""

    def __init__(self, directory: Path, inputs: dict[str, str], n_chunks: int):
        self.directory, self.inputs, self.n_chunks = directory, inputs, n_chunks
        self.digest = fingerprint(sorted(inputs.items()), "manifest")
        directory.mkdir(parents=True, exist_ok=True)
        manifest = directory / MANIFEST
        if manifest.exists():
            self._check(manifest)
        else:
            others = [p.name for p in directory.iterdir() if ".tmp-" not in p.name]
            if others:
                raise ResumeError(
                    f"checkpoint directory {str(directory)!r} is not empty and has no {MANIFEST} "
                    f"(it holds {sorted(others)[:3]}): give an empty or new directory"
                )
            record = {"format": FORMAT, "digest": self.digest, "n_chunks": n_chunks, "inputs": inputs}
            _atomic_write(manifest, json.dumps(record, indent=1, sort_keys=True).encode())
        for stale in directory.glob("*.tmp-*"):  # left by a kill mid-write
            stale.unlink(missing_ok=True)

    def _check(self, manifest: Path) -> None:
        try:
            record = json.loads(manifest.read_text())
            theirs = dict(record["inputs"])
        except (ValueError, KeyError, TypeError) as error:
            raise ResumeError(f"{manifest} is not a sweep checkpoint manifest ({error})") from None
        if record.get("format") != FORMAT:
            raise ResumeError(
                f"{manifest} has checkpoint format {record.get('format')!r}; this jaxinterp writes {FORMAT}"
            )
        differ = sorted(k for k in set(theirs) | set(self.inputs) if theirs.get(k) != self.inputs.get(k))
        if differ:
            raise ResumeError(
                f"checkpoint directory {str(self.directory)!r} holds a different sweep: its {', '.join(differ)} "
                f"differ{'s' if len(differ) == 1 else ''} from this one's. Resume with the same inputs, "
                "or give a new directory"
            )

    def path(self, index: int) -> Path:
        """The file of chunk ``index``."""
        return self.directory / f"chunk-{index:06d}.npz"

    def done(self) -> list[int]:
        """Indices of the chunks already saved."""
        return [i for i in range(self.n_chunks) if self.path(i).exists()]

    def save(self, index: int, leaves: list[np.ndarray]) -> None:
        """Write chunk ``index``'s result leaves (atomically) with this sweep's digest."""
        arrays = {f"leaf_{j}": np.asarray(leaf) for j, leaf in enumerate(leaves)}
        arrays["digest"] = np.asarray(self.digest)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        _atomic_write(self.path(index), buffer.getvalue())

    def load(self, index: int, expected: list) -> Optional[list[np.ndarray]]:
        """Chunk ``index``'s leaves, or None when its file is unreadable or does not fit
        ``expected`` (shape/dtype structs): it is then computed again."""
        try:
            with np.load(self.path(index)) as data:
                if str(data["digest"]) != self.digest:
                    raise ValueError("written by another sweep")
                leaves = [data[f"leaf_{j}"] for j in range(len(expected))]
        except Exception as error:  # a damaged file costs one chunk, never a wrong result
            LOG.warning("chunk %d: %s is unreadable (%s); computing it again", index, self.path(index), error)
            return None
        if [(a.shape, a.dtype) for a in leaves] != [(tuple(e.shape), np.dtype(e.dtype)) for e in expected]:
            LOG.warning("chunk %d: %s does not have this sweep's shapes; computing it again", index, self.path(index))
            return None
        return leaves


def run_checkpointed(
    compute: Callable[[Any], Any],
    chunks: Any,
    store: Optional[ChunkStore],
    step: int = 1,
    progress: bool = False,
    desc: str = "sweep",
    shape_of: Optional[Callable[[Any], Any]] = None,
) -> Any:
    """``compute`` over ``chunks`` (a pytree with leading axis ``store.n_chunks``), ``step``
    chunks per call, skipping the steps whose results ``store`` holds and saving each
    computed one as it finishes. ``compute(chunk_slice)`` returns a pytree of arrays
    with leading axis ``step``. Returns the results stacked, ``[n_chunks, ...]``.
    ``store`` None: no checkpoint, every chunk computed (with the same log and bar), the
    chunks counted from ``chunks``' leading axis.
    ``shape_of``: a function with ``compute``'s output structure that `jax.eval_shape`
    can trace (default ``compute``; a program jitted with compiler options cannot be).

    Logs (logger ``jaxinterp.checkpoint``, level INFO) one line per chunk, loaded or
    computed. ``progress``: a tqdm bar over the chunks still to compute, with its ETA."""
    n = store.n_chunks if store is not None else int(jax.tree_util.tree_leaves(chunks)[0].shape[0])
    if n % step:
        raise ResumeError(f"{n} chunks cannot be run {step} at a time")

    def piece(i):
        return jax.tree_util.tree_map(lambda a: a[i : i + step], chunks)

    shapes = jax.eval_shape(shape_of or compute, piece(0))
    expected, treedef = jax.tree_util.tree_flatten(shapes)
    done = set(store.done()) if store is not None else set()
    results: list[Optional[list]] = [None] * (n // step)
    for s in range(n // step):
        if store is not None and all(i in done for i in range(s * step, (s + 1) * step)):
            loaded = [store.load(i, [_one(e) for e in expected]) for i in range(s * step, (s + 1) * step)]
            if all(part is not None for part in loaded):
                results[s] = [np.concatenate(parts) for parts in zip(*loaded)]  # type: ignore[arg-type]
                LOG.info("chunk %s of %d loaded from %s (not recomputed)", _span(s, step), n, store.directory)
    todo = [s for s in range(n // step) if results[s] is None]
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, initial=n - len(todo) * step, desc=desc, unit="chunk")
    try:
        for s in todo:
            t0 = time.perf_counter()
            leaves = [np.asarray(a) for a in jax.tree_util.tree_leaves(compute(piece(s * step)))]
            if store is not None:
                for k in range(step):
                    store.save(s * step + k, [leaf[k : k + 1] for leaf in leaves])
            results[s] = leaves
            LOG.info(
                "chunk %s of %d computed in %.2f s%s",
                _span(s, step),
                n,
                time.perf_counter() - t0,
                "" if store is None else " and saved",
            )
            if bar is not None:
                bar.update(step)
    finally:
        if bar is not None:
            bar.close()
    stacked = [np.concatenate([r[j] for r in results]) for j in range(len(expected))]  # type: ignore[index]
    return jax.tree_util.tree_unflatten(treedef, stacked)


def _one(struct):
    """The shape/dtype of one chunk of a ``[step, ...]`` result."""
    return jax.ShapeDtypeStruct((1,) + tuple(struct.shape[1:]), struct.dtype)


def _span(s: int, step: int) -> str:
    return str(s) if step == 1 else f"{s * step}-{(s + 1) * step - 1}"


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a kill leaves the old file or the new one, never
    a part: temporary file in the same directory, fsync, rename, fsync the directory."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------- fingerprints


def fingerprint(value: Any, what: str = "value") -> str:
    """A hex digest of ``value`` that is equal across processes for equal inputs: arrays
    (dtype, shape, bytes), numbers, strings, containers, Equinox modules and dataclasses
    (type and fields), plain functions (code, defaults, closure and the globals they
    read). Raises `ResumeError` naming the part of ``what`` it cannot fingerprint."""
    h = hashlib.blake2b(digest_size=16)
    _feed(h, value, what, set())
    return h.hexdigest()


def _feed(h, value: Any, path: str, seen: set) -> None:
    def tag(text: str) -> None:
        h.update(text.encode() + b"\0")

    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        tag(f"{type(value).__name__}:{value!r}")
    elif isinstance(value, (np.ndarray, np.generic, jax.Array)):
        arr = np.asarray(value)
        tag(f"array:{arr.dtype.str}:{arr.shape}")
        h.update(np.ascontiguousarray(arr).tobytes())
    elif isinstance(value, (np.dtype, enum.Enum)):
        tag(f"{type(value).__name__}:{value!r}")
    elif isinstance(value, (tuple, list)):
        tag(f"{type(value).__name__}:{len(value)}")
        for i, v in enumerate(value):
            _feed(h, v, f"{path}[{i}]", seen)
    elif isinstance(value, Mapping):
        tag(f"mapping:{len(value)}")
        for k in sorted(value, key=repr):
            tag(repr(k))
            _feed(h, value[k], f"{path}[{k!r}]", seen)
    elif isinstance(value, (set, frozenset)):
        tag(f"set:{len(value)}")
        for digest in sorted(fingerprint(v, path) for v in value):
            tag(digest)
    elif isinstance(value, jax.sharding.Mesh):
        tag(f"mesh:{value.axis_names}:{tuple(value.devices.shape)}")
    elif isinstance(value, type):
        tag(f"class:{value.__module__}.{value.__qualname__}")
    elif isinstance(value, types.ModuleType):
        tag(f"module:{value.__name__}")
    elif isinstance(value, types.CodeType):
        _feed_code(h, value, path, seen)
    elif isinstance(value, functools.partial):
        tag("partial")
        _feed(h, (value.func, value.args, value.keywords), path, seen)
    elif isinstance(value, types.MethodType):
        tag("method")
        _feed(h, (value.__func__, value.__self__), path, seen)
    elif isinstance(value, types.FunctionType) and _library_code(value):
        tag(f"function:{_qualified(value)}")  # library code: by name (its version is the installed one)
    elif isinstance(value, types.FunctionType):
        _feed_function(h, value, path, seen)
    elif isinstance(value, types.BuiltinFunctionType):
        tag(f"builtin:{value.__module__}.{value.__qualname__}")
    elif dataclasses.is_dataclass(value):  # Equinox modules are dataclasses
        if id(value) in seen:
            tag("cycle")
            return
        seen.add(id(value))
        tag(f"object:{type(value).__module__}.{type(value).__qualname__}")
        for f in dataclasses.fields(value):
            tag(f.name)
            _feed(h, getattr(value, f.name), f"{path}.{f.name}", seen)
    elif callable(value) and inspect.unwrap(value) is not value:  # jax.jit(fn), functools.wraps
        _feed(h, inspect.unwrap(value), path, seen)
    else:
        raise ResumeError(
            f"cannot fingerprint {path} (a {type(value).__module__}.{type(value).__qualname__}) for a sweep "
            "checkpoint: make it an array, number, string, Equinox module or plain function, or name the metric "
            "yourself with SweepCheckpoint(directory, key='...')"
        )


def _feed_code(h, code: types.CodeType, path: str, seen: set) -> None:
    h.update(b"code\0" + code.co_code)
    _feed(h, (code.co_qualname, code.co_names, code.co_varnames, code.co_freevars), path, seen)
    for const in code.co_consts:
        _feed(h, const, f"{path} (a constant)", seen)


def _feed_function(h, fn: types.FunctionType, path: str, seen: set) -> None:
    if id(fn) in seen:
        h.update(b"cycle\0")
        return
    seen.add(id(fn))
    h.update(f"function:{fn.__module__}.{fn.__qualname__}\0".encode())
    _feed_code(h, fn.__code__, path, seen)
    _feed(h, (fn.__defaults__, fn.__kwdefaults__), f"{path} (its defaults)", seen)
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        try:
            contents = cell.cell_contents
        except ValueError:  # an empty cell (a name assigned later)
            contents = None
        _feed(h, contents, f"{path} (the variable {name!r} it closes over)", seen)
    # Globals it reads: their values (library code by name).
    for name in fn.__code__.co_names:
        if name not in fn.__globals__:
            continue
        value = fn.__globals__[name]
        if _library_code(value):
            h.update(f"global:{name}:{_qualified(value)}\0".encode())
        else:
            h.update(f"global:{name}\0".encode())
            _feed(h, value, f"{path} (the global {name!r} it reads)", seen)


# Code from these packages is identified by its qualified name, not read (its version
# is the installed one); every other function is fingerprinted by its code.
LIBRARIES = frozenset(
    {"jax", "jaxlib", "numpy", "equinox", "optax", "jaxinterp", "math", "operator", "functools", "builtins"}
)


def _library_code(value: Any) -> bool:
    """A module, or a function or class of one of the `LIBRARIES`."""
    if isinstance(value, types.ModuleType):
        return True
    if callable(value):
        owner = getattr(inspect.unwrap(value), "__module__", None) or "builtins"
        return owner.split(".")[0] in LIBRARIES
    return False


def _qualified(value: Any) -> str:
    if isinstance(value, types.ModuleType):
        return value.__name__
    target = inspect.unwrap(value)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', type(target).__qualname__)}"
