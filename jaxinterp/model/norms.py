"""LayerNorm and RMSNorm (incl. Gemma's ``1 + w``), with TransformerLens hook sites."""

from __future__ import annotations

from typing import Optional

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float


class Norm(eqx.Module):
    """``normalized = x_centered / scale * (offset + w) + b``.

    ``scale`` (site ``*.scale``, ``[pos, 1]``) is the divisor
    ``sqrt(mean(x_centered^2) + eps)``; LayerNorm centres first, RMSNorm does not.
    Computed in float32 whatever the model dtype (as HuggingFace does).
    """

    w: Float[Array, "*layer d_model"]
    b: Optional[Float[Array, "*layer d_model"]]
    kind: str = eqx.field(static=True)
    eps: float = eqx.field(static=True)
    weight_offset: float = eqx.field(static=True, default=0.0)

    def __call__(self, x: Float[Array, "pos d_model"], hooks, prefix: str) -> Float[Array, "pos d_model"]:
        dtype = x.dtype
        x = x.astype(jnp.float32)
        if self.kind == "layernorm":
            x = x - x.mean(-1, keepdims=True)
        scale = hooks(f"{prefix}.scale", jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + self.eps))
        out = x / scale
        w = self.w.astype(jnp.float32) + self.weight_offset
        if self.kind == "rmsnorm" and self.weight_offset == 0.0:
            # Llama-style RMSNorm casts back before the weight multiply.
            out = out.astype(dtype) * self.w
        else:
            out = out * w
        if self.b is not None:
            out = out + self.b.astype(out.dtype)
        return hooks(f"{prefix}.normalized", out.astype(dtype))
