"""Phi-1/1.5/2 (``model_type="phi"``) and StableLM: partial rotate-half rotary, LayerNorm.

Phi: a parallel block with one LayerNorm read by attention and MLP (stored as ``ln1`` and a
copy in ``ln2``, as GPT-J), biases everywhere, a GELU MLP, an LM head with a bias.
StableLM: Llama's gated MLP with LayerNorms (with biases), optional QKV bias, sequential or
(``use_parallel_residual``) parallel blocks. Their QK-LayerNorm variants (``qk_layernorm``)
are refused: a LayerNorm per head (with a bias) is not the model's RMS QK-norm."""

from __future__ import annotations

import numpy as np

from ...core.config import ModelConfig
from ...core.errors import UnsupportedArchitectureError
from .common import heads_in, heads_out, stack_layers
from .llama import base_config, convert_attention, convert_gated_mlp

MODEL_TYPES = ("phi", "stablelm")
IGNORED = ("*.rotary_emb.inv_freq",)


def config_from_hf(hf: dict) -> ModelConfig:
    kind = hf.get("model_type")
    if hf.get("qk_layernorm"):
        raise UnsupportedArchitectureError(
            f"{kind}: qk_layernorm=True (a LayerNorm per head on queries and keys) is not supported; "
            "supported: qk_layernorm=False"
        )
    kw = base_config(
        hf,
        normalization="layernorm",
        norm_eps=hf.get("layer_norm_eps", 1e-5),
        norm_bias=True,
        act_fn=hf.get("hidden_act", "gelu_new" if kind == "phi" else "silu"),
    )
    if kind == "phi":
        kw.update(
            gated_mlp=False,
            parallel_attn_mlp=True,
            qkv_bias=True,
            o_bias=True,
            mlp_bias=True,
            unembed_bias=True,
            architecture="PhiForCausalLM",
        )
    else:
        kw.update(
            parallel_attn_mlp=bool(hf.get("use_parallel_residual", False)),
            qkv_bias=bool(hf.get("use_qkv_bias", False)),
            o_bias=False,
            mlp_bias=False,
            architecture="StableLmForCausalLM",
        )
    return ModelConfig(**kw)


def _layernorm(src, p: dict, ours: str, theirs: str, L: int) -> None:
    p[f"{ours}.w"] = stack_layers(src, theirs + ".weight", L) if L else src.take(theirs + ".weight")
    p[f"{ours}.b"] = stack_layers(src, theirs + ".bias", L) if L else src.take(theirs + ".bias")


def _phi_attention(src, cfg: ModelConfig, p: dict) -> None:
    """q/k/v_proj with biases, and the output projection ``dense`` (with a bias)."""
    L, H, K = cfg.n_layers, cfg.n_heads, cfg.n_kv_heads
    att = "model.layers.{}.self_attn."
    for ours, theirs, n in (("Q", "q_proj", H), ("K", "k_proj", K), ("V", "v_proj", K)):
        p[f"blocks.attn.W_{ours}"] = stack_layers(src, att + theirs + ".weight", L, lambda a, n=n: heads_in(a, n))
        p[f"blocks.attn.b_{ours}"] = stack_layers(src, att + theirs + ".bias", L, lambda a, n=n: a.reshape(n, -1))
    p["blocks.attn.W_O"] = stack_layers(src, att + "dense.weight", L, lambda a: heads_out(a, H))
    p["blocks.attn.b_O"] = stack_layers(src, att + "dense.bias", L)


def convert(src, cfg: ModelConfig) -> dict[str, np.ndarray]:
    L = cfg.n_layers
    lay = "model.layers.{}."
    p: dict[str, np.ndarray] = {"embed.W_E": src.take("model.embed_tokens.weight")}
    _layernorm(src, p, "blocks.ln1", lay + "input_layernorm", L)
    if cfg.family == "phi" or cfg.parallel_attn_mlp:
        p["blocks.ln2.w"], p["blocks.ln2.b"] = p["blocks.ln1.w"].copy(), p["blocks.ln1.b"].copy()
    else:
        _layernorm(src, p, "blocks.ln2", lay + "post_attention_layernorm", L)
    if cfg.family == "phi":
        _phi_attention(src, cfg, p)
        p["blocks.mlp.W_in"] = stack_layers(src, lay + "mlp.fc1.weight", L, np.transpose)
        p["blocks.mlp.b_in"] = stack_layers(src, lay + "mlp.fc1.bias", L)
        p["blocks.mlp.W_out"] = stack_layers(src, lay + "mlp.fc2.weight", L, np.transpose)
        p["blocks.mlp.b_out"] = stack_layers(src, lay + "mlp.fc2.bias", L)
        _layernorm(src, p, "ln_final", "model.final_layernorm", 0)
        p["unembed.b_U"] = src.take("lm_head.bias")
    else:
        convert_attention(src, cfg, p)
        convert_gated_mlp(src, cfg, p)
        _layernorm(src, p, "ln_final", "model.norm", 0)
    p["unembed.W_U"] = (src.take("lm_head.weight") if src.has("lm_head.weight") else p["embed.W_E"]).T
    return p
