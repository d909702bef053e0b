"""The fast sweep: prefix reuse over layers, suffix reuse over positions, packed tokens.

A patch at layer ``l`` and position ``p`` of a causal model cannot change anything
below layer ``l`` or before position ``p``. The fast engine computes only the rest:
layer by layer (the loop over layers is unrolled, each layer one static shape), the
residual stream of every active patch is one packed ``[tokens, d_model]`` matrix
(`jaxinterp.patching.layout`); patches starting at layer ``k`` join it at step ``k``
from the base run's residual, which rides along in the same matrix together with the
source run, so every layer's weights are read once for all of them. Keys and values
before a patch's position come from the base run's tokens (`PackedAttention`).

Exact: the numbers equal a loop of single-patch forward passes up to float rounding.
Opt-in (``last_layer_subset``): the last layer runs its queries, output projection and
MLP only at the positions the metric reads (keys and values still at every position).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..model.rotary import rotary_tables
from ..sites import layer_site_dims
from .layout import SOURCE_ROW, StaircaseShape, build_staircase
from .locations import PatchGrid
from .packed import KV_PATH_SITES, AttentionWeights, PackedAttention, PackedHooks, keys_values, take
from .readout import IDENTITY, Readout, evaluate_metric, final_logits
from .sweep import map_chunks


def fast_supported(cfg) -> bool:
    """Whether suffix reuse holds: causal attention (every other op is per position)."""
    return bool(cfg.causal)


def fast_sweep(
    model,
    base_tokens: Int[Array, " pos"],
    source_tokens: Int[Array, " pos"],
    grid: PatchGrid,
    metric: Callable,
    readout: Readout,
    n_chunks: int = 1,
    last_layer_subset: bool = False,
    progress: bool = False,
    keep: np.ndarray = None,
    quick_compile: Optional[bool] = None,
) -> tuple[np.ndarray, float]:
    """Metric for each patch of ``grid`` (``[n_patches]``, NaN where ``keep`` is False)
    and the base run's metric, computed by the packed staircase in ``n_chunks`` chunks."""
    fields = grid.engine_fields()
    ids = np.arange(grid.n_patches) if keep is None else np.flatnonzero(keep)
    stair = build_staircase(
        len(base_tokens), model.cfg.n_layers, grid.layer[ids], grid.start_pos[ids], {f: v[ids] for f, v in fields.items()}, n_chunks
    )
    args = (model, jnp.asarray(base_tokens), jnp.asarray(source_tokens), stair.data)
    static = dict(shape=stair.shape, site=grid.site, metric=metric, readout=readout,
                  last_layer_subset=last_layer_subset and not model.cfg.post_norm, progress=progress)
    values = _run(args, static, staircase_flops(model.cfg, stair.shape, stair.n_chunks), quick_compile)
    values = np.asarray(values)
    out = np.full(grid.n_patches, np.nan, values.dtype)
    rows = stair.patch_of_row >= 0
    out[ids[stair.patch_of_row[rows]]] = values[rows]
    return out, float(values[0, 0])


def _program(model, base_tokens, source_tokens, data, *, shape, site, metric, readout, last_layer_subset, progress):
    """The sweep: ``[n_chunks, rows]`` metric values (row 0: base run)."""
    def chunk(d):
        return staircase(model, base_tokens, source_tokens, d, shape, site, metric, readout, last_layer_subset)

    return map_chunks(chunk, data, progress=progress)


_STATIC = ("shape", "site", "metric", "readout", "last_layer_subset", "progress")

# Compile time: every unrolled layer has its own shapes, so XLA compiles its kernels
# once per layer. Most of that time is LLVM optimising elementwise kernels. Without
# that optimisation XLA compiles ~7x faster but runs GELU, norms and copies ~10x slower
# (~1.5x overall on GPT-2 small), so it pays only for small sweeps, where compile
# time dominates: below QUICK_COMPILE_FLOPS of work, compile for speed of compiling.
QUICK_COMPILE_FLOPS = 2e10
QUICK_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}

