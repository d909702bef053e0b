"""Multi-head attention with MHA / MQA / GQA, rotary, soft-capping and sliding windows."""

from __future__ import annotations

from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..core.config import ModelConfig
from .rotary import apply_rotary


class Attention(eqx.Module):
    """Weights in TransformerLens layout: one matrix per head.

    ``W_Q [head, d_model, d_head]``, ``W_K``/``W_V [kv_head, d_model, d_head]``,
    ``W_O [head, d_head, d_model]``. Query head ``h`` reads key/value head
    ``h // (n_heads // n_kv_heads)``.
    """

    W_Q: Float[Array, "head d_model d_head"]
    W_K: Float[Array, "kv_head d_model d_head"]
    W_V: Float[Array, "kv_head d_model d_head"]
    W_O: Float[Array, "head d_head d_model"]
    b_Q: Optional[Float[Array, "head d_head"]]
    b_K: Optional[Float[Array, "kv_head d_head"]]
    b_V: Optional[Float[Array, "kv_head d_head"]]
    b_O: Optional[Float[Array, " d_model"]]

    def __call__(
        self,
        x: Float[Array, "pos d_model"],
        hooks,
        cfg: ModelConfig,
        window: Int[Array, ""],
        rotary: Optional[tuple[Array, Array]],
        key_mask: Optional[Float[Array, " pos"]] = None,
    ) -> Float[Array, "pos d_model"]:
        q = hooks("attn.q", _project(x, self.W_Q, self.b_Q))
        k = hooks("attn.k", _project(x, self.W_K, self.b_K))
        v = hooks("attn.v", _project(x, self.W_V, self.b_V))
        if rotary is not None:
            q = hooks("attn.rot_q", apply_rotary(q, *rotary))
            k = hooks("attn.rot_k", apply_rotary(k, *rotary))
        group = cfg.n_heads // cfg.n_kv_heads
        k, v = jnp.repeat(k, group, axis=1), jnp.repeat(v, group, axis=1)

        scores = jnp.einsum("qhd,khd->hqk", q, k) * jnp.asarray(cfg.scale, q.dtype)
        if cfg.attn_logit_softcap is not None:
            scores = jnp.tanh(scores / cfg.attn_logit_softcap) * cfg.attn_logit_softcap
        allowed = attention_mask(x.shape[0], cfg.causal, window)
        if key_mask is not None:
            allowed = allowed & key_mask[None, :]
        scores = hooks("attn.attn_scores", jnp.where(allowed[None], scores, jnp.finfo(scores.dtype).min))
        pattern = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(v.dtype)
        pattern = hooks("attn.pattern", pattern)
        z = hooks("attn.z", jnp.einsum("hqk,khd->qhd", pattern, v))
        if hooks.wants("attn.result"):
            result = hooks("attn.result", jnp.einsum("phd,hdm->phm", z, self.W_O))
            out = result.sum(axis=1)
        else:
            out = jnp.einsum("phd,hdm->pm", z, self.W_O)
        if self.b_O is not None:
            out = out + self.b_O
        return out


def _project(x, W, b):
    out = jnp.einsum("pm,hmd->phd", x, W)
    return out if b is None else out + b


def attention_mask(n_pos: int, causal: bool, window) -> Array:
    """``[query_pos, key_pos]`` bool: causal (key <= query) and within the window."""
    q = jnp.arange(n_pos)[:, None]
    k = jnp.arange(n_pos)[None, :]
    allowed = (q - k) < window
    if causal:
        allowed = allowed & (k <= q)
    else:
        allowed = allowed & ((k - q) < window)
    return allowed
