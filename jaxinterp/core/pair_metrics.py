"""Metrics per prompt pair: one `Metric` whose arrays carry a leading ``[pair]`` axis.

A dataset of clean/corrupted pairs usually needs a different metric for each pair (IOI:
each pair has its own indirect object, subject and, with padding, its own last
position). A `PairMetric` holds one metric of the usual kind (`jaxinterp.core.metrics`)
whose array leaves are stacked over pairs: pair ``i``'s metric is every leaf at ``i``
(`PairMetric.at`). The techniques `vmap` over that axis with the pairs, so a sweep over
64 pairs is one compiled program, and each pair is scored by its own metric::

    metric = pair_logit_diff(answer=io_ids, wrong=s_ids, pos=last)   # [pair] each
    metric = per_pair([logit_diff(a, w) for a, w in zip(io, s)])     # any metrics of one kind
    metric = pair_fn(lambda logits, a: logits[a["pos"], a["io"]] - logits[a["pos"], a["s"]],
                     {"pos": last, "io": io_ids, "s": s_ids}, pos=last)

A plain `Metric` (or function) given with a batch of pairs is the same metric for every
pair (`as_pair_metric`). What the sweep reads (``reads``) is the union over pairs, so
logits are computed at every pair's read position and each pair reads its own.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .errors import MetricError, PairBatchError
from .metrics import Metric, Reads, ReadsOrNaN, as_metric, check_ids, check_scalar

__all__ = [
    "PairMetric",
    "LogitDiffAt",
    "PairFn",
    "per_pair",
    "pair_logit_diff",
    "pair_fn",
    "as_pair_metric",
    "PairAt",
]


class PairMetric(eqx.Module):
    """A metric per pair: ``metric``'s array leaves are stacked ``[n_pairs, ...]``; pair
    ``i`` is scored by the same metric with every leaf at ``i`` (`at`)."""

    metric: Metric
    n_pairs: int = eqx.field(static=True)

    def __check_init__(self):
        if not isinstance(self.metric, Metric):
            raise MetricError(f"PairMetric holds a Metric with stacked arrays, got {type(self.metric).__name__}")
        for leaf in jax.tree_util.tree_leaves(self.metric):
            if eqx.is_array(leaf) and (leaf.ndim == 0 or leaf.shape[0] != self.n_pairs):
                raise PairBatchError(
                    f"a per-pair metric's arrays need a leading axis of one entry per pair ({self.n_pairs}); "
                    f"got an array of shape {leaf.shape}"
                )

    def at(self, pair: Int[Array, ""]) -> Metric:
        """The metric of pair ``pair`` (an int or a traced index)."""
        return jax.tree_util.tree_map(lambda a: a[pair] if eqx.is_array(a) else a, self.metric)

    def __call__(self, logits: Float[Array, "pair pos d_vocab"]) -> Float[Array, " pair"]:
        """Each pair's metric of its own logits ``[pair, pos, d_vocab]``: ``[pair]``."""
        arrays, static = eqx.partition(self.metric, eqx.is_array)
        return jax.vmap(lambda a, lg: check_scalar(eqx.combine(a, static)(lg)))(arrays, logits)

    @property
    def reads(self) -> Reads:
        """The union over pairs of what each pair's metric reads, ``(positions, token ids
        or None)``, or None if some pair may read anything. Read off the stacked metric
        (a built-in metric's ``reads`` of stacked arrays lists every pair's), flattened."""
        reads = self.metric.reads
        if reads is None:
            return None
        pos, ids = reads
        positions = tuple(int(p) for p in np.asarray(pos).reshape(-1).tolist())
        if ids is None:
            return positions, None
        return positions, tuple(dict.fromkeys(int(i) for i in np.asarray(ids).reshape(-1).tolist()))

    def read_positions(self) -> Optional[np.ndarray]:
        """Positions each pair reads, ``[pair, k]`` (negative ones count from the end), or
        None when undeclared. A position shared by every pair (a static ``pos``) repeats."""
        reads = self.metric.reads
        if reads is None:
            return None
        pos = np.asarray(reads[0])
        if pos.ndim >= 1 and pos.shape[0] == self.n_pairs:
            return pos.reshape(self.n_pairs, -1).astype(np.int64)
        return np.broadcast_to(pos.reshape(1, -1), (self.n_pairs, pos.size)).astype(np.int64)


