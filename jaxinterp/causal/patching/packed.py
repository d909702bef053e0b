"""Packed-token pieces of the fast engine: hooks and attention over one block's layer.

In the fast engine a layer runs on a block's packed ``[tokens, d_model]`` matrix that
holds, for every row (patch) of the block, only the positions that row recomputes (see
`jaxinterp.causal.patching.layout`). Everything per position (norms, QKV, output projection,
MLP: nearly all the FLOPs) runs on that matrix unchanged, with the model's own
modules. Only attention needs rows: `PackedAttention` gathers each row's keys and
values into a padded ``[row, key_pos, ...]`` view, taking positions before the row's
start from the base run's cached keys and values, and scatters the heads' outputs back
to packed tokens. `PackedPatches` applies each row's patch at the swept site, reading
the value patched in from the source run's cached activation.
"""

from __future__ import annotations

from typing import Optional

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ...core.config import ModelConfig
from ...core.sites import DIM_FIELD, PATTERN_SITES
from ...model.attention import AbstractAttention, Attention, attend, attention_output, qk_normalize
from ...model.hooks import SiteHooks
from ...model.norms import Norm
from ...model.rotary import apply_rotary, layer_rotary

# Sites on the path from a block's input to its attention keys and values: at the
# last layer (metric-aware shortcut) they are patched on every token, the rest only on
# the tokens the metric reads.
KV_PATH_SITES = frozenset({"resid_pre", "ln1.scale", "ln1.normalized", "attn.k", "attn.v", "attn.rot_k"})


class PackedPatches(SiteHooks):
    """The hook callback of one block at one layer: patches the rows whose patch
    applies at ``layer`` (traced).

    ``token_pos`` / ``token_row`` ``[tokens]``: position and row of each packed token.
    ``source``: the source run's activation at the swept site and this layer
    (``[pos, ...]``, or ``[head, query_pos, key_pos]`` for attention patterns).
    ``rows``: per-row ``row_layer`` / ``row_layer_stop`` (the patch applies at layers
    ``row_layer .. row_layer_stop - 1``) and ``row_<field>`` location arrays ``[row]``.
    ``query_pos [query]``: absolute position of each query slot of the padded
    attention view (for attention-pattern sites). ``only``: restrict to these sites.
    ``token_pair [tokens]``: with a batch of prompt pairs, each token's pair; ``source``
    then has a leading pair axis (``[pair, pos, ...]`` / ``[pair, head, query_pos,
    key_pos]``) and each row reads its own pair's values (``rows["row_pair"]``).
    """

    def __init__(
        self,
        site: str,
        dims: tuple,
        layer: Int[Array, ""],
        rows: dict,
        token_pos: Int[Array, " token"],
        token_row: Int[Array, " token"],
        source: Array,
        query_pos: Int[Array, " query"],
        only: Optional[frozenset] = None,
        token_pair: Optional[Int[Array, " token"]] = None,
    ):
        self.site, self.dims, self.layer, self.rows = site, dims, layer, rows
        self.token_pair = token_pair
        self.token_pos, self.token_row, self.source, self.query_pos = token_pos, token_row, source, query_pos
        self.active = only is None or site in only

    def wants(self, name: str) -> bool:
        return self.active and name == self.site

    def __call__(self, name: str, x: Array) -> Array:
        if not self.wants(name):
            return x
        if name in PATTERN_SITES:
            return self._patch_rows(x)
        return self._patch_tokens(x)

    def _patch_tokens(self, x: Float[Array, "token ..."]) -> Float[Array, "token ..."]:
        rows, pos = self.token_row, self.token_pos
        mask = _applies(take(self.rows["row_layer"], rows), take(self.rows["row_layer_stop"], rows), self.layer)
        mask = mask & _selects(take(self.rows["row_pos"], rows), pos)
        mask = mask.reshape((-1,) + (1,) * (x.ndim - 1))
        for axis, dim in enumerate(self.dims[1:], start=1):
            if dim in DIM_FIELD:
                sel = take(self.rows["row_" + DIM_FIELD[dim]], rows)
                am = _selects(sel[:, None], jnp.arange(x.shape[axis])[None, :])
                shape = [x.shape[0]] + [1] * (x.ndim - 1)
                shape[axis] = x.shape[axis]
                mask = mask & am.reshape(shape)
        if self.token_pair is None:
            value = take(self.source, pos)
        else:
            value = self.source.at[self.token_pair, pos].get(mode="promise_in_bounds", wrap_negative_indices=False)
        return jnp.where(mask, value, x)

    def _patch_rows(self, x: Float[Array, "row head query key_pos"]) -> Float[Array, "row head query key_pos"]:
        r = self.rows
        n_heads, n_keys = x.shape[1], x.shape[3]
        mask = _applies(r["row_layer"], r["row_layer_stop"], self.layer)[:, None, None, None]
        mask = mask & _selects(r["row_head"][:, None], jnp.arange(n_heads)[None])[:, :, None, None]
        mask = mask & _selects(r["row_pos"][:, None], self.query_pos[None])[:, None, :, None]
        mask = mask & _selects(r["row_key_pos"][:, None], jnp.arange(n_keys)[None])[:, None, None, :]
        if self.token_pair is None:
            source = take(jnp.moveaxis(self.source, 1, 0), self.query_pos)  # [query, head, key_pos]
            return jnp.where(mask, jnp.moveaxis(source, 0, 1)[None], x)
        source = take(self.source, r["row_pair"])[:, :, self.query_pos]  # [row, head, query, key_pos]
        return jnp.where(mask, source, x)


