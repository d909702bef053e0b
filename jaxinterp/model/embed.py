"""Token, positional and segment embeddings, and the unembedding."""

from __future__ import annotations

from typing import Optional

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int


class Embed(eqx.Module):
    """``W_E [d_vocab, d_model]``; Gemma multiplies by ``embed_scale`` (sqrt(d_model))."""

    W_E: Float[Array, "d_vocab d_model"]
    scale: Optional[float] = eqx.field(static=True, default=None)

    def __call__(self, tokens: Int[Array, " pos"]) -> Float[Array, "pos d_model"]:
        out = self.W_E[tokens]
        if self.scale is not None:
            # HF casts the normaliser to the activation dtype before multiplying.
            out = out * jnp.asarray(self.scale, out.dtype)
        return out


class PosEmbed(eqx.Module):
    """Learned absolute positions ``W_pos [n_ctx, d_model]``."""

    W_pos: Float[Array, "n_ctx d_model"]

    def __call__(self, n_pos: int, positions: Optional[Int[Array, " pos"]] = None) -> Float[Array, "pos d_model"]:
        """Rows ``0..n_pos-1``, or the rows at ``positions`` (left-padded prompts)."""
        return self.W_pos[:n_pos] if positions is None else self.at(positions)

    def at(self, positions: Int[Array, " pos"]) -> Float[Array, "pos d_model"]:
        """The embeddings of absolute ``positions`` (negative ones, padding, read row 0)."""
        return self.W_pos[jnp.maximum(positions, 0)]


class TokenTypeEmbed(eqx.Module):
    """BERT segment embeddings ``W_token_type [n_token_types, d_model]``."""

    W_token_type: Float[Array, "n_token_types d_model"]

    def __call__(self, token_types: Int[Array, " pos"]) -> Float[Array, "pos d_model"]:
        return self.W_token_type[token_types]


class Unembed(eqx.Module):
    """``logits = x W_U + b_U``."""

    W_U: Float[Array, "d_model d_vocab"]
    b_U: Optional[Float[Array, " d_vocab"]]

    def __call__(self, x: Float[Array, "pos d_model"]) -> Float[Array, "pos d_vocab"]:
        out = x @ self.W_U
        return out if self.b_U is None else out + self.b_U