class PairAt(Metric):
    """Pair ``pair``'s metric (a traced index is fine) with what it reads declared
    statically as ``declared`` (the union over pairs, computed on the host by
    `PairMetric.reads`): techniques that derive a readout from ``metric.reads`` inside
    their compiled program see concrete positions, not the traced per-pair ones."""

    pairs: PairMetric
    pair: Int[Array, ""]
    declared: Reads = eqx.field(static=True, default=None)

    def __call__(self, logits: Float[Array, "pos d_vocab"]) -> Float[Array, ""]:
        return self.pairs.at(self.pair)(logits)

    @property
    def reads(self) -> Reads:
        return self.declared

    def at_positions(self, positions: tuple[int, ...], n_pos: int) -> Optional[Metric]:
        return self.pairs.at(self.pair).at_positions(positions, n_pos)


class LogitDiffAt(Metric):
    """``logits[pos, answer].sum() - logits[pos, wrong].sum()`` with ``pos`` an array (a
    different position per pair: see `pair_logit_diff`); negative counts from the end."""

    # Stacked over pairs in a `PairMetric`: a leading pair axis on every field.
    answer: Int[Array, "*pair answer"]
    wrong: Int[Array, "*pair wrong"]
    pos: Int[Array, "*pair"]

    def __call__(self, logits: Float[Array, "pos d_vocab"]) -> Float[Array, ""]:
        answer = check_ids(self.answer, logits.shape[-1], "pair_logit_diff answer")
        wrong = check_ids(self.wrong, logits.shape[-1], "pair_logit_diff wrong")
        row = jnp.take(logits, self.pos % logits.shape[0], axis=0)
        return row[answer].sum() - row[wrong].sum()

    @property
    def reads(self):
        return (self.pos, jnp.concatenate([self.answer, self.wrong], axis=-1))

    def at_positions(self, positions: tuple[int, ...], n_pos: int) -> Metric:
        # Each position's row among ``positions`` (-1: not among them); ``pos`` is data.
        slot_of = np.full(n_pos, -1, np.int32)
        slot_of[list(positions)] = np.arange(len(positions), dtype=np.int32)
        slot = jnp.asarray(slot_of)[self.pos % n_pos]
        return ReadsOrNaN(LogitDiffAt(self.answer, self.wrong, jnp.maximum(slot, 0)), slot >= 0)


class PairFn(Metric):
    """``fn(logits, args)`` with ``args`` a pytree of arrays (see `pair_fn`); ``read_pos``
    declares the position(s) read (None: anything)."""

    fn: Callable = eqx.field(static=True)
    leaves: tuple  # args flattened (a tuple, so the program's static part hashes)
    treedef: object = eqx.field(static=True)
    read_pos: Optional[Array] = None

    @property
    def args(self):
        return jax.tree_util.tree_unflatten(self.treedef, self.leaves)

    def __call__(self, logits: Float[Array, "pos d_vocab"]) -> Float[Array, ""]:
        return check_scalar(self.fn(logits, self.args), "pair_fn's function")

    @property
    def reads(self) -> Reads:
        return None if self.read_pos is None else (self.read_pos, None)


