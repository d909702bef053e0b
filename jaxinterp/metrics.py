"""Metrics: plain functions of one example's logits ``[pos, d_vocab]`` to a scalar.

Each constructor returns such a function, ready for sweeps, attribution and
``jax.grad``. ``metric.reads = (pos, token_ids or None)`` declares what it reads, so
sweeps compute logits only there (None: every column at that position)::

    metric = logit_diff(answer=mary, wrong=john)     # at the last position
    metric(model(tokens))
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

Metric = Callable[[Float[Array, "pos d_vocab"]], Float[Array, ""]]


def logit_diff(answer, wrong, pos: int = -1) -> Metric:
    """``logits[pos, answer] - logits[pos, wrong]`` (summed over lists of tokens)."""
    answer, wrong = jnp.atleast_1d(jnp.asarray(answer)), jnp.atleast_1d(jnp.asarray(wrong))

    def metric(logits):
        return logits[pos, answer].sum() - logits[pos, wrong].sum()

    metric.reads = (pos, jnp.concatenate([answer, wrong]))
    return metric


def normalized(metric: Metric, clean_value, corrupted_value) -> Metric:
    """Rescale so the corrupted run scores 0 and the clean run scores 1."""
    clean_value, corrupted_value = float(clean_value), float(corrupted_value)
    span = clean_value - corrupted_value
    if span == 0:
        raise ValueError("clean and corrupted runs score the same: cannot normalise")

    def norm_metric(logits):
        return (metric(logits) - corrupted_value) / span

    if hasattr(metric, "reads"):
        norm_metric.reads = metric.reads
    return norm_metric


def normalized_logit_diff(answer, wrong, clean_logits, corrupted_logits, pos: int = -1) -> Metric:
    """Logit difference scaled to 0 (corrupted run) .. 1 (clean run)."""
    base = logit_diff(answer, wrong, pos)
    return normalized(base, base(clean_logits), base(corrupted_logits))


def prob(token, pos: int = -1) -> Metric:
    """Probability of ``token`` at ``pos``."""

    def metric(logits):
        return jax.nn.softmax(logits[pos].astype(jnp.float32))[token].sum()

    metric.reads = (pos, None)  # one position, every column (the softmax needs them all)
    return metric


def log_prob(token, pos: int = -1) -> Metric:
    """Log-probability of ``token`` at ``pos``."""

    def metric(logits):
        return jax.nn.log_softmax(logits[pos].astype(jnp.float32))[token].sum()

    metric.reads = (pos, None)
    return metric


def kl_to(reference_logits: Float[Array, "pos d_vocab"], pos: int = -1) -> Metric:
    """``KL(reference || run)`` of the next-token distributions at ``pos``."""
    ref = jax.nn.log_softmax(jnp.asarray(reference_logits)[pos].astype(jnp.float32))

    def metric(logits):
        lp = jax.nn.log_softmax(logits[pos].astype(jnp.float32))
        return jnp.sum(jnp.exp(ref) * (ref - lp))

    metric.reads = (pos, None)
    return metric
