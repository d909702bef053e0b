"""A two-layer attention-only transformer trained on repeated random tokens.

The smallest setting where induction heads form ("In-context Learning and Induction
Heads", Olsson et al. 2022): random tokens that repeat. Once a segment has been seen,
each next token is predictable only by looking back at what followed the previous
occurrence of the current token, which takes a previous-token head in layer 0
composed (via its keys: K-composition) with an induction head in layer 1.

The training sequences repeat with a random period per sequence. With a fixed period
(always ``seq_len``) a single layer-0 head can cheat by attending a fixed number of
positions back; a random period leaves induction as the only general solution. A few
hundred optax steps on a CPU suffice::

    model, losses = train_induction_model(jax.random.key(0))
    tokens = repeated_random_tokens(jax.random.key(1), d_vocab=model.cfg.d_vocab, seq_len=20, batch=64)
    repeated_half_loss(model, tokens)        # near 0; a uniform guess is log(d_vocab)
"""

from __future__ import annotations

from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ..core.config import ModelConfig
from ..model import Transformer
from .random_init import random_model
from .sequences import repeated_random_tokens

__all__ = [
    "induction_config",
    "repeated_random_tokens",
    "periodic_random_tokens",
    "next_token_losses",
    "repeated_half_loss",
    "train_induction_model",
]


def induction_config(
    d_vocab: int = 64, seq_len: int = 20, d_model: int = 64, n_heads: int = 4, d_head: int = 16
) -> ModelConfig:
    """A 2-layer attention-only, pre-LayerNorm model with learned positions, sized for
    sequences of ``2 * seq_len`` tokens."""
    return ModelConfig(
        d_model=d_model,
        n_layers=2,
        n_heads=n_heads,
        d_head=d_head,
        d_vocab=d_vocab,
        n_ctx=2 * seq_len,
        attn_only=True,
        normalization="layernorm",
        positional="learned",
        act_fn="relu",
        family="toy-induction",
    )


def periodic_random_tokens(
    key: PRNGKeyArray, d_vocab: int, n_ctx: int, batch: int, min_period: int = 4, max_period: Optional[int] = None
) -> Int[Array, "batch pos"]:
    """``[batch, n_ctx]`` sequences ``tokens[i] = base[i mod period]`` of uniform random
    tokens, with a period drawn per sequence from ``min_period..max_period`` (default
    ``n_ctx // 2``)."""
    max_period = n_ctx // 2 if max_period is None else max_period
    if not 1 <= min_period <= max_period <= n_ctx:
        raise ValueError(f"need 1 <= min_period <= max_period <= n_ctx, got {min_period}, {max_period}, {n_ctx}")
    base_key, period_key = jax.random.split(key)
    base = jax.random.randint(base_key, (batch, n_ctx), 0, d_vocab)
    period = jax.random.randint(period_key, (batch, 1), min_period, max_period + 1)
    return jnp.take_along_axis(base, jnp.arange(n_ctx)[None, :] % period, axis=1)


def next_token_losses(
    model: Transformer, tokens: Int[Array, "batch pos"], interventions=None
) -> Float[Array, "batch pos_minus_1"]:
    """Cross-entropy of predicting ``tokens[:, i + 1]`` from position ``i``."""
    logits = model(tokens, interventions)
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]


def repeated_half_loss(model: Transformer, tokens: Int[Array, "batch pos"], interventions=None) -> Float[Array, ""]:
    """Mean loss on predicting the second copy (tokens ``seq_len+1 .. 2*seq_len-1`` from
    the positions before them): the in-context part of a repeated sequence. The first
    token of the second copy is excluded (nothing in context predicts it)."""
    seq_len = tokens.shape[-1] // 2
    return next_token_losses(model, tokens, interventions)[:, seq_len:].mean()


def train_induction_model(
    key: PRNGKeyArray,
    cfg: Optional[ModelConfig] = None,
    steps: int = 800,
    batch: int = 32,
    learning_rate: float = 3e-3,
    weight_decay: float = 0.01,
) -> tuple[Transformer, Float[Array, " steps"]]:
    """Train ``cfg`` (default `induction_config`) with AdamW on fresh
    `periodic_random_tokens` each step, next-token loss on every position. Returns the
    model and the per-step training losses. Deterministic given ``key``."""
    cfg = induction_config() if cfg is None else cfg
    # numpy-drawn init (no per-shape jax.random compiles), seeded from the key's bits
    model = random_model(cfg, seed=np.asarray(jax.random.key_data(key)), std=0.05)
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(1, steps // 10), steps)
    optimizer = optax.adamw(schedule, weight_decay=weight_decay)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt_state = optimizer.init(params)

    def loss_fn(params, tokens):
        return next_token_losses(eqx.combine(params, static), tokens).mean()

    @jax.jit
    def train(params, opt_state, key):
        def step(carry, k):
            params, opt_state = carry
            tokens = periodic_random_tokens(k, cfg.d_vocab, cfg.n_ctx, batch)
            loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        return jax.lax.scan(step, (params, opt_state), jax.random.split(key, steps))

    (params, _), losses = train(params, opt_state, key)
    return eqx.combine(params, static), losses
