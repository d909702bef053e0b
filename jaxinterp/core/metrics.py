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
compiled per function object); ``custom(fn, reads=...)`` declares what it reads.
"""

from __future__ import annotations

import abc
from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .errors import MetricError

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


class Custom(Metric):
    """A plain function as a metric, with what it reads declared (or None)."""

    fn: Callable = eqx.field(static=True)
    declared: Reads = eqx.field(static=True, default=None)

    def __call__(self, logits: Float[Array, "pos d_vocab"]) -> Float[Array, ""]:
        return self.fn(logits)

    @property
    def reads(self) -> Reads:
        return self.declared


def custom(fn: Callable, reads: Reads = None) -> Custom:
    """A plain function ``fn(logits) -> scalar`` as a `Metric`; ``reads = (pos, token
    ids or None)`` declares what it reads (the engines then compute only those logits,
    and give NaN elsewhere, so a metric that reads more shows up as an error)."""
    if not callable(fn):
        raise MetricError(f"a metric must be callable on logits [pos, d_vocab], got {type(fn).__name__}")
    if reads is not None:
        pos, ids = reads
        reads = (
            pos if isinstance(pos, int) else tuple(int(p) for p in pos),
            None if ids is None else tuple(int(i) for i in jnp.atleast_1d(jnp.asarray(ids)).tolist()),
        )
    return Custom(fn, reads)


def as_metric(metric) -> Metric:
    """``metric`` as a `Metric`: a `Metric` as it is, a plain function wrapped (reads
    nothing declared). The one place techniques turn what a user passed into a metric."""
    if isinstance(metric, Metric):
        return metric
    return custom(metric)


class LogitDiff(Metric):
    """``logits[pos, answer].sum() - logits[pos, wrong].sum()`` (see `logit_diff`)."""

    answer: Int[Array, " answer"]
    wrong: Int[Array, " wrong"]
    pos: int = eqx.field(static=True)

    def __call__(self, logits: Float[Array, "pos d_vocab"]) -> Float[Array, ""]:
        return logits[self.pos, self.answer].sum() - logits[self.pos, self.wrong].sum()

    @property
    def reads(self):
        return (self.pos, jnp.concatenate([self.answer, self.wrong]))


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


class TokenProb(Metric):
    """Probability (or, with ``log=True``, log-probability) of ``token`` at ``pos``,
    summed over a list of tokens (see `prob`, `log_prob`)."""

    token: Int[Array, "..."]
    pos: int = eqx.field(static=True)
    log: bool = eqx.field(static=True, default=False)

    def __call__(self, logits: Float[Array, "pos d_vocab"]) -> Float[Array, ""]:
        row = logits[self.pos].astype(jnp.float32)
        out = jax.nn.log_softmax(row) if self.log else jax.nn.softmax(row)
        return out[self.token].sum()

    @property
    def reads(self):
        return (self.pos, None)  # one position, every column (the softmax needs them all)


class KLTo(Metric):
    """``KL(reference || run)`` of the next-token distributions at ``pos`` (see `kl_to`);
    ``reference``: the reference run's log-probabilities ``[d_vocab]``."""

    reference: Float[Array, " d_vocab"]
    pos: int = eqx.field(static=True)

    def __call__(self, logits: Float[Array, "pos d_vocab"]) -> Float[Array, ""]:
        lp = jax.nn.log_softmax(logits[self.pos].astype(jnp.float32))
        return jnp.sum(jnp.exp(self.reference) * (self.reference - lp))

    @property
    def reads(self):
        return (self.pos, None)


def logit_diff(answer, wrong, pos: int = -1) -> LogitDiff:
    """``logits[pos, answer] - logits[pos, wrong]`` (summed over lists of tokens)."""
    return LogitDiff(jnp.atleast_1d(jnp.asarray(answer)), jnp.atleast_1d(jnp.asarray(wrong)), int(pos))


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
    return TokenProb(jnp.asarray(token), int(pos))


def log_prob(token, pos: int = -1) -> TokenProb:
    """Log-probability of ``token`` at ``pos``."""
    return TokenProb(jnp.asarray(token), int(pos), log=True)


def kl_to(reference_logits: Float[Array, "pos d_vocab"], pos: int = -1) -> KLTo:
    """``KL(reference || run)`` of the next-token distributions at ``pos``."""
    return KLTo(jax.nn.log_softmax(jnp.asarray(reference_logits)[pos].astype(jnp.float32)), int(pos))
