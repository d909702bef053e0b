"""Rotary position embeddings: rotate-half (NeoX, Llama) or interleaved pairs (GPT-J),
partial rotary, and rope scaling (linear, llama3, yarn, longrope, dynamic NTK)."""

from __future__ import annotations

import math
from typing import Optional, Union

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..core.config import GLOBAL_WINDOW, ModelConfig

ROPE_TYPES = ("default", "linear", "llama3", "yarn", "longrope", "dynamic", "freq_factors")


def rope_type(cfg: ModelConfig) -> str:
    """The rope scaling type (``"default"`` without scaling; Phi-3's old ``"su"`` is longrope)."""
    scaling = cfg.rope_scaling_dict
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    return "longrope" if kind == "su" else kind


def inverse_frequencies(cfg: ModelConfig, long: bool = False) -> np.ndarray:
    """``[rotary_dim // 2]`` float32 inverse frequencies, after any rope scaling.
    ``long``: longrope's long-context factors (used past ``original_max_position_embeddings``)."""
    dim = cfg.rotary_dim
    assert dim is not None  # resolved by ModelConfig
    exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim
    inv_freq = 1.0 / (cfg.rotary_base**exponents)
    inv_freq = inv_freq.astype(np.float32)
    scaling = cfg.rope_scaling_dict
    kind = rope_type(cfg)
    if kind in ("default", "dynamic"):  # dynamic: the frequencies up to its max length (see _frequencies_at)
        return inv_freq
    if kind == "longrope":  # Phi-3: per-frequency divisors, short or long
        factors = np.asarray(scaling["long_factor" if long else "short_factor"], np.float32)
        return (1.0 / (factors * np.float32(cfg.rotary_base) ** exponents)).astype(np.float32)
    if kind == "freq_factors":  # llama.cpp's rope_freqs tensor: one divisor per frequency
        factors = np.asarray(scaling["factors"], np.float32)
        if factors.shape != inv_freq.shape:
            raise ValueError(f"rope freq_factors: {factors.size} factors for {inv_freq.size} rotary frequencies")
        return (inv_freq / factors).astype(np.float32)
    if kind == "yarn":
        return _yarn(cfg, dim, exponents)
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
    raise NotImplementedError(f"rope scaling type {kind!r} is not supported (supported: {', '.join(ROPE_TYPES)})")


