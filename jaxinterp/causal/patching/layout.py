"""The block layout of a fast sweep, built on the host with numpy.

Each patch becomes a *row*: a run that starts at the patch's layer ``l`` (below it,
nothing can differ from the base run) and covers only positions ``p..n_pos-1`` (under
causal attention, positions before the patch cannot change). A row's positions are its
*tokens*. With a batch of prompt pairs, each (patch, pair) is a row that knows its pair
(``row_pair``); rows of every pair share the blocks. Rows that start at the same layer are packed into *blocks* of ``tokens``
packed tokens each (first-fit decreasing), so every block has one static shape
``[tokens, d_model]`` whatever its layer: one compiled layer serves every block at every
layer. A block is computed from its layer to the last; what a row reads before its own
tokens (keys and values, and residuals at positions before its start) comes from the
base run, whose positions are numbered first, pair by pair: packed index ``j <
n_pairs * n_pos`` is pair ``j // n_pos``'s base position ``j % n_pos``, index
``n_pairs * n_pos + t`` is the block's own token ``t``.

Blocks are split into chunks of ``blocks`` blocks for memory-bounded sweeps. Within a
chunk blocks are sorted by layer, so the blocks active at layer ``k`` are a prefix of
them; pad blocks (layer ``n_layers``) never run. Each block keeps its last row slot
for padding: a row of no patch whose tokens fill the block up.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

from ...core.errors import PatchingError
from .locations import FIELDS

# Largest block, in packed tokens: big enough that its matmuls run near peak
# throughput (>= ~120 rows on CPU), small enough that splitting a layer's rows into
# blocks wastes little padding.
MAX_BLOCK_TOKENS = 1024
# Each block-layer costs a little beyond its FLOPs (a loop step, gathers): counted as
# this many tokens when choosing the block size.
BLOCK_OVERHEAD_TOKENS = 16


@dataclasses.dataclass(frozen=True)
class BlockShape:
    """Static sizes: ``tokens`` / ``rows`` per block (the last row slot pads),
    ``blocks`` per chunk, ``reads``: rows read out per chunk (real patches, padded),
    ``n_pairs``: prompt pairs whose base runs the blocks read."""

    n_pos: int
    tokens: int
    rows: int
    blocks: int
    reads: int
    n_pairs: int = 1

    @property
    def n_base(self) -> int:
        """Packed indices taken by the base runs (every pair's positions)."""
        return self.n_pairs * self.n_pos


@dataclasses.dataclass(frozen=True, eq=False)
class BlockLayout:
    """A chunked block layout. ``data`` holds ``[n_chunks, ...]`` int32 arrays:

    - ``block_layer [block]``: the layer the block starts at (``n_layers``: pad block),
    - ``row_start [block, row]``: first position the row recomputes (``n_pos``: pad row),
    - ``row_offset [block, row]``: packed index of the row's first token (``>= n_base``),
    - ``row_layer [block, row]``: the layer its patch applies at (-1: pad row),
    - ``row_layer_stop [block, row]``: one past the last layer it applies at
      (``row_layer + 1`` for a single-layer patch; more for a patch over a window of
      layers, as causal tracing restores; -1: pad row),
    - ``row_pair [block, row]``: the prompt pair the row patches (0: pad row),
    - ``row_<field> [block, row]``: the patch's location indices (-1: whole axis),
    - ``token_pos [block, token]`` / ``token_row [block, token]``: each token's position
      and row,
    - ``read_block [read]`` / ``read_row [read]``: where each read-out row lives.

    ``patch_of_read [n_chunks, read]``: the patch each read-out row computes (-1: none).
    """

    shape: BlockShape
    data: dict
    patch_of_read: np.ndarray
    block_layer: np.ndarray  # [n_chunks, block], as in data (for FLOP counts on the host)

    @property
    def n_chunks(self) -> int:
        return self.patch_of_read.shape[0]

    def token_layers(self, n_layers: int, stop: Optional[int] = None) -> int:
        """Packed token-layers computed per chunk summed over chunks (layers < ``stop``)."""
        stop = n_layers if stop is None else stop
        return int(np.clip(stop - self.block_layer, 0, None).sum()) * self.shape.tokens

    def block_layers(self, n_layers: int, stop: Optional[int] = None) -> int:
        stop = n_layers if stop is None else stop
        return int(np.clip(stop - self.block_layer, 0, None).sum())


def build_blocks(
    n_pos: int,
    n_layers: int,
    layer: np.ndarray,
    start: np.ndarray,
    fields: dict,
    n_chunks: int = 1,
    max_tokens: int = MAX_BLOCK_TOKENS,
    multiple_of: int = 1,
    layer_stop: Optional[np.ndarray] = None,
    pair: Optional[np.ndarray] = None,
    n_pairs: int = 1,
) -> BlockLayout:
    """Lay out patches (``layer``, ``start`` and location ``fields``, each ``[n_patches]``)
    as blocks, in ``n_chunks`` chunks (fewer if there are fewer blocks; rounded up to a
    multiple of ``multiple_of``, the devices the chunks are sharded over).

    ``layer_stop [n_patches]``: a patch applies at layers ``layer .. layer_stop - 1``
    (a window of layers); None: at ``layer`` only. ``pair [n_patches]``: the prompt pair
    of each patch, of ``n_pairs`` (None: all pair 0)."""
    layer, start = np.asarray(layer, np.int64), np.asarray(start, np.int64)
    layer_stop = layer + 1 if layer_stop is None else np.asarray(layer_stop, np.int64)
    if layer_stop.shape != layer.shape or np.any(layer_stop <= layer):
        raise PatchingError("layer_stop must be [n_patches] with layer_stop > layer for every patch")
    pair = np.zeros(len(layer), np.int64) if pair is None else np.asarray(pair, np.int64)
    n_base = n_pairs * n_pos
    length = n_pos - start
    groups = {int(k): np.flatnonzero(layer == k) for k in np.unique(layer)}
    size = block_tokens(n_pos, n_layers, {k: length[g] for k, g in groups.items()}, max_tokens)
    blocks = []  # (layer, [patch ids]) sorted by layer
    for k, ids in groups.items():
        blocks += [(k, b) for b in _first_fit(ids, length[ids], size)]
    n_blocks = max(1, len(blocks))
    n_chunks = max(1, min(int(n_chunks), n_blocks))
    n_chunks = math.ceil(n_chunks / multiple_of) * multiple_of
    per_chunk = math.ceil(n_blocks / n_chunks)
    chunks = _balance(blocks, n_chunks, per_chunk, n_layers)
    n_rows = max([len(b) for _, b in blocks], default=0) + 1
    n_reads = max(1, max(sum(len(b) for _, b in chunk) for chunk in chunks))
    shape = BlockShape(n_pos, size, n_rows, per_chunk, n_reads, n_pairs)

    def full(shape_, value):
        return np.full((n_chunks,) + shape_, value, np.int32)

    data = {
        "block_layer": full((per_chunk,), n_layers),
        "row_start": full((per_chunk, n_rows), n_pos),
        "row_offset": full((per_chunk, n_rows), n_base),
        "row_layer": full((per_chunk, n_rows), -1),
        "row_layer_stop": full((per_chunk, n_rows), -1),
        "row_pair": full((per_chunk, n_rows), 0),
        **{f"row_{f}": full((per_chunk, n_rows), -1) for f in FIELDS if f != "layer"},
        # Pad tokens belong to the pad row (last slot) at the last position.
        "token_pos": full((per_chunk, size), n_pos - 1),
        "token_row": full((per_chunk, size), n_rows - 1),
        "read_block": full((n_reads,), 0),
        "read_row": full((n_reads,), n_rows - 1),
    }
    patch_of_read = np.full((n_chunks, n_reads), -1, np.int64)
    for c, chunk in enumerate(chunks):
        reads = 0
        for b, (k, ids) in enumerate(chunk):
            data["block_layer"][c, b] = k
            offset = n_base
            for r, patch in enumerate(ids):
                p = int(start[patch])
                data["row_start"][c, b, r] = p
                data["row_offset"][c, b, r] = offset
                data["row_layer"][c, b, r] = layer[patch]
                data["row_layer_stop"][c, b, r] = layer_stop[patch]
                data["row_pair"][c, b, r] = pair[patch]
                for f in FIELDS:
                    if f != "layer":
                        data[f"row_{f}"][c, b, r] = fields[f][patch]
                t = offset - n_base
                data["token_pos"][c, b, t : t + n_pos - p] = np.arange(p, n_pos)
                data["token_row"][c, b, t : t + n_pos - p] = r
                offset += n_pos - p
                data["read_block"][c, reads], data["read_row"][c, reads] = b, r
                patch_of_read[c, reads] = patch
                reads += 1
            assert offset - n_base <= size
    return BlockLayout(shape, data, patch_of_read, data["block_layer"].copy())


def _balance(blocks: list, n_chunks: int, per_chunk: int, n_layers: int) -> list:
    """Deal ``blocks`` (sorted by layer) into chunks of at most ``per_chunk`` blocks with
    near-equal work (a block's work is its number of layers): each block, costliest
    first, to the least loaded chunk with room. Chunks keep their blocks in layer order."""
    chunks: list[list] = [[] for _ in range(n_chunks)]
    load = np.zeros(n_chunks)
    for block in blocks:
        room = np.array([len(c) < per_chunk for c in chunks])
        c = int(np.argmin(np.where(room, load, np.inf)))
        chunks[c].append(block)
        load[c] += n_layers - block[0]
    return chunks


def block_tokens(n_pos: int, n_layers: int, lengths: dict, max_tokens: int = MAX_BLOCK_TOKENS) -> int:
    """The block size (packed tokens) that computes the fewest padded token-layers for
    rows of these ``lengths`` (per start layer), at least ``n_pos`` (a row fits a block)."""
    lo, hi = n_pos, max(n_pos, max_tokens)
    totals = [int(v.sum()) for v in lengths.values() if len(v)]
    if not totals:
        return lo
    candidates = {min(max(max(totals), lo), hi)}
    for total in set(totals):
        for m in range(1, 17):
            t = math.ceil(total / m)
            if lo <= t <= hi:
                candidates.add(t)

    # Layers with the same row lengths pack alike: count each distinct multiset once.
    kinds: dict = {}
    for k, v in lengths.items():
        if len(v):
            key = tuple(np.sort(v))
            kinds.setdefault(key, [v, 0])[1] += n_layers - k

    def cost(t):
        return sum(
            w * len(_first_fit(np.arange(len(v)), v, t)) * (t + BLOCK_OVERHEAD_TOKENS) for v, w in kinds.values()
        )

    return min(sorted(candidates, reverse=True), key=cost)


def _first_fit(ids: np.ndarray, lengths: np.ndarray, capacity: int) -> list:
    """Pack ``ids`` (of ``lengths``) into bins of ``capacity`` tokens, longest first,
    each into the first bin with room. Returns lists of ids, in input order per bin."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    room = np.full(len(order), capacity, np.int64)  # at most one bin per id
    bins: list[list] = [[] for _ in order]
    used = 0
    for j in order:
        i = int(np.argmax(room[: used + 1] >= lengths[j]))  # bin `used` is empty: always fits
        room[i] -= lengths[j]
        bins[i].append(ids[j])
        used = max(used, i + 1)
    return [np.sort(np.asarray(b, np.int64)) for b in bins[:used]]
