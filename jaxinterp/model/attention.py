"""Multi-head attention with MHA / MQA / GQA, rotary, soft-capping and sliding windows."""

from __future__ import annotations

import abc
from typing import Callable, NamedTuple, Optional, Union

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ..core.config import ModelConfig
from .hooks import NO_HOOKS, SiteHooks
from .norms import Norm
from .rotary import apply_rotary, layer_rotary


class SplitInputs(NamedTuple):
    """Attention's input per head (``cfg.split_qkv_input``), already normalised: what
    each query head, key head and value head projects."""

    q: Float[Array, "pos head d_model"]
    k: Float[Array, "pos kv_head d_model"]
    v: Float[Array, "pos kv_head d_model"]


AttentionInput = Union[Float[Array, "pos d_model"], SplitInputs]


def input_length(x: AttentionInput) -> int:
    """The number of positions of an attention input, shared or split per head."""
    return x.q.shape[0] if isinstance(x, SplitInputs) else x.shape[0]


class AbstractAttention(eqx.Module):
    """What a `Block` calls for attention: ``(x, hooks, cfg, window, rotary, key_mask) ->
    [pos, d_model]``. `Attention` is the model's; the fast patching engine swaps in its
    packed variant. Both compute scores, masks, the softmax and the output through the
    shared `attend` and `attention_output`, so every feature is written once."""

    @abc.abstractmethod
    def __call__(self, x, hooks: SiteHooks, cfg: ModelConfig, window: Int[Array, ""], rotary, key_mask=None) -> Array:
        """The attention output for ``x``, to be added to the residual stream."""


class Attention(AbstractAttention):
    """Weights in TransformerLens layout: one matrix per head. Inside a `Transformer`
    every field has a leading layer axis (``*layer``) and the scan hands each layer its slice.

    ``W_Q [head, d_model, d_head]``, ``W_K``/``W_V [kv_head, d_model, d_head]``,
    ``W_O [head, d_head, d_model]``. Query head ``h`` reads key/value head
    ``h // (n_heads // n_kv_heads)``.
    """

    W_Q: Float[Array, "*layer head d_model d_head"]
    W_K: Float[Array, "*layer kv_head d_model d_head"]
    W_V: Float[Array, "*layer kv_head d_model d_head"]
    W_O: Float[Array, "*layer head d_head d_model"]
    b_Q: Optional[Float[Array, "*layer head d_head"]]
    b_K: Optional[Float[Array, "*layer kv_head d_head"]]
    b_V: Optional[Float[Array, "*layer kv_head d_head"]]
    b_O: Optional[Float[Array, "*layer d_model"]]
    # QK-norm (cfg.qk_norm): RMSNorm weights [d_head] per head, or [head*d_head] /
    # [kv_head*d_head] over the whole projection; None without QK-norm.
    q_norm: Optional[Norm] = None
    k_norm: Optional[Norm] = None

    def __call__(
        self,
        x: AttentionInput,
        hooks: SiteHooks,
        cfg: ModelConfig,
        window: Int[Array, ""],
        rotary: Optional[tuple[Array, Array]],
        key_mask: Optional[Bool[Array, " pos"]] = None,
    ) -> Float[Array, "pos d_model"]:
        q, k, v = self.queries_keys_values(x, hooks, cfg, window, rotary)
        allowed = attention_mask(input_length(x), cfg.causal, window)
        if key_mask is not None:
            allowed = allowed & key_mask[None, :]
        return self.attend_output(q, k, v, allowed, cfg, hooks)

    def queries_keys_values(
        self,
        x: AttentionInput,
        hooks: SiteHooks,
        cfg: ModelConfig,
        window: Int[Array, ""],
        rotary: Optional[tuple[Array, Array]],
    ) -> tuple[Float[Array, "pos head d_head"], Float[Array, "pos kv_head d_head"], Float[Array, "pos kv_head d_head"]]:
        """Queries, keys (QK-normed if configured, then rotated with this layer's rotary
        table, if rotary) and values, through their sites. ``x``: the normalised input
        shared by every head, or `SplitInputs` with one per head."""
        rotary = layer_rotary(rotary, window, cfg)
        xq, xk, xv = x if isinstance(x, SplitInputs) else (x, x, x)
        q = qk_normalize(hooks("attn.q", _project(xq, self.W_Q, self.b_Q)), self.q_norm)
        k = qk_normalize(hooks("attn.k", _project(xk, self.W_K, self.b_K)), self.k_norm)
        v = hooks("attn.v", _project(xv, self.W_V, self.b_V))
        if rotary is not None:
            q = hooks("attn.rot_q", apply_rotary(q, *rotary, interleaved=cfg.rotary_interleaved))
            k = hooks("attn.rot_k", apply_rotary(k, *rotary, interleaved=cfg.rotary_interleaved))
        return q, k, v

    def attend_output(
        self,
        q: Float[Array, "query head d_head"],
        k: Float[Array, "key_pos kv_head d_head"],
        v: Float[Array, "key_pos kv_head d_head"],
        allowed: Bool[Array, "query key_pos"],
        cfg: ModelConfig,
        hooks: SiteHooks,
    ) -> Float[Array, "query d_model"]:
        """`attend` in the grouped layout, then `attention_output`. The keys may be more
        than the queries (a KV cache's slots); ``allowed`` says which each query reads."""
        n_query, n_kv = q.shape[0], cfg.n_kv_heads
        # Grouped, head-major layout [kv_head, query, group, d_head]: a query head's group
        # shares its key head without repeating keys.
        queries = jnp.moveaxis(q.reshape(n_query, n_kv, -1, cfg.d_head), 0, 1)
        z = attend(
            queries,
            jnp.moveaxis(k, 0, 1),
            jnp.moveaxis(v, 0, 1),
            allowed[None, :, None, :],
            cfg,
            hooks,
            _head_query_key,
        )
        z = jnp.moveaxis(z, 1, 0).reshape(n_query, cfg.n_heads, cfg.d_head)
        return attention_output(z, self.W_O, self.b_O, hooks)


