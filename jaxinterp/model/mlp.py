"""Feed-forward layers: dense MLP (GELU/ReLU/...), gated MLP (SwiGLU/GeGLU), top-k MoE."""

from __future__ import annotations

from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..core.config import ModelConfig


def activation(name: str):
    """The activation function for a config's ``act_fn`` name (HuggingFace names)."""
    table = {
        "gelu": lambda x: jax.nn.gelu(x, approximate=False),
        "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
        "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
        "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
        "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
        "relu": jax.nn.relu,
        "silu": jax.nn.silu,
    }
    if name not in table:
        raise ValueError(f"unsupported activation {name!r}; supported: {sorted(table)}")
    return table[name]


class MLP(eqx.Module):
    """``out = act(x W_in + b_in) W_out + b_out``; gated: ``act(x W_gate) * (x W_in)``.

    As in TransformerLens, ``mlp.pre`` is the (gate) pre-activation and
    ``mlp.pre_linear`` the linear branch of a gated MLP.
    """

    W_in: Float[Array, "*layer d_model d_mlp"]
    b_in: Optional[Float[Array, "*layer d_mlp"]]
    W_gate: Optional[Float[Array, "*layer d_model d_mlp"]]
    b_gate: Optional[Float[Array, "*layer d_mlp"]]
    W_out: Float[Array, "*layer d_mlp d_model"]
    b_out: Optional[Float[Array, "*layer d_model"]]

    def __call__(self, x: Float[Array, "pos d_model"], hooks, cfg: ModelConfig) -> Float[Array, "pos d_model"]:
        act = activation(cfg.act_fn)
        linear = x @ self.W_in
        if self.b_in is not None:
            linear = linear + self.b_in
        if self.W_gate is not None:
            gate = x @ self.W_gate
            pre = hooks("mlp.pre", gate if self.b_gate is None else gate + self.b_gate)
            linear = hooks("mlp.pre_linear", linear)
            post = hooks("mlp.post", act(pre) * linear)
        else:
            pre = hooks("mlp.pre", linear)
            post = hooks("mlp.post", act(pre))
        out = post @ self.W_out
        return out if self.b_out is None else out + self.b_out


class MoE(eqx.Module):
    """Top-k mixture of gated experts (Mixtral).

    Router: softmax over all experts, keep the top k, renormalise them to sum to 1
    (``cfg.moe_renormalize``; otherwise they keep their softmax values). Every expert is
    computed densely (exact, simple, differentiable); ``mlp.expert_weights`` is zero
    off the top k, so the output equals the sparse computation.
    """

    W_router: Float[Array, "*layer d_model expert"]
    W_in: Float[Array, "*layer expert d_model d_mlp"]
    W_gate: Float[Array, "*layer expert d_model d_mlp"]
    W_out: Float[Array, "*layer expert d_mlp d_model"]

    def __call__(self, x: Float[Array, "pos d_model"], hooks, cfg: ModelConfig) -> Float[Array, "pos d_model"]:
        act = activation(cfg.act_fn)
        logits = hooks("mlp.router_logits", x @ self.W_router)
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        top, idx = jax.lax.top_k(probs, cfg.experts_per_token)
        if cfg.moe_renormalize:
            top = top / top.sum(-1, keepdims=True)
        weights = jnp.sum(jax.nn.one_hot(idx, cfg.n_experts, dtype=top.dtype) * top[..., None], axis=-2)
        weights = hooks("mlp.expert_weights", weights.astype(x.dtype))
        pre = hooks("mlp.pre", jnp.einsum("pm,emn->pen", x, self.W_gate))
        linear = hooks("mlp.pre_linear", jnp.einsum("pm,emn->pen", x, self.W_in))
        post = hooks("mlp.post", act(pre) * linear)
        per_expert = jnp.einsum("pen,enm->pem", post, self.W_out)
        return jnp.einsum("pe,pem->pm", weights, per_expert)