def _applies(first, stop, layer):
    """Whether a row's patch (layers ``first .. stop - 1``) applies at ``layer``."""
    return (first <= layer) & (layer < stop)


def _selects(selector, index):
    """Location selector (-1: every index) matching ``index``."""
    return (selector < 0) | (selector == index)


def take(x: Array, index: Int[Array, "..."]) -> Array:
    """``x[index]`` along the first axis for indices known to be in range (no clamping
    or negative-index fix-up: fewer ops for XLA to compile)."""
    return x.at[index].get(mode="promise_in_bounds", wrap_negative_indices=False)


class AttentionWeights(eqx.Module):
    """One layer's attention weights laid out for packed matmuls: queries, keys and
    values side by side ``w_qkv [d_model, (head + 2*kv_head) * d_head]`` (one matmul
    for all three), output ``w_o [head*d_head, d_model]``."""

    w_qkv: Float[Array, "d_model qkvd"]
    b_qkv: Optional[Float[Array, " qkvd"]]
    w_o: Float[Array, "qd d_model"]
    b_o: Optional[Float[Array, " d_model"]]
    q_norm: Optional[Norm] = None  # QK-norm weights, as in `Attention`
    k_norm: Optional[Norm] = None

    @staticmethod
    def of(attn: Attention) -> "AttentionWeights":
        """From one layer's `Attention` (TransformerLens layout, no layer axis)."""

        def flat(w):  # [head, d_model, d_head] -> [d_model, head*d_head]
            return jnp.transpose(w, (1, 0, 2)).reshape(w.shape[1], -1)

        b_qkv = None
        if attn.b_Q is not None:
            b_qkv = jnp.concatenate([attn.b_Q.reshape(-1), attn.b_K.reshape(-1), attn.b_V.reshape(-1)])
        return AttentionWeights(
            w_qkv=jnp.concatenate([flat(attn.W_Q), flat(attn.W_K), flat(attn.W_V)], axis=1),
            b_qkv=b_qkv,
            w_o=attn.W_O.reshape(-1, attn.W_O.shape[-1]),
            b_o=attn.b_O,
            q_norm=attn.q_norm,
            k_norm=attn.k_norm,
        )

    def project(self, x: Float[Array, "token d_model"], cols: slice) -> Array:
        """``x`` times the weight columns ``cols`` (of queries, keys, values), plus bias."""
        out = x @ self.w_qkv[:, cols]
        return out if self.b_qkv is None else out + self.b_qkv[cols]