def qk_normalize(x: Float[Array, "pos head d_head"], norm: Optional[Norm]) -> Float[Array, "pos head d_head"]:
    """QK-norm of queries or keys (after the ``attn.q`` / ``attn.k`` sites, before rotary,
    as in HF and TransformerLens). ``norm.w`` of size ``d_head`` normalises each head;
    of size ``head * d_head``, the whole projection (OLMo-2). No site of its own: the
    normalised values are what ``attn.rot_q`` / ``attn.rot_k`` rotate."""
    if norm is None:
        return x
    if norm.w.shape[-1] == x.shape[-1]:
        return norm(x, NO_HOOKS, "qk_norm")
    return norm(x.reshape(x.shape[0], -1), NO_HOOKS, "qk_norm").reshape(x.shape)


def attend(
    queries: Float[Array, "kv_head *rows query group d_head"],
    keys: Float[Array, "kv_head *rows key_pos d_head"],
    values: Float[Array, "kv_head *rows key_pos d_head"],
    allowed: Bool[Array, "..."],
    cfg: ModelConfig,
    hooks: SiteHooks,
    site_view: Callable,
) -> Float[Array, "kv_head *rows query group d_head"]:
    """Scaled dot-product attention in the grouped layout, through the sites
    ``attn.attn_scores`` and ``attn.pattern``: scale, soft-cap, mask (``allowed``
    broadcasts to ``[kv_head, *rows, query, group, key_pos]``), fp32 softmax, weighted values.

    ``site_view(hooks, name, x)`` applies a site's hook to the grouped array in the
    layout the site is defined in (``[head, query_pos, key_pos]`` per example).
    """
    scores = jnp.einsum("...qgd,...sd->...qgs", queries, keys) * jnp.asarray(cfg.scale, queries.dtype)
    if cfg.attn_logit_softcap is not None:
        scores = jnp.tanh(scores / cfg.attn_logit_softcap) * cfg.attn_logit_softcap
    scores = site_view(hooks, "attn.attn_scores", jnp.where(allowed, scores, jnp.finfo(scores.dtype).min))
    pattern = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(values.dtype)
    pattern = site_view(hooks, "attn.pattern", pattern)
    return jnp.einsum("...qgs,...sd->...qgd", pattern, values)


def attention_output(
    z: Float[Array, "pos head d_head"],
    W_O: Float[Array, "head d_head d_model"],
    b_O: Optional[Float[Array, " d_model"]],
    hooks: SiteHooks,
) -> Float[Array, "pos d_model"]:
    """Through the sites ``attn.z`` and (only when asked for) ``attn.result``, then the
    output projection summed over heads, plus its bias."""
    z = hooks("attn.z", z)
    if hooks.wants("attn.result"):
        out = hooks("attn.result", jnp.einsum("phd,hdm->phm", z, W_O)).sum(axis=1)
    else:
        out = z.reshape(z.shape[0], -1) @ W_O.reshape(-1, W_O.shape[-1])
    return out if b_O is None else out + b_O


def _head_query_key(hooks: SiteHooks, name: str, x: Float[Array, "kv_head query group key_pos"]):
    """Apply a pattern-site hook, which sees ``[head, query_pos, key_pos]``."""
    if not hooks.wants(name):
        return x
    n_kv, n_query, group, n_keys = x.shape
    out = hooks(name, jnp.transpose(x, (0, 2, 1, 3)).reshape(n_kv * group, n_query, n_keys))
    return jnp.transpose(out.reshape(n_kv, group, n_query, n_keys), (0, 2, 1, 3))


def _project(x, W, b):
    # [pos, d_model] shared by the heads, or [pos, head, d_model] one input per head.
    out = jnp.einsum("pm,hmd->phd" if x.ndim == 2 else "phm,hmd->phd", x, W)
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
