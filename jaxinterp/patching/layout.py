"""The packed staircase layout of a fast sweep, built on the host with numpy.

Each patch becomes a *row*: a run that starts at the patch's layer ``l`` (below it,
nothing can differ from the base run) and covers only positions ``p..n_pos-1`` (under
causal attention, positions before the patch cannot change). A row's positions are
its *tokens*. Rows are sorted by start layer, so at layer ``k`` the active rows are a
prefix of the row list and their tokens a prefix of the token list: the residual
stream of every active row is one packed ``[tokens_k, d_model]`` matrix, whose size
grows like a staircase with ``k``. Two rows ride along in every chunk: row 0 is the
base run (its tokens are positions ``0..n_pos-1``, so base position ``j`` is packed
token ``j``), row 1 the source run whose activations are patched in.

For memory-bounded sweeps the patches are split into chunks that share one static
shape (the same number of rows and tokens entering at every layer), so one compiled
staircase runs over all chunks in a loop. Chunks are balanced greedily and topped up
with *pad rows*: unpatched runs of the needed length whose results are dropped.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .locations import FIELDS

BASE_ROW, SOURCE_ROW = 0, 1


@dataclasses.dataclass(frozen=True)
class StaircaseShape:
    """Static sizes of one chunk: ``rows[k]`` / ``tokens[k]`` are the active rows and
    packed tokens at layer ``k`` (cumulative over start layers)."""

    n_pos: int
    rows: tuple
    tokens: tuple


@dataclasses.dataclass(frozen=True, eq=False)
class Staircase:
    """A chunked staircase. ``data`` holds ``[n_chunks, ...]`` int32 arrays:

    - ``row_start [row]``: first position the row recomputes (0 for base/source),
    - ``row_offset [row]``: packed index of the row's first token,
    - ``row_layer [row]``: the layer its patch applies at (-1: base, source, pad),
    - ``row_<field> [row]``: the patch's location indices (-1: whole axis),
    - ``token_pos [token]``: each packed token's position,
    - ``token_row [token]``: the row each token belongs to.

    ``patch_of_row [n_chunks, row]``: which patch a row computes (-1: none).
    """

    shape: StaircaseShape
    data: dict
    patch_of_row: np.ndarray

    @property
    def n_chunks(self) -> int:
        return self.patch_of_row.shape[0]


def build_staircase(n_pos: int, n_layers: int, layer: np.ndarray, start: np.ndarray, fields: dict, n_chunks: int = 1) -> Staircase:
    """Lay out patches (``layer``, ``start`` and location ``fields``, each ``[n_patches]``)
    as ``n_chunks`` equally shaped staircases."""
    n_chunks = max(1, min(int(n_chunks), max(1, len(layer))))
    length = n_pos - np.asarray(start)
    # chunk_rows[c]: list of (patch id or -1, start position) in row order.
    chunk_rows = [[(-1, 0), (-1, 0)] for _ in range(n_chunks)]
    rows, tokens = [], []
    for k in range(n_layers):
        ids = np.flatnonzero(layer == k)
        groups = _balance(ids, length[ids], n_chunks)
        sums = [int(length[g].sum()) for g in groups]
        counts = [len(g) for g in groups]
        top = max(sums)
        # Enough pad rows that every chunk can reach `top` tokens, each pad row <= n_pos long.
        n_rows = max(c + math.ceil((top - s) / n_pos) for c, s in zip(counts, sums))
        for c, group in enumerate(groups):
            chunk_rows[c] += [(int(i), int(start[i])) for i in group]
            deficit, n_pad = top - sums[c], n_rows - counts[c]
            for j in range(n_pad):
                pad_len = min(n_pos, deficit)
                deficit -= pad_len
                chunk_rows[c].append((-1, n_pos - pad_len))
        rows.append((rows[-1] if rows else 2) + n_rows)
        tokens.append((tokens[-1] if tokens else 2 * n_pos) + top)

    shape = StaircaseShape(n_pos, tuple(rows), tuple(tokens))
    n_rows, n_tokens = rows[-1], tokens[-1]
    data = {key: np.zeros((n_chunks, n_rows), np.int32) for key in ("row_start", "row_offset", "row_layer")}
    data.update({f"row_{f}": np.full((n_chunks, n_rows), -1, np.int32) for f in FIELDS if f != "layer"})
    data["token_pos"] = np.zeros((n_chunks, n_tokens), np.int32)
    data["token_row"] = np.zeros((n_chunks, n_tokens), np.int32)
    patch_of_row = np.full((n_chunks, n_rows), -1, np.int64)
    for c, chunk in enumerate(chunk_rows):
        assert len(chunk) == n_rows
        offset = 0
        for r, (patch, p) in enumerate(chunk):
            data["row_start"][c, r] = p
            data["row_offset"][c, r] = offset
            data["row_layer"][c, r] = -1 if patch < 0 else layer[patch]
            patch_of_row[c, r] = patch
            if patch >= 0:
                for f in FIELDS:
                    if f != "layer":
                        data[f"row_{f}"][c, r] = fields[f][patch]
            data["token_pos"][c, offset : offset + n_pos - p] = np.arange(p, n_pos)
            data["token_row"][c, offset : offset + n_pos - p] = r
            offset += n_pos - p
        assert offset == n_tokens
    return Staircase(shape, data, patch_of_row)


def _balance(ids: np.ndarray, lengths: np.ndarray, n_chunks: int) -> list:
    """Split ``ids`` into ``n_chunks`` groups of near-equal size and token sum
    (longest first, each to the lightest group that is not yet full)."""
    if n_chunks == 1:
        return [ids]
    cap = math.ceil(len(ids) / n_chunks)
    groups = [[] for _ in range(n_chunks)]
    sums = np.zeros(n_chunks, np.int64)
    order = np.argsort(-lengths, kind="stable")
    for j in order:
        open_ = np.array([len(g) < cap for g in groups])
        c = int(np.argmin(np.where(open_, sums, np.iinfo(np.int64).max)))
        groups[c].append(ids[j])
        sums[c] += lengths[j]
    return [np.asarray(g, np.int64) for g in groups]