def _yarn(cfg: ModelConfig, dim: int, exponents: np.ndarray) -> np.ndarray:
    """YaRN (Peng et al. 2023): interpolate the low frequencies by ``factor``, keep the
    high ones, with a linear ramp between the dimensions that turn ``beta_fast`` and
    ``beta_slow`` times over the original context (as transformers computes it)."""
    scaling = cfg.rope_scaling_dict
    base, factor = cfg.rotary_base, scaling["factor"]
    old_len = scaling["original_max_position_embeddings"]
    beta_fast, beta_slow = scaling.get("beta_fast") or 32, scaling.get("beta_slow") or 1

    def correction_dim(rotations):
        return (dim * math.log(old_len / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # no zero-width ramp
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
    keep = 1 - ramp  # 1: extrapolate (the original frequency), 0: interpolate
    pos_freqs = np.float32(base) ** exponents
    return ((1.0 / (factor * pos_freqs)) * (1 - keep) + (1.0 / pos_freqs) * keep).astype(np.float32)


def attention_factor(cfg: ModelConfig) -> float:
    """The factor rope scaling multiplies cos and sin by (so every rotated query-key
    score by its square): YaRN's ``0.1 ln(factor) + 1``, longrope's
    ``sqrt(1 + ln(factor) / ln(original length))``, or the config's
    ``attention_factor``; 1 for the other types."""
    scaling, kind = cfg.rope_scaling_dict, rope_type(cfg)
    if kind not in ("yarn", "longrope"):
        return 1.0
    if scaling.get("attention_factor") is not None:
        return float(scaling["attention_factor"])
    factor, old_len = scaling.get("factor"), scaling["original_max_position_embeddings"]
    if factor is None:  # Phi-3: the ratio of the extended to the original context
        factor = cfg.n_ctx / old_len
    if kind == "longrope":
        return 1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(old_len))

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    m, m_all = scaling.get("mscale"), scaling.get("mscale_all_dim")
    return float(mscale(factor, m) / mscale(factor, m_all)) if m and m_all else mscale(factor)


def rotary_tables(
    cfg: ModelConfig, n_pos: int, positions: Optional[Int[Array, " pos"]] = None
) -> tuple[Float[Array, "pos rot"], Float[Array, "pos rot"]]:
    """cos and sin tables ``[pos, rotary_dim]`` for positions ``0..n_pos-1``, or for
    ``positions`` (left-padded prompts: each token's index among the real tokens).

    With ``cfg.rotary_local_base`` (Gemma 3) each table holds the global layers' and the
    sliding-window layers' tables side by side, ``[pos, 2 * rotary_dim]``: indexing by
    position stays the same, and `layer_rotary` picks a layer's half."""
    pos = (jnp.arange(n_pos) if positions is None else positions).astype(jnp.float32)
    # The length the sequence has reached (its largest position + 1), for the rope types
    # whose frequencies depend on it, as transformers computes it from position_ids.
    seq_len = n_pos if positions is None else jnp.max(positions) + 1
    cos, sin = _tables(cfg, _frequencies_at(cfg, seq_len), pos)
    if cfg.rotary_local_base is None:
        return cos, sin
    local_cfg = cfg.replace(rotary_base=cfg.rotary_local_base, rope_scaling=None)
    local_cos, local_sin = _tables(local_cfg, inverse_frequencies(local_cfg), pos)
    return jnp.concatenate([cos, local_cos], -1), jnp.concatenate([sin, local_sin], -1)


def _frequencies_at(cfg: ModelConfig, seq_len) -> Union[np.ndarray, Float[Array, " half"]]:
    """Inverse frequencies for a sequence of ``seq_len`` tokens (traced or not): longrope's
    long factors once it outgrows the original context; dynamic NTK's base, stretched by
    ``((factor * len / max_len) - (factor - 1)) ** (dim / (dim - 2))`` past ``max_len``;
    the fixed `inverse_frequencies` otherwise."""
    kind, scaling = rope_type(cfg), cfg.rope_scaling_dict
    if kind == "longrope":
        use_long = seq_len > scaling["original_max_position_embeddings"]
        return jnp.where(use_long, inverse_frequencies(cfg, long=True), inverse_frequencies(cfg))
    if kind == "dynamic":
        dim, factor = cfg.rotary_dim, scaling["factor"]
        assert dim is not None
        max_len = scaling.get("max_position_embeddings", cfg.n_ctx)
        length = jnp.maximum(jnp.asarray(seq_len, jnp.float32), max_len)
        base = cfg.rotary_base * ((factor * length / max_len) - (factor - 1)) ** (dim / (dim - 2))
        exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim
        return 1.0 / base ** jnp.asarray(exponents)
    return inverse_frequencies(cfg)


def _tables(cfg: ModelConfig, inv_freq, pos: Float[Array, " pos"]):
    """cos and sin ``[pos, rotary_dim]``, times the scaling's attention factor: each
    frequency twice, in the layout `apply_rotary` pairs features in (halves, or
    adjacent pairs for interleaved rotary)."""
    freqs = pos[:, None] * jnp.asarray(inv_freq)[None, :]
    emb = jnp.repeat(freqs, 2, axis=-1) if cfg.rotary_interleaved else jnp.concatenate([freqs, freqs], axis=-1)
    scale = attention_factor(cfg)
    if scale == 1.0:
        return jnp.cos(emb), jnp.sin(emb)
    return jnp.cos(emb) * scale, jnp.sin(emb) * scale


def layer_rotary(rotary: Optional[tuple[Array, Array]], window: Int[Array, ""], cfg: ModelConfig):
    """One layer's ``(cos, sin)``: with ``cfg.rotary_local_base``, the sliding-window
    half of `rotary_tables` for a layer with a window, the global half otherwise (the
    window is data, so this is a select, not a Python branch per layer)."""
    if rotary is None or cfg.rotary_local_base is None:
        return rotary
    rot, local = cfg.rotary_dim, window < GLOBAL_WINDOW
    return tuple(jnp.where(local, t[..., rot:], t[..., :rot]) for t in rotary)


def apply_rotary(
    x: Float[Array, "pos head d_head"], cos, sin, interleaved: bool = False
) -> Float[Array, "pos head d_head"]:
    """Rotate the first ``rotary_dim`` features of each head; pass the rest through.
    Feature ``i`` pairs with ``i + rotary_dim/2`` (rotate-half), or with its neighbour
    (``interleaved``, GPT-J's rotate-every-two: ``cfg.rotary_interleaved``)."""
    rot = cos.shape[-1]
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    if interleaved:
        rotated = jnp.stack([-x_rot[..., 1::2], x_rot[..., ::2]], axis=-1).reshape(x_rot.shape)
    else:
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