class PackedAttention(AbstractAttention):
    """Causal attention for one block's packed tokens (drop-in for `Attention` inside a
    `Block`).

    Keys and values are indexed in the block's numbering: ``j < n_pos`` is the base
    run's position ``j`` (``base_k`` / ``base_v``, cached), ``n_pos + t`` the block's
    own token ``t``. ``kv_index [row, key_pos]``: the key/value of each row at each
    position. ``query_pos [query]``: absolute position of each query slot.
    ``query_index [row, query]``: own token of each query slot (None: the input is
    already ``[row * query]`` tokens in row-major order, as in the last-layer shortcut).
    ``out_row`` / ``out_slot`` ``[token]``: where each packed token's output sits in the
    padded view (None: row-major, as above). ``k`` / ``v``: precomputed own keys and
    values (for the last-layer shortcut, where queries are a subset of the tokens).
    """

    w: AttentionWeights
    kv_index: Int[Array, "row key_pos"]
    query_pos: Int[Array, " query"]
    base_k: Float[Array, "pos kv_head d_head"]
    base_v: Float[Array, "pos kv_head d_head"]
    query_index: Optional[Int[Array, "row query"]] = None
    out_row: Optional[Int[Array, " token"]] = None
    out_slot: Optional[Int[Array, " token"]] = None
    k: Optional[Float[Array, "token kv_head d_head"]] = None
    v: Optional[Float[Array, "token kv_head d_head"]] = None

    def __call__(self, x: Float[Array, "token d_model"], hooks, cfg: ModelConfig, window, rotary, key_mask=None):
        w = self.w
        qd = cfg.n_heads * cfg.d_head
        rotary = layer_rotary(rotary, window, cfg)
        if self.k is None:
            qkv = w.project(x, slice(None))
            q, (k, v) = qkv[:, :qd], _keys_values(qkv[:, qd:], w.k_norm, hooks, cfg, rotary)
        else:
            q, k, v = w.project(x, slice(0, qd)), self.k, self.v
        q = qk_normalize(hooks("attn.q", q.reshape(x.shape[0], cfg.n_heads, cfg.d_head)), w.q_norm)
        if rotary is not None:
            q = hooks("attn.rot_q", apply_rotary(q, *rotary, interleaved=cfg.rotary_interleaved))
        n_rows, n_query = self.kv_index.shape[0], self.query_pos.shape[0]
        n_kv, group, d_head = cfg.n_kv_heads, cfg.n_heads // cfg.n_kv_heads, cfg.d_head
        # Head-major views [kv_head, row, ...]: the per-row matmuls then batch over
        # leading axes (no transposes of the padded views), and a query head's group
        # shares its key head without repeating keys.
        keys = _gather_rows(jnp.concatenate([self.base_k, k]), self.kv_index)  # [kv, row, key, d]
        values = _gather_rows(jnp.concatenate([self.base_v, v]), self.kv_index)
        q = q.reshape(q.shape[0], n_kv, group, d_head)
        if self.query_index is None:
            queries = jnp.moveaxis(q.reshape((n_rows, n_query) + q.shape[1:]), 2, 0)  # [kv, row, query, group, d]
        else:
            queries = _gather_rows(q, self.query_index)

        offset = self.query_pos[:, None] - jnp.arange(keys.shape[2])[None, :]
        allowed = ((offset >= 0) & (offset < window))[:, None, :]  # [query, 1, key]
        z = attend(queries, keys, values, allowed, cfg, hooks, _row_major_hook)  # [kv, row, query, group, d]
        if self.out_row is None:
            z = z.reshape((n_kv, -1) + z.shape[3:])  # [kv, token, group, d]
        else:
            z = z.at[:, self.out_row, self.out_slot].get(mode="promise_in_bounds", wrap_negative_indices=False)
        z = jnp.moveaxis(z, 0, 1).reshape(z.shape[1], cfg.n_heads, d_head)
        return attention_output(z, w.w_o.reshape(cfg.n_heads, cfg.d_head, -1), w.b_o, hooks)


def _gather_rows(
    x: Float[Array, "token kv_head ..."], index: Int[Array, "row slot"]
) -> Float[Array, "kv_head row slot ..."]:
    """Per-token values (``[token, kv_head, ...]``) gathered into the head-major padded
    view ``[kv_head, row, slot, ...]``."""
    return jnp.moveaxis(x, 1, 0).at[:, index].get(mode="promise_in_bounds", wrap_negative_indices=False)


def _row_major_hook(hooks, name: str, x: Float[Array, "kv_head row query group key"]):
    """Apply an attention-pattern hook, which sees ``[row, head, query, key_pos]``."""
    if not hooks.wants(name):
        return x
    n_kv, n_rows, n_query, group, n_keys = x.shape
    row_major = jnp.transpose(x, (1, 0, 3, 2, 4)).reshape(n_rows, n_kv * group, n_query, n_keys)
    out = hooks(name, row_major).reshape(n_rows, n_kv, group, n_query, n_keys)
    return jnp.transpose(out, (1, 0, 3, 2, 4))


def keys_values(x: Float[Array, "token d_model"], w: AttentionWeights, hooks, cfg: ModelConfig, rotary, window):
    """Packed keys (rotated, if rotary, with the tables of a layer with this ``window``)
    and values, through their hook sites."""
    return _keys_values(
        w.project(x, slice(cfg.n_heads * cfg.d_head, None)), w.k_norm, hooks, cfg, layer_rotary(rotary, window, cfg)
    )


def _keys_values(kv: Float[Array, "token kvd"], k_norm: Optional[Norm], hooks, cfg: ModelConfig, rotary):
    kv = kv.reshape(kv.shape[0], 2, cfg.n_kv_heads, cfg.d_head)
    k = qk_normalize(hooks("attn.k", kv[:, 0]), k_norm)
    v = hooks("attn.v", kv[:, 1])
    if rotary is not None:
        k = hooks("attn.rot_k", apply_rotary(k, *rotary, interleaved=cfg.rotary_interleaved))
    return k, v