fast_program = jax.jit(_program, static_argnames=_STATIC)
_quick_programs = [
    # Older/newer XLA builds lack some options: fall back to fewer.
    jax.jit(_program, static_argnames=_STATIC, compiler_options=QUICK_COMPILE_OPTIONS),
    jax.jit(_program, static_argnames=_STATIC, compiler_options={"xla_backend_optimization_level": 0}),
]


def _run(args, static, flops: float, quick_compile: Optional[bool]):
    """Run the staircase, compiled for speed of compiling when asked to or, by default,
    when the sweep is small (on CPU)."""
    if quick_compile is None:
        quick_compile = flops < QUICK_COMPILE_FLOPS and jax.default_backend() == "cpu"
    if quick_compile:
        for program in _quick_programs:
            try:
                return program(*args, **static)
            except Exception as error:
                if "compile option" not in str(error):
                    raise
    return fast_program(*args, **static)


def staircase_flops(cfg, shape: StaircaseShape, n_chunks: int) -> float:
    """Approximate matmul FLOPs of a staircase (packed token-layers times weights)."""
    ffn = cfg.d_mlp * (3 if cfg.gated_mlp else 2) * max(cfg.n_experts, 1)
    per_token = 2 * cfg.d_model * (2 * cfg.n_heads * cfg.d_head + 2 * cfg.n_kv_heads * cfg.d_head + ffn)
    return float(n_chunks * sum(shape.tokens) * per_token)


def staircase(
    model, base_tokens, source_tokens, d: dict, shape: StaircaseShape, site: str,
    metric: Callable, readout: Readout, last_layer_subset: bool,
) -> Float[Array, " row"]:
    """One chunk: run the staircase and return the metric of every row ``[rows]``."""
    cfg = model.cfg
    n = shape.n_pos
    dims = layer_site_dims(cfg)[site]
    token_pos, token_row = d["token_pos"], d["token_row"]
    rows = {k: v for k, v in d.items() if k.startswith("row_")}
    base_embed = model.embed_tokens(base_tokens, IDENTITY)
    source_embed = model.embed_tokens(source_tokens, IDENTITY)
    rotary = rotary_tables(cfg, n) if cfg.positional == "rotary" else None
    all_pos = jnp.arange(n)
    read_pos = np.asarray(readout.positions)

    prev_tokens, prev_rows = 0, 0
    x = jnp.zeros((0, cfg.d_model), base_embed.dtype)
    stacked = model.blocks
    for k in range(cfg.n_layers):
        n_tok, n_rows = shape.tokens[k], shape.rows[k]
        # Rows starting here enter with the base run's residual at their positions;
        # the base run's position j is packed token j (row 0 at offset 0).
        if k == 0:
            x = jnp.concatenate([base_embed, source_embed, take(base_embed, token_pos[2 * n : n_tok])])
        elif n_tok > prev_tokens:
            x = jnp.concatenate([x, take(x, token_pos[prev_tokens:n_tok])])
        # Slice this layer's weights only once the previous layer is done, so XLA keeps
        # one layer's copy alive at a time instead of hoisting all of them.
        block = _layer_after(stacked, k, x)
        weights = AttentionWeights.of(block.attn)
        tp, tr = token_pos[:n_tok], token_row[:n_tok]
        start, offset = d["row_start"][:n_rows], d["row_offset"][:n_rows]
        kv_index = _slot_index(start, offset, all_pos)
        rot = None if rotary is None else (take(rotary[0], tp), take(rotary[1], tp))
        hooks = PackedHooks(
            site, dims, k, rows, tp, tr, SOURCE_ROW * n + tp, (prev_tokens, n_tok), (prev_rows, n_rows), all_pos,
        )
        if k == cfg.n_layers - 1 and last_layer_subset:
            return _last_layer_subset(model, block, weights, x, hooks, kv_index, start, offset, rot, rotary, site, dims,
                                      k, prev_rows, n_rows, metric, readout)
        attn = PackedAttention(weights, kv_index, all_pos, query_index=kv_index, out_row=tr, out_slot=tp)
        x = dataclasses.replace(block, attn=attn)(x, hooks, cfg, rot)
        prev_tokens, prev_rows = n_tok, n_rows

    read_index = _slot_index(start, offset, jnp.asarray(read_pos))
    if read_index.size <= x.shape[0]:
        logits = final_logits(model, take(x, read_index), readout)
    else:  # every position read: unembed each packed token once, then gather
        logits = take(final_logits(model, x, readout), read_index)
    return jax.vmap(lambda lg: evaluate_metric(metric, lg, readout))(logits)


