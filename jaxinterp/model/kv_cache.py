"""A fixed-size key/value cache, and the attention that reads and extends it.

`Transformer.extend` runs new tokens after the sequence a `KVCache` holds: each layer
computes the new tokens' queries, keys and values, writes the keys and values into the
cache's next slots and attends over every slot written so far. The cache has a fixed
size (``max_len`` slots), so a decode loop of ``lax.scan`` compiles once.

Slots are in sequence order. ``positions[slot]`` is the absolute position of the token
held there (rotary angle, learned position embedding, and what an intervention's
``pos=`` names); -1 marks an empty slot or a padding token, never attended to. Causality
and sliding windows count slots, as `Transformer.run` counts indices: with left padding
the real tokens are contiguous, so slot distances are position distances.
"""

from __future__ import annotations

from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ..core.config import ModelConfig
from .attention import AbstractAttention, Attention, AttentionInput, input_length
from .hooks import SiteHooks


class KVCache(eqx.Module):
    """The keys (rotated, in rotary models) and values of every layer at every filled slot.

    ``k`` / ``v [layer, max_len, kv_head, d_head]``; ``positions [max_len]`` (-1: empty or
    padding); ``length``: slots written so far (the next token goes to slot ``length``).
    One example: `jax.vmap` over a batch of caches (every leaf gains a leading axis).
    """

    k: Float[Array, "layer max_len kv_head d_head"]
    v: Float[Array, "layer max_len kv_head d_head"]
    positions: Int[Array, " max_len"]
    length: Int[Array, ""]

    @staticmethod
    def empty(cfg: ModelConfig, max_len: int, dtype=jnp.float32) -> "KVCache":
        """A cache of ``max_len`` empty slots for a model of config ``cfg``."""
        if max_len < 1:
            raise ValueError(f"max_len must be at least 1, got {max_len}")
        shape = (cfg.n_layers, max_len, cfg.n_kv_heads, cfg.d_head)
        return KVCache(
            jnp.zeros(shape, dtype),
            jnp.zeros(shape, dtype),
            jnp.full((max_len,), -1, jnp.int32),
            jnp.zeros((), jnp.int32),
        )

    @property
    def max_len(self) -> int:
        return self.positions.shape[-1]

    def next_position(self) -> Int[Array, ""]:
        """The position after the last real token held (0 for an empty cache)."""
        return jnp.max(self.positions, axis=-1) + 1


class CachedAttention(AbstractAttention):
    """One layer's `Attention` over a cache (drop-in for it inside a `Block`, as the fast
    engine's packed attention is): the new tokens' keys and values are written at slots
    ``start .. start + n - 1`` of this layer's ``k`` / ``v`` and every query attends over
    the slots (``key_positions >= 0``, not after its own slot, within the window).

    The written keys and values are the ones the sites ``attn.rot_k`` (or ``attn.k``) and
    ``attn.v`` return, after any intervention; `Transformer.extend` records them there
    and writes them into the cache it returns.
    """

    attn: Attention
    k: Float[Array, "max_len kv_head d_head"]
    v: Float[Array, "max_len kv_head d_head"]
    start: Int[Array, ""]
    key_positions: Int[Array, " max_len"]  # after writing the new tokens' positions

    def __call__(
        self,
        x: AttentionInput,
        hooks: SiteHooks,
        cfg: ModelConfig,
        window,
        rotary,
        key_mask: Optional[Bool[Array, " pos"]] = None,
    ) -> Float[Array, "pos d_model"]:
        q, k, v = self.attn.queries_keys_values(x, hooks, cfg, window, rotary)
        keys = write(self.k, k, self.start)
        values = write(self.v, v, self.start)
        query_slot = self.start + jnp.arange(input_length(x))
        offset = query_slot[:, None] - jnp.arange(self.k.shape[0])[None, :]
        allowed = (offset >= 0) & (offset < window) & (self.key_positions >= 0)[None, :]
        return self.attn.attend_output(q, keys, values, allowed, cfg, hooks)


def write(cache: Float[Array, "max_len ..."], new: Float[Array, "pos ..."], start: Int[Array, ""]) -> Array:
    """``cache`` with ``new`` written at slots ``start .. start + pos - 1``."""
    return jax.lax.dynamic_update_slice_in_dim(cache, new.astype(cache.dtype), start, axis=0)
