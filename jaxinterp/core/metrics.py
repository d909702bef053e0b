"""Metrics: functions of one example's logits ``[pos, d_vocab]`` to a scalar.

Every metric is a `Metric`: an Equinox module with ``__call__(logits)`` and a declared
``reads = (pos, token_ids or None)`` (what it reads, so sweeps compute logits only there;
None: every column at that position) or ``reads = None`` (it may read anything). Each
constructor returns one, ready for sweeps, attribution and ``jax.grad``::

    metric = logit_diff(answer=mary, wrong=john)     # at the last position
    metric(model(tokens))

The metrics are Equinox modules (pytrees): their token ids, reference values and
distributions are array leaves, so a sweep compiled for one metric is reused for
another of the same kind and shape (other answer tokens, another normalisation)
instead of compiling again. Any plain function works too (`as_metric` wraps it; it is
compiled per function object): what it reads is inferred from its program
(`jaxinterp.core.metric_reads`), or declared with ``custom(fn, reads=...)``.
"""

from __future__ import annotations

import abc
from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .errors import MetricError
from .metric_reads import infer_reads

Reads = Optional[tuple]


class Metric(eqx.Module):
    """Abstract: a scalar function of one example's logits ``[pos, d_vocab]`` that
    declares what it reads."""

    @abc.abstractmethod
    def __call__(self, logits: Float[Array, "pos d_vocab"]) -> Float[Array, ""]:
        """The metric's value."""

    @property
    @abc.abstractmethod
    def reads(self) -> Reads:
        """``(positions, token ids or None)`` the metric reads, or None (anything)."""

    def reads_for(self, n_pos: int, d_vocab: int) -> Reads:
        """What the metric reads of logits ``[n_pos, d_vocab]``: its declared `reads`
        (metrics that declare nothing may work it out from the shape, as `Custom` does)."""
        return self.reads

    def compact(self) -> Optional[tuple]:
        """``(columns [n], metric')`` where ``metric'`` of logits with only those ``n``
        vocabulary columns, in that order, equals this metric of the full logits, or None.

        The columns are array data (traced in a compiled sweep; only their number is
        static), so shortcut sweeps that compute only these columns reuse one program
        for metrics of other token ids. Default: None (no such form)."""
        return None

    def at_positions(self, positions: tuple[int, ...], n_pos: int) -> Optional["Metric"]:
        """A metric of the logits at ``positions`` only (``[len(positions), ...]``, in
        that order, of a sequence of ``n_pos``) equal to this metric of the full logits,
        and NaN where this metric reads a position outside them; or None (no such form).

        `evaluate_metric` then skips the NaN-padded ``[n_pos, d_vocab]`` view. That view
        is free when the positions read are static (XLA folds it into the reads), but a
        metric whose position is array data (a `PairMetric` pair's own position, under a
        `vmap` over rows) made XLA build it for every row. Default: None."""
        return None


class Custom(Metric):
    """A plain function as a metric, with what it reads declared (or None: then
    `reads_for` infers it from the function's program, `jaxinterp.core.metric_reads`)."""

    fn: Callable = eqx.field(static=True)
    declared: Reads = eqx.field(static=True, default=None)
    infer: bool = eqx.field(static=True, default=True)

    def __call__(self, logits: Float[Array, "pos d_vocab"]) -> Float[Array, ""]:
        return check_scalar(self.fn(logits))

    @property
    def reads(self) -> Reads:
        return self.declared

    def reads_for(self, n_pos: int, d_vocab: int) -> Reads:
        """The declared reads, else those inferred from ``fn``'s jaxpr (None -- every
        logit -- where they cannot be established; a WARNING line on the
        ``jaxinterp.metrics`` logger then says why, once per function and shape)."""
        if self.declared is not None or not self.infer:
            return self.declared
        return infer_reads(self.fn, n_pos, d_vocab).reads


def custom(fn: Callable, reads: Reads = None, infer: bool = True) -> Custom:
    """A plain function ``fn(logits) -> scalar`` as a `Metric`; ``reads = (pos, token
    ids or None)`` declares what it reads (the engines then compute only those logits,
    and give NaN elsewhere, so a metric that reads more shows up as an error). Without
    ``reads``, what it reads is inferred from its jaxpr (`jaxinterp.core.metric_reads`);
    ``infer=False`` turns that off (every logit is computed)."""
    if not callable(fn):
        raise MetricError(f"a metric must be callable on logits [pos, d_vocab], got {type(fn).__name__}")
    if reads is not None:
        pos, ids = reads
        reads = (
            pos if isinstance(pos, int) else tuple(int(p) for p in pos),
            None if ids is None else tuple(int(i) for i in jnp.atleast_1d(jnp.asarray(ids)).tolist()),
        )
    return Custom(fn, reads, infer)