def _last_layer_subset(model, block, weights, x, hooks, kv_index, start, offset, rot, rotary, site, dims, k,
                       prev_rows, n_rows, metric, readout):
    """The last layer computed only where the metric reads: keys and values for every
    packed token (later positions read earlier ones), everything else for the
    ``[row, read position]`` slots only. Patches on the key/value path are applied on
    all tokens first; re-applying a patch to the read slots writes the same values."""
    cfg = model.cfg
    read_pos = jnp.asarray(np.asarray(readout.positions))
    n_read = read_pos.shape[0]
    kv_hooks = PackedHooks(site, dims, k, hooks.rows, hooks.token_pos, hooks.token_row, hooks.source_token,
                           hooks.enter_tokens, hooks.enter_rows, hooks.query_pos, only=KV_PATH_SITES)
    x = kv_hooks("resid_pre", x)
    keys, values = keys_values(block.ln1(x, kv_hooks, "ln1"), weights, kv_hooks, cfg, rot)

    read_index = _slot_index(start, offset, read_pos)  # [row, read]
    x_read = take(x, read_index.reshape(-1))
    slot_pos = jnp.tile(read_pos, n_rows)
    slot_row = jnp.repeat(jnp.arange(n_rows), n_read)
    slot = jnp.tile(jnp.arange(n_read), n_rows)
    read_hooks = PackedHooks(site, dims, k, hooks.rows, slot_pos, slot_row, SOURCE_ROW * n_read + slot,
                             (prev_rows * n_read, n_rows * n_read), (prev_rows, n_rows), read_pos)
    read_rot = None if rotary is None else (take(rotary[0], slot_pos), take(rotary[1], slot_pos))
    attn = PackedAttention(weights, kv_index, read_pos, k=keys, v=values)
    out = dataclasses.replace(block, attn=attn)(x_read, read_hooks, cfg, read_rot)
    logits = final_logits(model, out.reshape(n_rows, n_read, -1), readout)
    return jax.vmap(lambda lg: evaluate_metric(metric, lg, readout))(logits)


def _layer_after(stacked, k: int, x: Array):
    """Layer ``k``'s weights, sliced only once ``x`` (the previous layer's output) exists.

    The staircase is unrolled; sliced at the top, every layer's weight copy would be
    alive at once (the stacked model's size again). An index XLA cannot prove
    constant (``x > inf`` is always false) orders each slice after the layer before.
    """
    index = k + (x[0, 0] > jnp.inf).astype(jnp.int32)
    return jax.tree_util.tree_map(lambda a: jax.lax.dynamic_index_in_dim(a, index, keepdims=False), stacked)


def _slot_index(start: Int[Array, " row"], offset: Int[Array, " row"], positions: Int[Array, " slot"]) -> Int[Array, "row slot"]:
    """Packed token holding each row's state at each of ``positions``: the row's own
    token from its start on, the base run's (token ``j``) before it."""
    j = positions[None, :]
    return jnp.where(j < start[:, None], j, offset[:, None] + j - start[:, None])


def fast_bytes_per_token(cfg, n_pos: int) -> int:
    """Rough activation bytes per packed token at one layer (for default chunking)."""
    ffn = max(cfg.d_mlp, 1) * max(cfg.n_experts, 1)
    return 4 * (10 * cfg.d_model + 3 * ffn + 4 * cfg.n_heads * n_pos)
