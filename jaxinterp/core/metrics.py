"""Metrics: functions of one example's logits ``[pos, d_vocab]`` to a scalar.

Each constructor returns such a function, ready for sweeps, attribution and
``jax.grad``. ``metric.reads = (pos, token_ids or None)`` declares what it reads, so
sweeps compute logits only there (None: every column at that position)::

    metric = logit_diff(answer=mary, wrong=john)     # at the last position
    metric(model(tokens))

The metrics are Equinox modules (pytrees): their token ids, reference values and
distributions are array leaves, so a sweep compiled for one metric is reused for
another of the same kind and shape (other answer tokens, another normalisation)
instead of compiling again. Any plain function works too (it is compiled per function
object); give it a ``reads`` attribute to get the savings.
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

Metric = Callable[[Float[Array, "pos d_vocab"]], Float[Array, ""]]


class LogitDiff(eqx.Module):
    """``logits[pos, answer].sum() - logits[pos, wrong].sum()`` (see `logit_diff`)."""

    answer: Int[Array, " answer"]
    wrong: Int[Array, " wrong"]
    pos: int = eqx.field(static=True)

    def __call__(self, logits: Float[Array, "pos d_vocab"]) -> Float[Array, ""]:
        return logits[self.pos, self.answer].sum() - logits[self.pos, self.wrong].sum()

    @property
    def reads(self):
        return (self.pos, jnp.concatenate([self.answer, self.wrong]))


class Normalized(eqx.Module):
    """``(metric(logits) - corrupted) / (clean - corrupted)`` (see `normalized`)."""

    metric: Metric
    clean: Float[Array, ""]
    corrupted: Float[Array, ""]

    def __call__(self, logits: Float[Array, "pos d_vocab"]) -> Float[Array, ""]:
        return (self.metric(logits) - self.corrupted) / (self.clean - self.corrupted)

    @property
    def reads(self):
        return getattr(self.metric, "reads", None)


class TokenProb(eqx.Module):
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


class KLTo(eqx.Module):
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
        raise ValueError("clean and corrupted runs score the same: cannot normalise")
    return Normalized(metric, jnp.asarray(clean_value, jnp.float32), jnp.asarray(corrupted_value, jnp.float32))


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
