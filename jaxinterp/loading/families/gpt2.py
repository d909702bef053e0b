"""GPT-2: learned positions, LayerNorm, GELU (tanh), Conv1D ``[in, out]`` weights, tied."""

from __future__ import annotations

import numpy as np

from ...core.config import ModelConfig
from ...core.errors import UnsupportedArchitectureError
from .common import split_layers, stack_layers

MODEL_TYPES = ("gpt2",)
IGNORED = ("*.attn.bias", "*.attn.masked_bias")


def config_from_hf(hf: dict) -> ModelConfig:
    if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("reorder_and_upcast_attn"):
        raise UnsupportedArchitectureError(
            "GPT-2 with scale_attn_by_inverse_layer_idx/reorder_and_upcast_attn is not supported"
        )
    d, h = hf["n_embd"], hf["n_head"]
    return ModelConfig(
        d_model=d,
        n_layers=hf["n_layer"],
        n_heads=h,
        d_head=d // h,
        d_vocab=hf["vocab_size"],
        n_ctx=hf["n_positions"],
        d_mlp=hf.get("n_inner") or 4 * d,
        act_fn=hf.get("activation_function", "gelu_new"),
        normalization="layernorm",
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        positional="learned",
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        tied_embeddings=True,
        family="gpt2",
        architecture="GPT2LMHeadModel",
    )


def convert(src, cfg: ModelConfig) -> dict[str, np.ndarray]:
    src.strip_prefix(("transformer.", ""), "wte.weight")
    L, H, D, M = cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model
    p = {"embed.W_E": src.take("wte.weight"), "pos_embed.W_pos": src.take("wpe.weight")}

    # Conv1D [d_model, 3 * d_model] -> 3 x [head, d_model, d_head], each into its own stacked array.
    qkv = tuple((lambda a, j=j: a.reshape(M, 3, H, D)[:, j].transpose(1, 0, 2)) for j in range(3))
    p["blocks.attn.W_Q"], p["blocks.attn.W_K"], p["blocks.attn.W_V"] = split_layers(
        src, "h.{}.attn.c_attn.weight", L, qkv
    )
    b = stack_layers(src, "h.{}.attn.c_attn.bias", L, lambda a: a.reshape(3, H, D))
    p["blocks.attn.b_Q"], p["blocks.attn.b_K"], p["blocks.attn.b_V"] = b[:, 0], b[:, 1], b[:, 2]
    p["blocks.attn.W_O"] = stack_layers(src, "h.{}.attn.c_proj.weight", L, lambda a: a.reshape(H, D, M))
    p["blocks.attn.b_O"] = stack_layers(src, "h.{}.attn.c_proj.bias", L)
    for ours, theirs in (("ln1", "ln_1"), ("ln2", "ln_2")):
        p[f"blocks.{ours}.w"] = stack_layers(src, f"h.{{}}.{theirs}.weight", L)
        p[f"blocks.{ours}.b"] = stack_layers(src, f"h.{{}}.{theirs}.bias", L)
    p["blocks.mlp.W_in"] = stack_layers(src, "h.{}.mlp.c_fc.weight", L)
    p["blocks.mlp.b_in"] = stack_layers(src, "h.{}.mlp.c_fc.bias", L)
    p["blocks.mlp.W_out"] = stack_layers(src, "h.{}.mlp.c_proj.weight", L)
    p["blocks.mlp.b_out"] = stack_layers(src, "h.{}.mlp.c_proj.bias", L)
    p["ln_final.w"], p["ln_final.b"] = src.take("ln_f.weight"), src.take("ln_f.bias")
    src.prefix = ""
    p["unembed.W_U"] = (src.take("lm_head.weight") if src.has("lm_head.weight") else p["embed.W_E"]).T
    return p
