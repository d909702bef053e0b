"""Greedy generation with interventions applied at every step (e.g. steering)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int

from ..model import Transformer

__all__ = ["greedy_generate"]


@eqx.filter_jit
def _generate(model: Transformer, buffer: Int[Array, " pos"], n_prompt: int, n_new: int, interventions):
    def step(i, buf):
        logits, _ = model.forward(buf, interventions)
        return buf.at[n_prompt + i].set(jnp.argmax(logits[n_prompt - 1 + i]).astype(buf.dtype))

    return jax.lax.fori_loop(0, n_new, step, buffer)


def greedy_generate(
    model: Transformer, tokens: Int[np.ndarray, " pos"], n_new: int, interventions=None
) -> Int[np.ndarray, " n_new"]:
    """``n_new`` greedily decoded tokens after ``tokens``, with ``interventions`` applied at
    every step (e.g. a steering `Add`).

    The sequence lives in one fixed-length buffer, so the loop compiles once per
    (prompt length, ``n_new``): causal attention makes the not-yet-written tail irrelevant
    to each step's prediction. Returns the new tokens only.
    """
    tokens = np.asarray(tokens, dtype=np.int32).reshape(-1)
    if n_new < 1:
        raise ValueError(f"n_new must be at least 1, got {n_new}")
    if tokens.size + n_new > model.cfg.n_ctx:
        raise ValueError(f"{tokens.size} prompt + {n_new} new tokens exceed the context n_ctx={model.cfg.n_ctx}")
    buffer = jnp.zeros(tokens.size + n_new, jnp.int32).at[: tokens.size].set(tokens)
    out = _generate(model, buffer, int(tokens.size), int(n_new), tuple(interventions or ()))
    return np.asarray(out[tokens.size :])
