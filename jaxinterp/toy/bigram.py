"""Bigram statistics of a token stream, and how far a model's next-token distribution is
from them.

A 0-layer transformer (`jaxinterp.toy.lm.bigram_config`) sees only the current token, so
its best possible next-token distribution is the corpus' empirical bigram distribution
``P(next | current) = count(current, next) / count(current)``; its training loss is
``H(next | current) + KL``, with `bigram_kl` the frequency-weighted KL divergence
``sum_c f(c) KL(P_emp(. | c) || P_model(. | c))``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float, Int

from jaxinterp import Transformer

__all__ = ["bigram_counts", "bigram_entropy", "model_next_token_logprobs", "bigram_kl"]


def bigram_counts(tokens: Int[np.ndarray, " tokens"], d_vocab: int) -> Float[np.ndarray, "d_vocab d_vocab"]:
    """``counts[c, n]``: how often token ``n`` follows token ``c`` in ``tokens`` (float64)."""
    tokens = np.asarray(tokens, np.int64)
    flat = tokens[:-1] * d_vocab + tokens[1:]
    return np.bincount(flat, minlength=d_vocab * d_vocab).reshape(d_vocab, d_vocab).astype(np.float64)


def bigram_entropy(counts: Float[np.ndarray, "d_vocab d_vocab"]) -> float:
    """``H(next | current)`` in nats of the empirical bigram distribution."""
    total = counts.sum()
    row = counts.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(counts > 0, counts / row, 1.0)
    return float(-(counts * np.log(p)).sum() / total)


def model_next_token_logprobs(model: Transformer) -> Float[np.ndarray, "d_vocab d_vocab"]:
    """``log P_model(next | current)`` for every current token of a model whose output at
    a position depends on that position's token only (a 0-layer model without positions):
    the logits of every vocabulary token, each as a one-token sequence."""
    vocab = jnp.arange(model.cfg.d_vocab)[:, None]  # [d_vocab, 1]: each token alone
    logits = model(vocab)[:, 0]
    return np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), np.float64)


def bigram_kl(
    counts: Float[np.ndarray, "d_vocab d_vocab"], model_logprobs: Float[np.ndarray, "d_vocab d_vocab"]
) -> float:
    """``sum_c f(c) KL(P_emp(. | c) || P_model(. | c))`` in nats, ``f(c)`` the frequency of
    ``c`` as a current token (rows never seen count zero)."""
    counts = np.asarray(counts, np.float64)
    row = counts.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_emp = np.where(counts > 0, np.log(counts / row), 0.0)
    return float((counts * (log_emp - np.asarray(model_logprobs, np.float64))).sum() / counts.sum())