def as_metric(metric) -> Metric:
    """``metric`` as a `Metric`: a `Metric` as it is, a plain function wrapped (what it
    reads inferred from its program, see `Custom.reads_for`). The one place techniques
    turn what a user passed into a metric."""
    if isinstance(metric, Metric):
        return metric
    return custom(metric)


def check_ids(ids: Int[Array, "..."], d_vocab: int, what: str) -> Int[Array, "..."]:
    """``ids`` after checking each lies in ``0 .. d_vocab-1``: concrete ids raise
    `MetricError` naming the id; traced ones (a metric's arrays are traced in sweeps)
    through `eqx.error_if` when the program runs (indexing would clamp them silently)."""
    if isinstance(ids, jax.core.Tracer):
        outside = (ids < 0) | (ids >= d_vocab)
        return eqx.error_if(ids, outside, f"{what}: a token id is outside the vocabulary (0..{d_vocab - 1})")
    arr = np.asarray(ids)
    bad = (arr < 0) | (arr >= d_vocab)
    if bad.any():
        raise MetricError(
            f"{what}: token id {int(arr[bad].reshape(-1)[0])} is outside the vocabulary: the logits have "
            f"d_vocab={d_vocab} columns (ids 0..{d_vocab - 1})"
        )
    return ids


def check_pos(pos: int, n_pos: int, what: str) -> None:
    """A metric's (static) position must index the logits' ``n_pos`` rows (Python-style negatives)."""
    if not -n_pos <= pos < n_pos:
        raise MetricError(f"{what}: pos={pos} is out of range for logits of {n_pos} positions ({-n_pos}..{n_pos - 1})")


def check_scalar(value, what: str = "the metric"):
    """A metric's value must be a scalar: `MetricError` naming what it returned otherwise."""
    if value is None:
        raise MetricError(f"{what} returned None; a metric must return a scalar (e.g. a logit difference)")
    shape = jnp.shape(value)
    if shape != ():
        raise MetricError(
            f"{what} returned an array of shape {shape}; a metric must return a scalar of one example's logits "
            "(reduce it, e.g. .sum() or index one position)"
        )
    return value


class LogitDiff(Metric):
    """``logits[pos, answer].sum() - logits[pos, wrong].sum()`` (see `logit_diff`)."""

    answer: Int[Array, " answer"]
    wrong: Int[Array, " wrong"]
    pos: int = eqx.field(static=True)

    def __call__(self, logits: Float[Array, "pos d_vocab"]) -> Float[Array, ""]:
        check_pos(self.pos, logits.shape[0], "logit_diff")
        answer = check_ids(self.answer, logits.shape[-1], "logit_diff answer")
        wrong = check_ids(self.wrong, logits.shape[-1], "logit_diff wrong")
        return logits[self.pos, answer].sum() - logits[self.pos, wrong].sum()

    @property
    def reads(self):
        return (self.pos, jnp.concatenate([self.answer, self.wrong]))

    def compact(self) -> tuple:
        n_answer, n_wrong = self.answer.shape[0], self.wrong.shape[0]
        slots = jnp.arange(n_answer + n_wrong)
        return jnp.concatenate([self.answer, self.wrong]), LogitDiff(slots[:n_answer], slots[n_answer:], self.pos)


class Normalized(Metric):
    """``(metric(logits) - corrupted) / (clean - corrupted)`` (see `normalized`)."""

    metric: Metric
    clean: Float[Array, ""]
    corrupted: Float[Array, ""]

    def __call__(self, logits: Float[Array, "pos d_vocab"]) -> Float[Array, ""]:
        return (self.metric(logits) - self.corrupted) / (self.clean - self.corrupted)

    @property
    def reads(self):
        return self.metric.reads

    def reads_for(self, n_pos: int, d_vocab: int) -> Reads:
        return self.metric.reads_for(n_pos, d_vocab)

    def compact(self) -> Optional[tuple]:
        inner = self.metric.compact()
        return None if inner is None else (inner[0], Normalized(inner[1], self.clean, self.corrupted))

    def at_positions(self, positions: tuple[int, ...], n_pos: int) -> Optional[Metric]:
        inner = self.metric.at_positions(positions, n_pos)
        return None if inner is None else Normalized(inner, self.clean, self.corrupted)


