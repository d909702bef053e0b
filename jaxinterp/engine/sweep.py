"""`sweep`: evaluate a function over many locations in one compiled, memory-bounded program.

A sweep is ``jax.vmap`` over intervention data, evaluated in chunks of ``batch_size``
locations under ``jax.lax.map`` so that only one chunk's activations are alive at a
time. The whole sweep is one ``jit``: no host round trip per location (an optional
progress bar is fed by a host callback once per chunk). Given a ``mesh``, each chunk's
locations are split across the devices of its sweep axis, and weights already sharded
over the mesh's other axes (`jaxinterp.model.sharding`) stay sharded: the same program,
data-parallel over the sweep axis and tensor-parallel over the model axis.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxinterp.core.errors import ShardingError
from jaxinterp.model.sharding import auto_axes, put

from .checkpoint import as_checkpoint, run_checkpointed

__all__ = ["sweep", "map_chunks", "chunk_locations", "run_chunks", "place_on_mesh"]


def sweep(
    fn: Callable,
    locations: Any,
    *operands: Any,
    batch_size: Optional[int] = None,
    progress: bool = False,
    mesh: Optional[jax.sharding.Mesh] = None,
    axis: Optional[str] = None,
    checkpoint=None,
):
    """``fn(location, *operands)`` for every location, stacked: ``[n_locations, ...]``.

    ``locations``: a pytree of arrays sharing a leading axis of size ``n_locations``
    (e.g. ``{"layer": [n], "pos": [n]}``); ``fn`` sees one slice of it and must be
    `vmap`-able. ``operands`` (the model, cached activations, ...) are passed to every
    call unbatched; they are arguments of the compiled program, not constants baked
    into it, so large weights neither slow compilation nor get copied.

    ``batch_size``: locations evaluated at once (``None``: all at once). Peak memory
    is that of one chunk of ``batch_size`` locations, whatever ``n_locations`` is.
    ``progress``: show a tqdm bar advancing once per chunk.

    ``mesh``: a `jax.sharding.Mesh`; each chunk's locations are sharded along its
    ``axis`` (default: the mesh's first axis, ``"data"`` in a
    `jaxinterp.model.sharding.make_mesh` mesh). Operands already sharded over the mesh
    (a model from `shard_model` or ``load(..., mesh=)``: weights split over ``"model"``)
    keep their sharding, the others are replicated: patches data-parallel and weights
    tensor-parallel in one program. ``batch_size`` is rounded up to a multiple of that
    axis's size. The mesh may span several processes (`jax.distributed`): then every
    process calls `sweep` with the same arguments and holds its shard of the result.

    ``checkpoint``: a directory or a `jaxinterp.engine.checkpoint.SweepCheckpoint`:
    finished chunks are saved there and a later call with the same inputs loads them
    instead of computing them again (each chunk is then its own call of one compiled
    program; the result is a numpy pytree). Keyed on ``fn``, ``locations``,
    ``operands`` and the chunking, unless the checkpoint already carries named inputs
    (`SweepCheckpoint.with_inputs`, as the patching engines give).

    The result is a pytree of arrays with leading axis ``n_locations``.
    """
    if mesh is not None:
        mesh = auto_axes(mesh)
        axis = mesh.axis_names[0] if axis is None else axis
        if axis not in mesh.axis_names:
            raise ShardingError(f"axis {axis!r} is not an axis of the mesh; its axes are {mesh.axis_names}")
    chunks, n = chunk_locations(locations, batch_size, multiple_of=1 if mesh is None else mesh.shape[axis])
    checkpoint = as_checkpoint(checkpoint)
    if mesh is not None:
        # Location j * n_chunks + c goes to row j of chunk c, so that each device's rows of
        # every chunk are one contiguous run of locations: the result leaves the program
        # sharded over `axis` in location order, with no communication.
        chunks = jax.tree_util.tree_map(lambda a: _interleave(a, n_chunks=a.shape[0]), chunks)
    if checkpoint is None:
        if mesh is None:
            out = run_chunks(fn, chunks, operands, progress)
            return jax.tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[2:])[:n], out)
        chunks, operands = place_on_mesh(chunks, operands, mesh, axis)
        out = run_chunks(fn, chunks, operands, progress)
        # Sharded over `axis` when it divides n_locations (JAX shards evenly), else replicated.
        spec = PartitionSpec(axis) if n % mesh.shape[axis] == 0 else PartitionSpec()
        return _unchunk(out, n, NamedSharding(mesh, spec))
    if not checkpoint.inputs:
        named = {f"operand {i}": op for i, op in enumerate(operands)}
        checkpoint = checkpoint.with_inputs(("function",), function=fn, locations=locations, **named)
    n_chunks = jax.tree_util.tree_leaves(chunks)[0].shape[0]
    chunking = jax.tree_util.tree_map(lambda a: (tuple(a.shape), str(a.dtype)), chunks)
    store = checkpoint.open(n_chunks, (chunking, None if mesh is None else (axis, mesh.shape[axis])))
    place = _identity
    if mesh is not None:
        _, operands = place_on_mesh(None, operands, mesh, axis)
        split = NamedSharding(mesh, PartitionSpec(None, axis))

        def place(c):
            return jax.tree_util.tree_map(lambda a: put(a, split), c)

    out = run_checkpointed(lambda c: run_chunks(fn, place(c), operands, False), chunks, store, 1, progress)
    if mesh is not None:  # undo the interleaving (numpy: a checkpointed result is on the host)
        return jax.tree_util.tree_map(lambda a: np.asarray(a).swapaxes(0, 1).reshape((-1,) + a.shape[2:])[:n], out)
    return jax.tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[2:])[:n], out)


def _interleave(leaf, n_chunks: int):
    """``[n_chunks, k, ...]`` locations in order -> chunk ``c``, row ``j`` holds location
    ``j * n_chunks + c``."""
    flat = leaf.reshape((-1,) + leaf.shape[2:])
    return flat.reshape((-1, n_chunks) + leaf.shape[2:]).swapaxes(0, 1)


def _unchunk(out, n: int, sharding: NamedSharding):
    """The inverse of `_interleave` on a sweep's ``[n_chunks, k, ...]`` results, less the
    padding: ``[n, ...]`` with ``sharding`` (its leading axis)."""

    def one(a):
        def f(a):
            return a.swapaxes(0, 1).reshape((-1,) + a.shape[2:])[:n]

        spec = PartitionSpec(*sharding.spec, *([None] * (a.ndim - 2)))
        return jax.jit(f, out_shardings=NamedSharding(sharding.mesh, spec))(a)

    return jax.tree_util.tree_map(one, out)


def place_on_mesh(chunks: Any, operands: tuple, mesh: jax.sharding.Mesh, axis: str) -> tuple[Any, tuple]:
    """``chunks`` (``[n_chunks, batch_size, ...]``) split along ``axis`` of ``mesh``
    (each device gets its share of every chunk's locations), and ``operands`` on the
    mesh: an array already sharded over this mesh's devices (weights placed by
    `jaxinterp.model.sharding.shard_model` or ``load(..., mesh=)``) keeps its sharding,
    every other array is replicated. Works on a mesh spanning several processes."""
    mesh = auto_axes(mesh)
    devices = set(mesh.devices.flat)
    split = NamedSharding(mesh, PartitionSpec(None, axis))
    replicated = NamedSharding(mesh, PartitionSpec())
    chunks = jax.tree_util.tree_map(lambda a: put(a, split), chunks)

    def operand(a):
        if isinstance(a, jax.Array) and a.sharding.device_set == devices:
            return a  # already on this mesh: weights stay sharded (not gathered)
        if isinstance(a, (jax.Array, np.ndarray)):
            return put(a, replicated)
        return a

    return chunks, jax.tree_util.tree_map(operand, operands)


def _identity(x):
    return x


def chunk_locations(locations: Any, batch_size: Optional[int], multiple_of: int = 1):
    """``locations`` reshaped to ``[n_chunks, batch_size, ...]`` (the last chunk padded
    by repeating the last location, so every chunk has one static shape and the
    program compiles once), and the number of real locations. The chunk size is rounded
    up to a multiple of ``multiple_of`` (the devices a chunk is sharded over)."""
    leaves = jax.tree_util.tree_leaves(locations)
    if not leaves:
        raise ValueError("sweep needs at least one location array (a pytree of arrays with a leading axis)")
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"every location array needs the same leading (location) axis; got leading sizes {sorted(map(str, sizes))}"
        )
    (n,) = sizes
    if n == 0:
        raise ValueError("sweep over zero locations")
    k = n if batch_size is None else int(batch_size)
    if k < 1:
        raise ValueError(f"batch_size must be a positive number of locations, got {batch_size}")
    k = -(-min(k, n) // multiple_of) * multiple_of
    n_chunks = math.ceil(n / k)
    pad = n_chunks * k - n

    def chunked(leaf):
        xp = jnp if isinstance(leaf, jax.Array) else np  # traced locations stay traced
        leaf = xp.asarray(leaf)
        if pad:
            leaf = xp.concatenate([leaf, xp.repeat(leaf[-1:], pad, axis=0)])
        return leaf.reshape((n_chunks, k) + leaf.shape[1:])

    return jax.tree_util.tree_map(chunked, locations), n


@eqx.filter_jit
def run_chunks(fn, chunks, operands, progress):
    """The compiled sweep over ``[n_chunks, batch_size, ...]`` locations."""

    def chunk(locs):
        return jax.vmap(lambda loc: fn(loc, *operands))(locs)

    return map_chunks(chunk, chunks, progress=progress)


def map_chunks(chunk_fn: Callable, chunks: Any, progress: bool = False):
    """``jax.lax.map(chunk_fn, chunks)`` (one chunk at a time), traced inside a jit.

    With a single chunk the loop is skipped. ``progress`` advances a tqdm bar from a
    host callback after each chunk (ordered, so the bar counts in order).
    """
    n_chunks = jax.tree_util.tree_leaves(chunks)[0].shape[0]
    if n_chunks == 1:
        return jax.tree_util.tree_map(lambda a: a[None], chunk_fn(jax.tree_util.tree_map(lambda a: a[0], chunks)))
    bar = _ProgressBar(n_chunks) if progress else None

    def body(xs):
        index, locs = xs
        out = chunk_fn(locs)
        if bar is not None:
            # Depend on the output so the tick fires after the chunk's work.
            first = jax.tree_util.tree_leaves(out)[0]
            jax.debug.callback(bar.tick, index, first.reshape(-1)[0], ordered=True)
        return out

    return jax.lax.map(body, (jnp.arange(n_chunks), chunks))


class _ProgressBar:
    """A tqdm bar created lazily on the first tick (so tracing alone shows nothing)."""

    def __init__(self, total: int):
        self.total = total
        self.bar = None

    def tick(self, index, _):
        from tqdm.auto import tqdm

        if self.bar is None or int(index) == 0:
            self.bar = tqdm(total=self.total, desc="patching sweep", unit="chunk")
        self.bar.update(1)
        if int(index) + 1 == self.total:
            self.bar.close()
