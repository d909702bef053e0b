"""Head detectors: score every attention head by where it attends on chosen inputs.

A detector is a mask over ``[query_pos, key_pos]`` saying where a head of a given kind
should look; a head's score is the attention mass it puts on the mask, averaged over
the query positions where the mask is non-empty (and over the batch). Scores are in
``[0, 1]``; 1 means the head attends only where the mask says. Three classic masks:

- previous token: key ``q - 1``;
- duplicate token: earlier positions holding the same token as the query;
- induction: positions right *after* an earlier occurrence of the query's token
  (``[A][B] ... [A] -> attend to [B]``), best measured on repeated random tokens,
  where nothing but induction predicts the second half.

Each returns a `LabelledArray` ``[layer, head]``::

    tokens = repeated_random_tokens(jax.random.key(0), model.cfg.d_vocab, seq_len=20, batch=8)
    induction_scores(model, tokens).argmax()      # {"layer": 1, "head": 3}
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from ..core.labelled import LabelledArray
from ..model import Transformer
from ..toy.sequences import repeated_random_tokens

__all__ = [
    "repeated_random_tokens",
    "previous_token_mask",
    "duplicate_token_mask",
    "induction_mask",
    "attention_mass_scores",
    "head_detector_scores",
    "previous_token_scores",
    "duplicate_token_scores",
    "induction_scores",
]

Mask = Bool[Array, "query_pos key_pos"]


def previous_token_mask(tokens: Int[Array, " pos"]) -> Mask:
    """Key ``q - 1`` for every query ``q >= 1``."""
    n = tokens.shape[-1]
    q, k = jnp.arange(n)[:, None], jnp.arange(n)[None, :]
    return k == q - 1


def duplicate_token_mask(tokens: Int[Array, " pos"]) -> Mask:
    """Earlier keys holding the same token as the query."""
    n = tokens.shape[-1]
    q, k = jnp.arange(n)[:, None], jnp.arange(n)[None, :]
    return (tokens[None, :] == tokens[:, None]) & (k < q)


def induction_mask(tokens: Int[Array, " pos"]) -> Mask:
    """Keys ``k`` whose previous token ``tokens[k - 1]`` is an earlier occurrence of the
    query's token: where an induction head looks to copy what came next last time."""
    n = tokens.shape[-1]
    q, k = jnp.arange(n)[:, None], jnp.arange(n)[None, :]
    prev = jnp.concatenate([jnp.full((1,), -1, tokens.dtype), tokens[:-1]])  # tokens[k - 1]
    return (prev[None, :] == tokens[:, None]) & (k >= 1) & (k - 1 < q)


def attention_mass_scores(
    pattern: Float[Array, "layer batch head query_pos key_pos"], mask: Bool[Array, "batch query_pos key_pos"]
) -> Float[Array, "layer head"]:
    """Attention mass on ``mask``, averaged over the (batch, query) rows where the mask
    has at least one key. Raises if the mask is empty everywhere."""
    mask = jnp.asarray(mask)
    rows = mask.any(-1)  # [batch, query_pos]
    n_rows = rows.sum()
    if not isinstance(n_rows, jax.core.Tracer) and int(n_rows) == 0:
        raise ValueError(
            "the detector's mask selects no keys for any query: nothing to score (e.g. no repeated tokens)"
        )
    mass = jnp.einsum("lbhqk,bqk->lbhq", pattern.astype(jnp.float32), mask.astype(jnp.float32))
    return jnp.einsum("lbhq,bq->lh", mass, rows.astype(jnp.float32)) / n_rows


def head_detector_scores(
    model: Transformer,
    tokens: Int[Array, "... pos"],
    mask_fn: Callable[[Int[Array, " pos"]], Mask],
    name: str = "detector score",
    cache=None,
) -> LabelledArray:
    """Score every head by its attention mass on ``mask_fn(tokens)`` (a ``[query_pos,
    key_pos]`` bool mask per sequence). ``cache``: a batched `ActivationCache` holding
    ``attn.pattern`` for these tokens, to skip the forward pass."""
    tokens = jnp.asarray(tokens)
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [pos] or [batch, pos], got shape {tokens.shape}")
    if cache is None:
        _, cache = model.run_with_cache(tokens, names=["attn.pattern"])
    pattern = cache["attn.pattern"]
    if pattern.ndim != 5:
        raise ValueError(f"expected a batched attn.pattern [layer, batch, head, q, k], got shape {pattern.shape}")
    scores = attention_mass_scores(pattern, jax.vmap(mask_fn)(tokens))
    return LabelledArray(np.asarray(scores), ("layer", "head"), name=name)


def previous_token_scores(model: Transformer, tokens: Int[Array, "... pos"], cache=None) -> LabelledArray:
    """Attention mass on the previous position, per head ``[layer, head]``."""
    return head_detector_scores(model, tokens, previous_token_mask, "previous-token score", cache)


def duplicate_token_scores(model: Transformer, tokens: Int[Array, "... pos"], cache=None) -> LabelledArray:
    """Attention mass on earlier copies of the query's token, per head ``[layer, head]``.
    Use inputs with repeats (e.g. `repeated_random_tokens`)."""
    return head_detector_scores(model, tokens, duplicate_token_mask, "duplicate-token score", cache)


def induction_scores(
    model: Transformer,
    tokens: Optional[Int[Array, "... pos"]] = None,
    cache=None,
    *,
    key: Optional[PRNGKeyArray] = None,
    seq_len: Optional[int] = None,
    batch: int = 8,
) -> LabelledArray:
    """Attention mass on the token after an earlier occurrence of the query's token, per
    head ``[layer, head]``. Without ``tokens``, uses `repeated_random_tokens` (``key``
    default ``jax.random.key(0)``, ``seq_len`` default ``min(n_ctx // 2, 50)``)."""
    if tokens is None:
        seq_len = seq_len or min(model.cfg.n_ctx // 2, 50)
        key = jax.random.key(0) if key is None else key
        tokens = repeated_random_tokens(key, model.cfg.d_vocab, seq_len, batch)
    return head_detector_scores(model, tokens, induction_mask, "induction score", cache)