class ReadsOrNaN(Metric):
    """``metric`` where ``ok``, else NaN: the form `Metric.at_positions` returns when the
    position a metric reads is array data, so it is known only when the metric runs."""

    metric: Metric
    ok: Bool[Array, ""]

    def __call__(self, logits: Float[Array, "pos d_vocab"]) -> Float[Array, ""]:
        value = self.metric(logits)
        return jnp.where(self.ok, value, jnp.asarray(jnp.nan, value.dtype))

    @property
    def reads(self) -> Reads:
        return self.metric.reads


class TokenProb(Metric):
    """Probability (or, with ``log=True``, log-probability) of ``token`` at ``pos``,
    summed over a list of tokens (see `prob`, `log_prob`)."""

    token: Int[Array, "..."]
    pos: int = eqx.field(static=True)
    log: bool = eqx.field(static=True, default=False)

    def __call__(self, logits: Float[Array, "pos d_vocab"]) -> Float[Array, ""]:
        what = "log_prob" if self.log else "prob"
        check_pos(self.pos, logits.shape[0], what)
        token = check_ids(self.token, logits.shape[-1], f"{what} token")
        row = logits[self.pos].astype(jnp.float32)
        out = jax.nn.log_softmax(row) if self.log else jax.nn.softmax(row)
        return out[token].sum()

    @property
    def reads(self):
        return (self.pos, None)  # one position, every column (the softmax needs them all)


class KLTo(Metric):
    """``KL(reference || run)`` of the next-token distributions at ``pos`` (see `kl_to`);
    ``reference``: the reference run's log-probabilities ``[d_vocab]``."""

    reference: Float[Array, " d_vocab"]
    pos: int = eqx.field(static=True)

    def __call__(self, logits: Float[Array, "pos d_vocab"]) -> Float[Array, ""]:
        check_pos(self.pos, logits.shape[0], "kl_to")
        if self.reference.shape != logits.shape[-1:]:
            raise MetricError(
                f"kl_to: the reference distribution has shape {self.reference.shape}, the logits "
                f"{logits.shape[-1]} columns: give reference logits of the same model"
            )
        lp = jax.nn.log_softmax(logits[self.pos].astype(jnp.float32))
        return jnp.sum(jnp.exp(self.reference) * (self.reference - lp))

    @property
    def reads(self):
        return (self.pos, None)


def _token_ids(ids, what: str) -> Int[Array, "..."]:
    arr = jnp.asarray(ids)
    if not jnp.issubdtype(arr.dtype, jnp.integer):
        raise MetricError(f"{what} must be int token id(s), got dtype {arr.dtype}")
    return arr


def _position(pos, what: str) -> int:
    if isinstance(pos, bool) or not isinstance(pos, (int, np.integer)):
        raise MetricError(f"{what}: pos must be one int position (negative counts from the end), got {pos!r}")
    return int(pos)


def logit_diff(answer, wrong, pos: int = -1) -> LogitDiff:
    """``logits[pos, answer] - logits[pos, wrong]`` (summed over lists of tokens)."""
    return LogitDiff(
        jnp.atleast_1d(_token_ids(answer, "logit_diff answer")),
        jnp.atleast_1d(_token_ids(wrong, "logit_diff wrong")),
        _position(pos, "logit_diff"),
    )


def normalized(metric: Metric, clean_value, corrupted_value) -> Normalized:
    """Rescale so the corrupted run scores 0 and the clean run scores 1."""
    clean_value, corrupted_value = float(clean_value), float(corrupted_value)
    if clean_value == corrupted_value:
        raise MetricError("clean and corrupted runs score the same: cannot normalise")
    return Normalized(
        as_metric(metric), jnp.asarray(clean_value, jnp.float32), jnp.asarray(corrupted_value, jnp.float32)
    )


def normalized_logit_diff(answer, wrong, clean_logits, corrupted_logits, pos: int = -1) -> Normalized:
    """Logit difference scaled to 0 (corrupted run) .. 1 (clean run)."""
    base = logit_diff(answer, wrong, pos)
    return normalized(base, base(clean_logits), base(corrupted_logits))


def prob(token, pos: int = -1) -> TokenProb:
    """Probability of ``token`` at ``pos``."""
    return TokenProb(_token_ids(token, "prob token"), _position(pos, "prob"))


def log_prob(token, pos: int = -1) -> TokenProb:
    """Log-probability of ``token`` at ``pos``."""
    return TokenProb(_token_ids(token, "log_prob token"), _position(pos, "log_prob"), log=True)


def kl_to(reference_logits: Float[Array, "pos d_vocab"], pos: int = -1) -> KLTo:
    """``KL(reference || run)`` of the next-token distributions at ``pos``."""
    return KLTo(jax.nn.log_softmax(jnp.asarray(reference_logits)[pos].astype(jnp.float32)), int(pos))
