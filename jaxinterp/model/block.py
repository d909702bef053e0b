"""One transformer block: pre-norm, parallel (NeoX), post-norm (BERT) or output-norm only (OLMo-2)."""

from __future__ import annotations

from typing import Optional, Union

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..core.config import ModelConfig
from .attention import AbstractAttention, SplitInputs
from .hooks import NO_HOOKS
from .mlp import MLP, MoE
from .norms import Norm


class Block(eqx.Module):
    """A block's parameters. In a `Transformer` every leaf has a leading layer axis and
    the blocks run under `jax.lax.scan`; ``window`` is this layer's attention window,
    so per-layer differences (Gemma 2's local/global alternation) are data."""

    ln1: Optional[Norm]  # None with cfg.pre_norm=False
    attn: AbstractAttention
    ln1_post: Optional[Norm]
    ln2: Optional[Norm]  # None without an MLP or with cfg.pre_norm=False
    mlp: Optional[Union[MLP, MoE]]
    ln2_post: Optional[Norm]
    window: Int[Array, ""]

    def __call__(self, resid_pre: Float[Array, "pos d_model"], hooks, cfg: ModelConfig, rotary, key_mask=None):
        resid_pre = hooks("resid_pre", resid_pre)

        def attention(x):
            out = self.attn(x, hooks, cfg, self.window, rotary, key_mask)
            if self.ln1_post is not None:
                out = self.ln1_post(out, hooks, "ln1_post")
            return hooks("attn_out", out)

        def feed_forward(x):
            out = self.mlp(x, hooks, cfg)
            if self.ln2_post is not None:
                out = self.ln2_post(out, hooks, "ln2_post")
            return hooks("mlp_out", out)

        if cfg.post_norm:
            attn_out = attention(self.split_inputs(resid_pre, None, hooks, cfg) if cfg.split_qkv_input else resid_pre)
            resid_mid = hooks("resid_mid", self.ln1(resid_pre + attn_out, hooks, "ln1"))
            if self.mlp is None:
                return hooks("resid_post", resid_mid)
            mlp_out = feed_forward(resid_mid)
            return hooks("resid_post", self.ln2(resid_mid + mlp_out, hooks, "ln2"))

        if cfg.split_qkv_input:
            attn_out = attention(self.split_inputs(resid_pre, self.ln1, hooks, cfg))
        else:
            attn_out = attention(self.attn_input(resid_pre, hooks))
        if cfg.parallel_attn_mlp:
            mlp_out = feed_forward(self._pre(self.ln2, resid_pre, hooks, "ln2"))
            return hooks("resid_post", resid_pre + attn_out + mlp_out)
        resid_mid = hooks("resid_mid", resid_pre + attn_out)
        if self.mlp is None:
            return hooks("resid_post", resid_mid)
        mlp_out = feed_forward(self._pre(self.ln2, resid_mid, hooks, "ln2"))
        return hooks("resid_post", resid_mid + mlp_out)

    def attn_input(self, resid_pre: Float[Array, "pos d_model"], hooks) -> Float[Array, "pos d_model"]:
        """What attention reads in a pre-norm block: ``ln1(resid_pre)``, or the residual
        stream itself without pre-norms (OLMo-2). The fast engine computes keys from it."""
        return self._pre(self.ln1, resid_pre, hooks, "ln1")

    @staticmethod
    def split_inputs(
        resid_pre: Float[Array, "pos d_model"], norm: Optional[Norm], hooks, cfg: ModelConfig
    ) -> SplitInputs:
        """TransformerLens's split inputs (``cfg.split_qkv_input``): ``resid_pre`` copied
        once per query head and per key/value head through the sites ``q_input``,
        ``k_input``, ``v_input``, each copy then normalised by ``norm`` (the pre-norm, or
        None), so an edit to one head's copy reaches only that head's projection."""

        def copies(name: str, n_heads: int) -> Float[Array, "pos head d_model"]:
            x = hooks(name, jnp.broadcast_to(resid_pre[:, None, :], (resid_pre.shape[0], n_heads, cfg.d_model)))
            return x if norm is None else norm(x, NO_HOOKS, "ln1")

        return SplitInputs(
            copies("q_input", cfg.n_heads), copies("k_input", cfg.n_kv_heads), copies("v_input", cfg.n_kv_heads)
        )

    @staticmethod
    def _pre(norm: Optional[Norm], x, hooks, prefix: str):
        return x if norm is None else norm(x, hooks, prefix)