def _pair_ids(ids, n_pairs: Optional[int], what: str) -> Int[Array, "pair k"]:
    arr = jnp.asarray(ids)
    if not jnp.issubdtype(arr.dtype, jnp.integer):
        raise MetricError(f"{what} must be int token ids, one (or a row) per pair, got dtype {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise MetricError(f"{what} must be token ids [pair] or [pair, k], got shape {arr.shape}")
    if n_pairs is not None and arr.shape[0] != n_pairs:
        raise PairBatchError(f"{what} has {arr.shape[0]} entries but the other arguments have {n_pairs} pairs")
    return arr.reshape(arr.shape[0], -1)


def pair_logit_diff(answer, wrong, pos=-1) -> PairMetric:
    """Per pair ``logits[pos, answer] - logits[pos, wrong]``: ``answer`` / ``wrong`` int
    ``[pair]`` (or ``[pair, k]``, summed), ``pos`` one int for every pair or ``[pair]``
    (e.g. each padded prompt's last real token, ``attention_mask.sum(1) - 1``)."""
    answer = _pair_ids(answer, None, "pair_logit_diff answer")
    n = answer.shape[0]
    wrong = _pair_ids(wrong, n, "pair_logit_diff wrong")
    pos = jnp.asarray(pos)
    if not jnp.issubdtype(pos.dtype, jnp.integer):
        raise MetricError(f"pair_logit_diff: pos must be int position(s), got dtype {pos.dtype}")
    if pos.ndim == 0:
        pos = jnp.full((n,), pos)
    if pos.shape != (n,):
        raise PairBatchError(f"pair_logit_diff: pos must be one int or one per pair [{n}], got shape {pos.shape}")
    return PairMetric(LogitDiffAt(answer, wrong, pos.astype(jnp.int32)), n)


def pair_fn(fn: Callable, args, pos=None) -> PairMetric:
    """A function of one pair's logits and its own arrays: ``fn(logits [pos, d_vocab],
    args_i) -> scalar``, where ``args`` is a pytree of arrays stacked ``[pair, ...]`` and
    ``args_i`` the entries of pair ``i``. ``pos`` (one int or ``[pair]``) declares the
    position each pair reads, so sweeps compute logits only there; None: anything."""
    if not callable(fn):
        raise MetricError(f"pair_fn needs a function (logits, args) -> scalar, got {type(fn).__name__}")
    leaves = [jnp.asarray(x) for x in jax.tree_util.tree_leaves(args)]
    if not leaves:
        raise MetricError("pair_fn needs per-pair arrays in args (a leading [pair] axis) to know the pairs")
    n = leaves[0].shape[0] if leaves[0].ndim else 0
    args = jax.tree_util.tree_map(jnp.asarray, args)
    read_pos = None
    if pos is not None:
        read_pos = jnp.asarray(pos, jnp.int32)
        read_pos = jnp.full((n,), read_pos) if read_pos.ndim == 0 else read_pos
    leaves, treedef = jax.tree_util.tree_flatten(args)
    return PairMetric(PairFn(fn, tuple(leaves), treedef, read_pos), n)


def per_pair(metrics: Sequence[Callable]) -> PairMetric:
    """One metric per pair (metrics of one kind: same class, same static fields such as
    a `logit_diff`'s position, arrays of equal shapes), stacked into a `PairMetric`."""
    metrics = [as_metric(m) for m in metrics]
    if not metrics:
        raise MetricError("per_pair needs at least one metric")
    structure = jax.tree_util.tree_structure(metrics[0])
    for i, m in enumerate(metrics[1:], start=1):
        if jax.tree_util.tree_structure(m) != structure:
            raise MetricError(
                f"per_pair: metric {i} differs in kind or static fields from metric 0 ({type(m).__name__} vs "
                f"{type(metrics[0]).__name__}); per-pair positions need pair_logit_diff(..., pos=[...]) or pair_fn"
            )
    shapes = [[jnp.shape(x) for x in jax.tree_util.tree_leaves(m)] for m in metrics]
    if any(s != shapes[0] for s in shapes):
        raise MetricError("per_pair: the metrics' arrays differ in shape (e.g. answer lists of different lengths)")
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *metrics)
    return PairMetric(stacked, len(metrics))


def as_pair_metric(metric, n_pairs: int) -> PairMetric:
    """``metric`` for ``n_pairs`` pairs: a `PairMetric` as it is (checked), anything else
    (a `Metric`, a plain function) the same metric for every pair."""
    if isinstance(metric, PairMetric):
        if metric.n_pairs != n_pairs:
            raise PairBatchError(
                f"the per-pair metric is for {metric.n_pairs} pairs but the tokens hold {n_pairs} pairs"
            )
        return metric
    if not callable(metric):
        raise MetricError(f"a metric must be callable on logits [pos, d_vocab], got {type(metric).__name__}")
    metric = as_metric(metric)
    stacked = jax.tree_util.tree_map(
        lambda a: jnp.broadcast_to(a, (n_pairs,) + a.shape) if eqx.is_array(a) else a, metric
    )
    return PairMetric(stacked, n_pairs)
