"""The fast sweep: prefix reuse over layers, suffix reuse over positions, packed blocks.

A patch at layer ``l`` and position ``p`` of a causal model cannot change anything
below layer ``l`` or before position ``p``. The fast engine computes only the rest.
Patches are laid out as *blocks* (`jaxinterp.causal.patching.layout`): each block packs the
recomputed positions of several patches that start at the same layer into one
``[tokens, d_model]`` matrix of a fixed size. One pass over the base and source
prompts caches what the blocks read (`cached_runs`); the program then scans over
layers; at layer ``k`` it runs the blocks that have started (a prefix of them, sorted
by layer) in groups of consecutive blocks (`group_sizes`), with the model's own layer
on their packed tokens. Keys and values before a patch's position come from the base
run's cache (`PackedAttention`). Every block has the same shape at every layer, so XLA
compiles one layer per group size, whatever the number of layers and patches: compile
time stays near that of a forward pass. Given a mesh, the chunks of blocks are dealt
to its devices.

Exact: the numbers equal a loop of single-patch forward passes up to float rounding.
Opt-in (``last_layer_subset``): the last layer runs its queries, output projection and
MLP only at the positions the metric reads (keys and values still at every position).

A batch of prompt pairs (a `PairMetric`, one metric per pair): the cached runs hold every
pair's base and source run, each (patch, pair) is one row of the layout that knows its
pair, and rows of all pairs share the blocks, so the whole dataset is one program.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ...core.errors import InterventionError
from ...core.pair_metrics import PairMetric
from ...core.readout import Readout, evaluate_metric, logit_columns, split_metric
from ...core.sites import AXES, dim_sizes, layer_site_dims
from ...engine.checkpoint import run_checkpointed
from ...engine.quick_compile import QuickCompiled
from ...engine.sweep import map_chunks
from ...model.rotary import rotary_tables
from .layout import MAX_BLOCK_TOKENS, BlockLayout, BlockShape, build_blocks
from .locations import PatchGrid
from .packed import KV_PATH_SITES, AttentionWeights, PackedAttention, PackedPatches, keys_values, take


def fast_supported(cfg) -> bool:
    """Whether suffix reuse holds: causal attention (every other op is per position).
    Split per-head attention inputs (``split_qkv_input``) are not packed: plain engine."""
    return bool(cfg.causal) and not cfg.split_qkv_input


def fast_sweep(
    model,
    runs: CachedRuns,
    grid: PatchGrid,
    metric: Callable,
    readout: Readout,
    n_chunks: int = 1,
    last_layer_subset: bool = False,
    progress: bool = False,
    keep: Optional[np.ndarray] = None,
    quick_compile: Optional[bool] = None,
    max_block_tokens: int = MAX_BLOCK_TOKENS,
    mesh: Optional[jax.sharding.Mesh] = None,
    checks: bool = True,
    checkpoint=None,
) -> np.ndarray:
    """Metric for each patch of ``grid`` (``[n_patches]``, NaN where ``keep`` is False),
    computed by the block engine in ``n_chunks`` chunks from the base and source runs'
    `cached_runs`. ``mesh``: split the chunks over the devices of its first axis (the
    weights and caches replicated). ``checks``: range-check the patches' locations
    (`check_rows`, on the host before the program runs); False skips that.
    ``checkpoint``: a keyed `SweepCheckpoint`: each chunk (each group of one chunk per
    device, given a mesh) runs as its own call of one compiled program and is saved as
    it finishes; chunks a previous run saved are loaded instead. With a `PairMetric`
    (``runs`` of a batch of pairs): ``[n_patches, n_pair]``, each pair's patched metric;
    ``keep`` may then be ``[n_patches, n_pair]``."""
    n_devices = 1 if mesh is None else mesh.shape[mesh.axis_names[0]]
    pairs = isinstance(metric, PairMetric)
    n_pairs, n_pos = runs.n_pairs, runs.n_pos
    layout = fast_layout(model.cfg, n_pos, grid, keep, n_chunks, max_block_tokens, n_devices, n_pairs)
    if checks:  # on the host, before compiling: the layout is numpy
        check_rows(layout.data, model.cfg, grid.site, n_pos)
    last_layer_subset = last_layer_subset and not model.cfg.post_norm
    if pairs:  # each read row takes its pair's arrays: they stay traced, indexed by pair
        metric_arrays, metric_static = eqx.partition(metric, eqx.is_array)
    else:
        metric_arrays, metric_static = split_metric(metric, readout)
    static = dict(
        shape=layout.shape,
        site=grid.site,
        metric=metric_static,
        readout=readout,
        last_layer_subset=last_layer_subset,
        progress=progress and mesh is None,
        mesh=mesh,
    )
    flops = fast_flops(model.cfg, layout, readout, last_layer_subset)
    if checkpoint is None:
        values = np.asarray(_run((model, runs, layout.data, metric_arrays), static, flops, quick_compile))
    else:
        store = checkpoint.open(layout.n_chunks, (layout.shape, layout.data, n_devices))
        static["progress"] = False  # the host loop shows the bar

        def compute(data):
            return _run((model, runs, data, metric_arrays), static, flops, quick_compile)

        def shape_of(data):
            return fast_program(model, runs, data, metric_arrays, **static)

        values = run_checkpointed(compute, layout.data, store, n_devices, progress, "patching sweep", shape_of)
    n_rows = grid.n_patches * n_pairs
    ids = np.arange(n_rows) if keep is None else np.flatnonzero(np.broadcast_to(keep.T, (n_pairs, grid.n_patches)).T)
    out = np.full(n_rows, np.nan, values.dtype)
    read = layout.patch_of_read >= 0
    out[ids[layout.patch_of_read[read]]] = values[read]
    return out.reshape(grid.n_patches, n_pairs) if pairs else out


def fast_layout(
    cfg,
    n_pos: int,
    grid: PatchGrid,
    keep: Optional[np.ndarray] = None,
    n_chunks: int = 1,
    max_block_tokens: int = MAX_BLOCK_TOKENS,
    multiple_of: int = 1,
    n_pairs: int = 1,
) -> BlockLayout:
    """The block layout of ``grid``'s patches (those in ``keep``, if given) in about
    ``n_chunks`` chunks (a multiple of ``multiple_of``). With ``n_pairs`` prompt pairs
    every (patch, pair) is a row, numbered ``patch * n_pairs + pair`` in
    ``patch_of_read``; ``keep`` is then ``[n_patches]`` or ``[n_patches, n_pairs]``."""
    n_rows = grid.n_patches * n_pairs
    if keep is None:
        ids = np.arange(n_rows)
    else:
        ids = np.flatnonzero(np.broadcast_to(np.asarray(keep).T, (n_pairs, grid.n_patches)).T)
    patch, pair = ids // n_pairs, ids % n_pairs
    fields = {f: v[patch] for f, v in grid.engine_fields().items()}
    start = grid.start_pos[patch]
    # A chunk holds at least one block: blocks no bigger than a chunk's share of the
    # tokens keep memory proportional to the chunk size.
    share = -(-int((n_pos - start).sum()) // max(1, n_chunks))
    max_tokens = min(max_block_tokens, max(n_pos, share))
    return build_blocks(
        n_pos,
        cfg.n_layers,
        grid.layer[patch],
        start,
        fields,
        n_chunks,
        max_tokens,
        multiple_of,
        pair=pair,
        n_pairs=n_pairs,
    )


def check_rows(data: dict, cfg, site: str, n_pos: int) -> dict:
    """The layout ``data`` after checking that every row's location indices lie in their
    axes (``-1``: the whole axis): the fast engine's one location check, for layouts
    built from hand-made grids (`patch_grid` builds only valid ones).

    A layout of concrete (numpy) arrays -- what `fast_layout` builds on the host, so
    every sweep -- is checked before anything is compiled, at no cost to the program,
    and raises `InterventionError` naming the first bad row. A traced layout is checked
    inside the program with `eqx.error_if`."""
    sizes, dims = dim_sizes(cfg, n_pos), layer_site_dims(cfg)[site]
    limits = {"layer": cfg.n_layers}
    for field, axes in AXES.items():
        dim = next((d for d in dims if d in axes), None)
        if field != "layer" and dim is not None:
            limits[field] = sizes[dim]
    bad = {f: (data[f"row_{f}"] < -1) | (data[f"row_{f}"] >= n) for f, n in limits.items()}
    if all(isinstance(data[f"row_{f}"], np.ndarray) for f in limits):
        for field, mask in bad.items():
            if mask.any():
                row = np.argwhere(mask)[0]
                value = int(data[f"row_{field}"][tuple(row)])
                raise InterventionError(
                    f"a patch location is out of range for {site!r}: {field}={value}, allowed 0..{limits[field] - 1} "
                    f"(or -1 for the whole axis; n_layers={cfg.n_layers}, {n_pos} positions)"
                )
        return data
    any_bad = functools.reduce(lambda a, b: a | b, bad.values())
    return eqx.error_if(
        data, any_bad, f"a patch location is out of range for {site!r} (n_layers={cfg.n_layers}, {n_pos} positions)"
    )


def _program(
    model,
    runs,
    data,
    metric_arrays,
    *,
    shape,
    site,
    metric,
    readout,
    last_layer_subset,
    progress,
    mesh=None,
):
    """The sweep: ``[n_chunks, reads]`` metric values. The metric comes in two parts: its
    arrays (token ids, references: arguments, so other values reuse the program) and
    the rest (static). Given a ``mesh``, each device runs its share of the chunks
    (sharded along the mesh's first axis)."""

    def chunks(model, runs, data, metric_arrays):
        full_metric = eqx.combine(metric_arrays, metric)

        def chunk(d):
            return block_sweep(model, runs, d, shape, site, full_metric, readout, last_layer_subset)

        return map_chunks(chunk, data, progress=progress)

    if mesh is None:
        return chunks(model, runs, data, metric_arrays)
    from jax.sharding import PartitionSpec

    split, whole = PartitionSpec(mesh.axis_names[0]), PartitionSpec()
    return jax.shard_map(chunks, mesh=mesh, in_specs=(whole, whole, split, whole), out_specs=split, check_vma=False)(
        model, runs, data, metric_arrays
    )


_STATIC = ("shape", "site", "metric", "readout", "last_layer_subset", "progress", "mesh")

_programs = QuickCompiled(_program, _STATIC)
fast_program = _programs.program
_quick_programs = _programs.quick


def _run(args, static, flops: float, quick_compile: Optional[bool]):
    """Run the sweep, compiled for speed of compiling when asked to or, by default,
    when the sweep is small (on CPU)."""
    return _programs(flops, quick_compile, *args, **static)


class CachedRuns(eqx.Module):
    """What a fast sweep reads from one batched pass over the base and source prompts of
    every pair (one pair: ``n_pairs = 1``). Base-run rows are numbered pair by pair,
    ``pair * n_pos + pos``:

    ``resid [layer, pair*pos, d_model]``: the base runs' residual entering every layer;
    ``k`` / ``v [layer, pair*pos, kv_head, d_head]``: their keys (rotated, if rotary) and
    values; ``final [pair*pos, d_model]``: their final residual; ``site [2, layer, pair,
    ...]``: both runs' activations at the swept site (base, source; the source's are the
    values patched in); ``metric [pair]``: each base run's metric (the value of a patch
    that changes nothing).
    """

    resid: Float[Array, "layer pair_pos d_model"]
    k: Float[Array, "layer pair_pos kv_head d_head"]
    v: Float[Array, "layer pair_pos kv_head d_head"]
    final: Float[Array, "pair_pos d_model"]
    site: Array
    metric: Float[Array, " pair"]

    @property
    def n_pairs(self) -> int:
        return int(self.metric.shape[0])

    @property
    def n_pos(self) -> int:
        return int(self.final.shape[0]) // self.n_pairs


def cached_runs(
    model,
    base_tokens: Int[Array, "*pair pos"],
    source_tokens: Int[Array, "*pair pos"],
    site: str,
    metric: Callable,
    readout: Readout,
    attention_mask: Optional[Int[Array, "pair pos"]] = None,
) -> CachedRuns:
    """One batched pass over the base and source prompts (logits only at the read
    positions), caching what a fast sweep reads (`CachedRuns`). ``base_tokens`` /
    ``source_tokens``: one pair ``[pos]`` or a batch ``[pair, pos]`` (then ``metric`` is
    a `PairMetric` or one metric for every pair; ``attention_mask [pair, pos]`` marks
    right padding, shared by both prompts of a pair)."""
    base, source = jnp.atleast_2d(base_tokens), jnp.atleast_2d(source_tokens)
    if isinstance(metric, PairMetric):
        metric_arrays, metric_static = eqx.partition(metric, eqx.is_array)
    else:
        metric_arrays, metric_static = split_metric(metric, readout)
    mask = jnp.ones(base.shape, jnp.int32) if attention_mask is None else jnp.asarray(attention_mask, jnp.int32)
    return _cached_runs(
        model, base, source, mask, metric_arrays, site=site, metric=metric_static, readout=readout,
        masked=attention_mask is not None,
    )  # fmt: skip


@functools.partial(jax.jit, static_argnames=("site", "metric", "readout", "masked"))
def _cached_runs(model, base_tokens, source_tokens, mask, metric_arrays, *, site, metric, readout, masked):
    metric = eqx.combine(metric_arrays, metric)
    cfg = model.cfg
    n_pairs, n_pos = base_tokens.shape
    key_site = "attn.rot_k" if cfg.positional == "rotary" else "attn.k"
    # The last layer's resid_post is the final residual stream.
    names = frozenset({"resid_pre", "resid_post", key_site, "attn.v", site})

    def run(tokens, mask):
        return model.run(tokens, cache=names, readout=readout, attention_mask=mask if masked else None)

    logits, cache = jax.vmap(run)(jnp.concatenate([base_tokens, source_tokens]), jnp.concatenate([mask, mask]))

    def base_rows(x):  # [pair, layer, pos, ...] -> [layer, pair*pos, ...]
        x = jnp.moveaxis(x[:n_pairs], 0, 1)
        return x.reshape((x.shape[0], n_pairs * n_pos) + x.shape[3:])

    site_values = cache[site].reshape((2, n_pairs) + cache[site].shape[1:])
    values = metric_values(metric, logits[:n_pairs], readout, jnp.arange(n_pairs))
    return CachedRuns(
        resid=base_rows(cache["resid_pre"]),
        k=base_rows(cache[key_site]),
        v=base_rows(cache["attn.v"]),
        final=cache["resid_post"][:n_pairs, -1].reshape(n_pairs * n_pos, -1),
        site=jnp.moveaxis(site_values, 1, 2),
        metric=values,
    )


def metric_values(
    metric: Callable,
    logits: Float[Array, "row read cols"],
    readout: Readout,
    pair: Int[Array, " row"],
    compact: bool = False,
) -> Float[Array, " row"]:
    """The metric of each row of read logits; with a `PairMetric`, row ``r`` is scored by
    the metric of its pair ``pair[r]``. ``compact``: the logits are at `logit_columns`
    (a sweep's unembedding), not at the readout's columns (`Transformer.run`'s)."""
    if isinstance(metric, PairMetric):
        return jax.vmap(lambda lg, p: evaluate_metric(metric.at(p), lg, readout, compact))(logits, pair)
    return jax.vmap(lambda lg: evaluate_metric(metric, lg, readout, compact))(logits)


def block_sweep(
    model,
    runs: CachedRuns,
    d: dict,
    shape: BlockShape,
    site: str,
    metric: Callable,
    readout: Readout,
    last_layer_subset: bool,
) -> Float[Array, " read"]:
    """One chunk: run its blocks through their layers and return the metric of every
    read-out row ``[reads]`` (a `PairMetric`: each row's own pair's metric)."""
    cfg = model.cfg
    n, n_layers = shape.n_pos, cfg.n_layers
    base, source = runs, runs.site[1]
    block_layer = d["block_layer"]
    # Layers run on whole blocks (the shortcut runs the last one on read slots only).
    stop = n_layers - 1 if last_layer_subset else n_layers
    # Each block enters with the base run's residual at its layer and positions.
    token_pair = jnp.take_along_axis(d["row_pair"], d["token_row"], axis=1)
    x = base.resid[jnp.minimum(block_layer, n_layers - 1)[:, None], token_pair * n + d["token_pos"]]
    run = _BlockLayer(model, site, d, shape, readout)
    params, static = eqx.partition(model.blocks, eqx.is_array)

    def layer_step(x, xs):
        k, block_params, base_k, base_v, src = xs
        block = eqx.combine(block_params, static)
        w = AttentionWeights.of(block.attn)  # this layer's attention weights in matmul layout
        # Blocks are sorted by layer: those started by layer k are a prefix. They run in
        # groups of consecutive blocks (`group_sizes`, largest first): each matmul then
        # reads the layer's weights once for several blocks.
        n_active = jnp.where(k < stop, jnp.sum(block_layer <= k), 0)
        done = jnp.zeros((), jnp.int32)
        for size in group_sizes(shape):

            def one_group(i, x, size=size, first=done):
                g = first + i * size
                xg = jax.lax.dynamic_slice_in_dim(x, g, size).reshape(size * shape.tokens, -1)
                out = run.layer(block, w, xg, run.group(g, size), k, base_k, base_v, src)
                return jax.lax.dynamic_update_slice_in_dim(x, out.reshape(size, shape.tokens, -1), g, 0)

            count = (n_active - done) // size
            x = jax.lax.fori_loop(0, count, one_group, x)
            done = done + count * size
        return x, None

    xs = (jnp.arange(n_layers), params, base.k, base.v, source)
    x, _ = jax.lax.scan(layer_step, x, xs)

    read_block, read_row = d["read_block"], d["read_row"]
    # The vocabulary columns unembedded: all, the readout's static ones, or the metric's
    # own token ids (array data: other ids reuse this program).
    columns = logit_columns(metric, readout)
    read_pair = d["row_pair"][read_block, read_row]
    if last_layer_subset:
        last = n_layers - 1
        block = eqx.combine(jax.tree_util.tree_map(lambda a: a[last], params), static)
        resid = run.last_layer(block, x, base.resid[last], base.k[last], base.v[last], source[last])
    else:
        # A row's residual at a read position before its start is the base run's.
        start, offset = d["row_start"][read_block, read_row], d["row_offset"][read_block, read_row]
        index = _slot_index(start, offset, jnp.asarray(readout.positions), read_pair * n)  # [read, read_pos]
        index = jnp.where(index < shape.n_base, index, index + (read_block * shape.tokens)[:, None])
        resid_all = jnp.concatenate([base.final, x.reshape(-1, cfg.d_model)])
        if index.size <= resid_all.shape[0]:
            resid = take(resid_all, index)
        else:  # every position read: unembed each packed token once, then gather
            logits = take(model.to_logits(resid_all, columns), index)
            return metric_values(metric, logits, readout, read_pair, compact=True)
    logits = model.to_logits(resid, columns)
    return metric_values(metric, logits, readout, read_pair, compact=True)


class _BlockLayer:
    """Runs a layer on a group of consecutive blocks of a chunk, or the last layer on
    all of them at once (``d``: the chunk's layout data)."""

    def __init__(self, model, site: str, d: dict, shape: BlockShape, readout: Readout):
        cfg = model.cfg
        self.cfg, self.site, self.d, self.shape, self.readout = cfg, site, d, shape, readout
        self.dims = layer_site_dims(cfg)[site]
        self.all_pos = jnp.arange(shape.n_pos)
        self.rotary = rotary_tables(cfg, shape.n_pos) if cfg.positional == "rotary" else None

    def group(self, g, size: int):
        """Blocks ``g..g+size-1`` as one block of ``size * tokens`` tokens and ``size *
        rows`` rows: ``(token_pos, token_row, rows)``."""
        d, shape = self.d, self.shape

        def blocks(a):
            return jax.lax.dynamic_slice_in_dim(a, g, size)

        shift_rows = (jnp.arange(size) * shape.rows)[:, None]
        shift_tokens = (jnp.arange(size) * shape.tokens)[:, None]
        rows = {key: blocks(v).reshape(-1) for key, v in d.items() if key.startswith("row_")}
        rows["row_offset"] = (blocks(d["row_offset"]) + shift_tokens).reshape(-1)
        return blocks(d["token_pos"]).reshape(-1), (blocks(d["token_row"]) + shift_rows).reshape(-1), rows

    def _kv_index(self, rows: dict, positions: Int[Array, " slot"]) -> Int[Array, "row slot"]:
        """Each row's state at ``positions`` (`_slot_index`), base states from its pair's run."""
        return _slot_index(rows["row_start"], rows["row_offset"], positions, rows["row_pair"] * self.shape.n_pos)

    def _rot(self, pos):
        return None if self.rotary is None else (take(self.rotary[0], pos), take(self.rotary[1], pos))

    def layer(self, block, w, x, data, k, base_k, base_v, src) -> Float[Array, "token d_model"]:
        """Layer ``k`` on a block's packed tokens ``x [token, d_model]`` (``data``:
        ``(token_pos, token_row, rows)``, as from `group`)."""
        tp, tr, rows = data
        kv_index = self._kv_index(rows, self.all_pos)  # [row, pos]
        # Query slots before a row's start are computed but never read: any own token.
        query_index = jnp.clip(kv_index - self.shape.n_base, 0, x.shape[0] - 1)
        hooks = PackedPatches(
            self.site, self.dims, k, rows, tp, tr, src, self.all_pos, token_pair=take(rows["row_pair"], tr)
        )
        attn = PackedAttention(
            w, kv_index, self.all_pos, base_k, base_v, query_index=query_index, out_row=tr, out_slot=tp
        )
        return dataclasses.replace(block, attn=attn)(x, hooks, self.cfg, self._rot(tp))

    def last_layer(self, block, x, base_resid, base_k, base_v, src) -> Float[Array, "read read_pos d_model"]:
        """The last layer computed only where the metric reads, for every block of
        ``x [block, token, d_model]`` at once: keys and values for every packed token
        (later positions read earlier ones), everything else for the read-out rows'
        ``[read, read position]`` slots only. Patches on the key/value path are applied
        on all tokens first; re-applying a patch to the read slots writes the same
        values."""
        cfg, shape, d = self.cfg, self.shape, self.d
        k = cfg.n_layers - 1
        w = AttentionWeights.of(block.attn)
        read_pos = jnp.asarray(self.readout.positions)
        n_read = read_pos.shape[0]
        tp, tr, rows = self.group(0, shape.blocks)
        kv_hooks = PackedPatches(
            self.site, self.dims, k, rows, tp, tr, src, self.all_pos, KV_PATH_SITES, take(rows["row_pair"], tr)
        )
        xt = kv_hooks("resid_pre", x.reshape(-1, cfg.d_model))
        keys, values = keys_values(block.attn_input(xt, kv_hooks), w, kv_hooks, cfg, self._rot(tp), block.window)

        # The read-out rows (index into the chunk's rows) and their slots.
        read_rows = {key: v[d["read_block"] * shape.rows + d["read_row"]] for key, v in rows.items()}
        x_read = take(jnp.concatenate([base_resid, xt]), self._kv_index(read_rows, read_pos).reshape(-1))
        slot_pos = jnp.tile(read_pos, shape.reads)
        slot_row = jnp.repeat(jnp.arange(shape.reads), n_read)
        read_hooks = PackedPatches(
            self.site, self.dims, k, read_rows, slot_pos, slot_row, src, read_pos,
            token_pair=take(read_rows["row_pair"], slot_row),
        )  # fmt: skip
        kv_index = self._kv_index(read_rows, self.all_pos)
        attn = PackedAttention(w, kv_index, read_pos, base_k, base_v, k=keys, v=values)
        out = dataclasses.replace(block, attn=attn)(x_read, read_hooks, cfg, self._rot(slot_pos))
        return out.reshape(shape.reads, n_read, -1)


# Largest group of blocks one matmul covers, in packed tokens: past ~1000 rows a
# matmul gains little, while every group size compiles its own copy of the layer.
MAX_GROUP_TOKENS = 1024


def group_sizes(shape: BlockShape) -> tuple:
    """Sizes of the block groups a layer runs, largest first: powers of four up to
    ``MAX_GROUP_TOKENS`` tokens. A layer with ``a`` active blocks runs ``a // 16``
    groups of 16, then groups of 4, then single blocks (for example)."""
    cap = max(1, min(shape.blocks, MAX_GROUP_TOKENS // shape.tokens))
    sizes = [1]
    while sizes[-1] * 4 <= cap:
        sizes.append(sizes[-1] * 4)
    return tuple(reversed(sizes))


def _slot_index(
    start: Int[Array, " row"],
    offset: Int[Array, " row"],
    positions: Int[Array, " slot"],
    base: Optional[Int[Array, " row"]] = None,
) -> Int[Array, "row slot"]:
    """Index (block numbering: base runs' positions first) of each row's state at each of
    ``positions``: the row's own token from its start on, its base run's before it
    (``base [row]``: where that run's positions start, ``pair * n_pos``; None: 0)."""
    j = positions[None, :]
    before = j if base is None else base[:, None] + j
    return jnp.where(j < start[:, None], before, offset[:, None] + j - start[:, None])


def fast_flops(
    cfg, layout: BlockLayout, readout: Readout, last_layer_subset: bool = False, cached_runs: bool = True
) -> float:
    """Matmul FLOPs the program executes: the cached pass over both prompts (left out
    with ``cached_runs=False``), every block-layer (padding included), attention over
    the padded views, and the logits of each read slot."""
    n, shape = layout.shape.n_pos, layout.shape
    d, h, kv, dh = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head
    ffn = 2 * d * cfg.d_mlp * (3 if cfg.gated_mlp else 2) * max(cfg.n_experts, 1)  # experts run densely
    kv_flops = 2 * d * 2 * kv * dh
    rest = 2 * d * h * dh * 2 + ffn

    def attention(n_query):
        return 4 * h * dh * n_query * n

    stop = cfg.n_layers - 1 if last_layer_subset else cfg.n_layers
    total = 2 * shape.n_pairs * cfg.n_layers * (n * (kv_flops + rest) + attention(n)) if cached_runs else 0
    total += layout.token_layers(cfg.n_layers, stop) * (kv_flops + rest)
    total += layout.block_layers(cfg.n_layers, stop) * shape.rows * attention(n)
    n_read = len(readout.positions)
    if last_layer_subset:  # keys and values of every token of every block, the rest at read slots
        total += layout.n_chunks * (
            shape.blocks * shape.tokens * kv_flops + shape.reads * (n_read * rest + attention(n_read))
        )
    cols = readout.n_computed_columns or cfg.d_vocab
    total += layout.n_chunks * shape.reads * n_read * 2 * d * cols
    return float(total)


def fast_bytes(cfg, n_tokens: int, n_patches: int, n_read: int) -> int:
    """Rough bytes one chunk keeps alive: the packed residual of its tokens and the
    logits of its read slots."""
    return 4 * (n_tokens * cfg.d_model + n_patches * n_read * cfg.d_vocab)
