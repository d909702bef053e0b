"""Synthetic token sequences with known structure, for training toys and for detectors."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from jaxtyping import Array, Int, PRNGKeyArray

from ..core.errors import JaxinterpError

__all__ = ["repeated_random_tokens"]


def repeated_random_tokens(
    key: PRNGKeyArray, d_vocab: int, seq_len: int, batch: int, bos: Optional[int] = None, low: int = 0
) -> Int[Array, "batch pos"]:
    """``batch`` sequences of ``seq_len`` uniform random tokens from ``[low, d_vocab)``,
    each followed by an exact copy: ``[batch, 2 * seq_len]`` (``+ 1`` with a ``bos``
    token prepended). ``low`` lets you skip special tokens at the start of a vocabulary."""
    if not 0 <= low < d_vocab:
        raise JaxinterpError(f"low must be in 0..d_vocab-1 ({d_vocab - 1}), got {low}")
    half = jax.random.randint(key, (batch, seq_len), low, d_vocab)
    tokens = jnp.concatenate([half, half], axis=1)
    if bos is not None:
        tokens = jnp.concatenate([jnp.full((batch, 1), bos, tokens.dtype), tokens], axis=1)
    return tokens
