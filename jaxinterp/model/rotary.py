"""Rotary position embeddings (rotate-half convention, partial rotary, rope scaling)."""

from __future__ import annotations

import math
from typing import Optional

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..core.config import GLOBAL_WINDOW, ModelConfig


def inverse_frequencies(cfg: ModelConfig) -> np.ndarray:
    """``[rotary_dim // 2]`` float32 inverse frequencies, after any rope scaling."""
    dim = cfg.rotary_dim
    assert dim is not None  # resolved by ModelConfig
    inv_freq = 1.0 / (cfg.rotary_base ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim))
    inv_freq = inv_freq.astype(np.float32)
    scaling = cfg.rope_scaling_dict
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return (inv_freq / scaling["factor"]).astype(np.float32)
    if kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    raise NotImplementedError(f"rope scaling type {kind!r} is not supported (supported: default, linear, llama3)")


def rotary_tables(
    cfg: ModelConfig, n_pos: int, positions: Optional[Int[Array, " pos"]] = None
) -> tuple[Float[Array, "pos rot"], Float[Array, "pos rot"]]:
    """cos and sin tables ``[pos, rotary_dim]`` for positions ``0..n_pos-1``, or for
    ``positions`` (left-padded prompts: each token's index among the real tokens).

    With ``cfg.rotary_local_base`` (Gemma 3) each table holds the global layers' and the
    sliding-window layers' tables side by side, ``[pos, 2 * rotary_dim]``: indexing by
    position stays the same, and `layer_rotary` picks a layer's half."""
    pos = (jnp.arange(n_pos) if positions is None else positions).astype(jnp.float32)
    cos, sin = _tables(inverse_frequencies(cfg), pos)
    if cfg.rotary_local_base is None:
        return cos, sin
    local_cos, local_sin = _tables(
        inverse_frequencies(cfg.replace(rotary_base=cfg.rotary_local_base, rope_scaling=None)), pos
    )
    return jnp.concatenate([cos, local_cos], -1), jnp.concatenate([sin, local_sin], -1)


def _tables(inv_freq: np.ndarray, pos: Float[Array, " pos"]):
    freqs = pos[:, None] * jnp.asarray(inv_freq)[None, :]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def layer_rotary(rotary: Optional[tuple[Array, Array]], window: Int[Array, ""], cfg: ModelConfig):
    """One layer's ``(cos, sin)``: with ``cfg.rotary_local_base``, the sliding-window
    half of `rotary_tables` for a layer with a window, the global half otherwise (the
    window is data, so this is a select, not a Python branch per layer)."""
    if rotary is None or cfg.rotary_local_base is None:
        return rotary
    rot, local = cfg.rotary_dim, window < GLOBAL_WINDOW
    return tuple(jnp.where(local, t[..., rot:], t[..., :rot]) for t in rotary)


def apply_rotary(x: Float[Array, "pos head d_head"], cos, sin) -> Float[Array, "pos head d_head"]:
    """Rotate the first ``rotary_dim`` features of each head; pass the rest through."""
    rot = cos.shape[-1]
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    half = rot // 2
    rotated = jnp.concatenate([-x_rot[..., half:], x_rot[..., :half]], axis=-1)
    cos, sin = cos[:, None, :].astype(x.dtype), sin[:, None, :].astype(x.dtype)
    return jnp.concatenate([x_rot * cos + rotated * sin, x_pass], axis=-1)


def rotary_at(
    cfg: ModelConfig, positions: Int[Array, " pos"]
) -> tuple[Float[Array, "pos rot"], Float[Array, "pos rot"]]:
    """`rotary_tables` at the given absolute ``positions`` (a left-padded row, or new
    tokens after a KV cache)."""
    positions = jnp.asarray(positions)
    return rotary_tables(cfg, positions.shape[0], positions)
