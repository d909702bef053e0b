"""`Readout`: which logits a run computes, which a metric reads, and evaluating it from only those.

A metric is ``metric(logits[pos, d_vocab]) -> scalar``. Metrics built by
`jaxinterp.core.metrics` declare what they read as ``metric.reads = (pos, token_ids)``;
for a plain function it is inferred from its program (`Metric.reads_for`).
Sweeps use the declared positions to compute logits only there (the unembedding of a
50k vocabulary costs as much as several layers per position), and, as an opt-in
shortcut, only the declared columns. The metric still receives a full
``[pos, d_vocab]`` array: entries that were not computed are NaN, so a metric that
reads more than it declared gives NaN (and the sweep raises) rather than a wrong
number. XLA fuses that select into the metric's reads, so the full array is never
materialised.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .errors import MetricError
from .metrics import as_metric, check_ids, check_scalar


@dataclasses.dataclass(frozen=True)
class Readout:
    """Static description of the logits a run computes (hashable: a jit static argument).

    ``positions``: the positions whose logits are computed (non-negative, sorted; None:
    all). ``columns``: vocabulary ids computed (None: all). ``n_pos`` / ``d_vocab``: sizes
    of the ``[pos, d_vocab]`` array a metric expects (None where nothing is restricted).
    `Transformer.run` returns logits ``[len(positions) or pos, len(columns) or d_vocab]``.

    ``n_columns``: the metric's own columns (`Metric.compact`), ``n_columns`` of them, are
    what a sweep unembeds (`logit_columns`, then `evaluate_metric(..., compact=True)`).
    They are array data, not part of this static description, so a metric of other token
    ids reuses the compiled sweep. `Transformer.run` ignores it (all columns at ``positions``).
    """

    positions: Optional[tuple] = None
    columns: Optional[tuple] = None
    n_pos: Optional[int] = None
    d_vocab: Optional[int] = None
    n_columns: Optional[int] = None

    @staticmethod
    def at(positions, n_pos: int, columns=None, d_vocab: Optional[int] = None) -> "Readout":
        """Logits at ``positions`` (ints; negative counts from the end) of ``n_pos`` tokens,
        optionally only at vocabulary ``columns``."""
        pos = tuple(sorted({int(p) % n_pos for p in np.atleast_1d(np.asarray(positions)).tolist()}))
        cols = None if columns is None else tuple(int(c) for c in np.atleast_1d(np.asarray(columns)).tolist())
        return Readout(pos, cols, n_pos, d_vocab)

    @property
    def restricted(self) -> bool:
        rows = self.positions is not None and len(self.positions) < self.n_pos
        return rows or self.columns is not None

    @property
    def n_computed_columns(self) -> Optional[int]:
        """Columns a sweep unembeds per read position (None: the whole vocabulary)."""
        return len(self.columns) if self.columns is not None else self.n_columns


ALL = Readout()
"""Every position, every column: the full ``[pos, d_vocab]`` logits."""


def readout_for(metric: Callable, n_pos: int, d_vocab: int, columns: bool = False, has_unembed: bool = True) -> Readout:
    """The readout of ``metric`` for ``n_pos`` tokens; ``columns=True`` also restricts
    the vocabulary to the token ids it reads (when they are known): a metric with a
    `Metric.compact` form (`logit_diff`, ...) gets ``n_columns`` (its ids stay array data:
    other ids reuse the compiled sweep), others (declared or inferred reads of a plain
    function) static ``columns``."""
    metric = as_metric(metric)
    reads = metric.reads_for(n_pos, d_vocab)
    positions = tuple(range(n_pos))
    cols = None
    if reads is not None:
        pos, ids = reads
        pos = np.atleast_1d(np.asarray(pos)).astype(int)
        if np.any((pos < -n_pos) | (pos >= n_pos)):
            raise MetricError(f"metric.reads names position(s) {pos.tolist()} outside a sequence of {n_pos} tokens")
        positions = tuple(sorted({int(p) % n_pos for p in pos}))
        # Concrete ids are checked with or without shortcuts (indexing would clamp them);
        # traced ones (a metric built inside jit) by the metric itself (`check_ids`).
        if has_unembed and ids is not None and not isinstance(ids, jax.core.Tracer):
            ids = np.atleast_1d(np.asarray(ids)).astype(int)
            if np.any((ids < 0) | (ids >= d_vocab)):
                raise MetricError(
                    f"metric.reads names token id(s) {ids.tolist()} outside the vocabulary (0..{d_vocab - 1})"
                )
        if columns and has_unembed and ids is not None:
            compact = metric.compact()
            n_compact = None if compact is None else int(np.shape(compact[0])[0])
            if n_compact is not None and n_compact < d_vocab:
                return Readout(positions, None, n_pos, d_vocab, n_compact)
            cols = tuple(int(i) for i in dict.fromkeys(np.asarray(ids).tolist()))
    return Readout(positions, cols, n_pos, d_vocab)


def logit_columns(metric: Callable, readout: Readout):
    """The vocabulary columns a sweep unembeds for ``metric`` (``to_logits(resid,
    columns)``): the readout's static ``columns``, the metric's own (an int array, checked
    against the vocabulary) where the readout has ``n_columns``, or None (all)."""
    if readout.n_columns is None:
        return readout.columns
    columns, _ = as_metric(metric).compact()
    return check_ids(columns, readout.d_vocab, "metric token ids")


def evaluate_metric(
    metric: Callable, logits: Float[Array, "read cols"], readout: Readout, compact: bool = False
) -> Float[Array, ""]:
    """``metric`` on a ``[n_pos, d_vocab]`` view of the computed logits (NaN elsewhere).

    ``logits``: what `Transformer.run` returns for ``readout`` (``compact=False``), or,
    with ``compact=True``, the read positions' logits at `logit_columns` (for a readout
    with ``n_columns``: the metric's compact form then reads them directly, so no
    ``[pos, d_vocab]`` view is built)."""
    if compact and readout.n_columns is not None:
        metric, readout = as_metric(metric).compact()[1], Readout(readout.positions, None, readout.n_pos)
    if not readout.restricted:
        return check_scalar(metric(logits))
    if readout.columns is None:  # only positions restricted: the metric's own form for them
        on_positions = as_metric(metric).at_positions(readout.positions, readout.n_pos)
        if on_positions is not None:
            return check_scalar(on_positions(logits))
    # Which computed row / column each full index maps to (-1: not computed). Static
    # numpy tables, so this is a gather plus a select that XLA fuses into the reads.
    pos_slot = np.full(readout.n_pos, -1, np.int32)
    pos_slot[list(readout.positions)] = np.arange(len(readout.positions))
    full = logits[jnp.asarray(np.maximum(pos_slot, 0))]
    valid = jnp.asarray(pos_slot >= 0)[:, None]
    if readout.columns is not None:
        col_slot = np.full(readout.d_vocab, -1, np.int32)
        col_slot[list(readout.columns)] = np.arange(len(readout.columns))
        full = full[:, jnp.asarray(np.maximum(col_slot, 0))]
        valid = valid & jnp.asarray(col_slot >= 0)[None, :]
    return check_scalar(metric(jnp.where(valid, full, jnp.asarray(jnp.nan, full.dtype))))


def split_metric(metric: Callable, readout: Readout) -> tuple:
    """``(arrays, static)`` parts of ``metric`` for a compiled sweep (recombine with
    ``eqx.combine``). Its arrays (token ids, ...) are traced arguments, so a metric of
    other values reuses the program. Except where the readout computes only the
    metric's columns: those are static anyway, and with the ids as constants XLA folds
    the NaN-padded ``[pos, d_vocab]`` view into the few reads instead of building it,
    so the metric is passed whole (one program per metric object). A readout with
    ``n_columns`` (the metric's compact form reads its own columns) keeps the arrays
    traced: no view to fold, and other token ids reuse the program."""
    if readout.columns is not None:
        return None, _WholeMetric(metric)
    return eqx.partition(metric, eqx.is_array)


class _WholeMetric:
    """A metric passed whole as a static argument: hashed and compared by identity."""

    def __init__(self, metric: Callable):
        self.metric = metric

    def __hash__(self):
        return id(self.metric)

    def __eq__(self, other):
        return isinstance(other, _WholeMetric) and other.metric is self.metric

    def __call__(self, logits):
        return self.metric(logits)

    @property
    def reads(self):
        return as_metric(self.metric).reads
