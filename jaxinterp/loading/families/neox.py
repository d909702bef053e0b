"""GPT-NeoX / Pythia: parallel attention+MLP, partial rotary, fused per-head QKV."""

from __future__ import annotations

import numpy as np

from ...core.config import ModelConfig
from .common import rope_settings, stack_layers

MODEL_TYPES = ("gpt_neox",)
IGNORED = ("*.rotary_emb.inv_freq", "*.attention.bias", "*.attention.masked_bias")


def config_from_hf(hf: dict) -> ModelConfig:
    d, h = hf["hidden_size"], hf["num_attention_heads"]
    d_head = d // h
    theta, scaling, partial = rope_settings(hf)
    return ModelConfig(
        d_model=d,
        n_layers=hf["num_hidden_layers"],
        n_heads=h,
        d_head=d_head,
        d_vocab=hf["vocab_size"],
        n_ctx=hf.get("max_position_embeddings", 2048),
        d_mlp=hf["intermediate_size"],
        act_fn=hf.get("hidden_act", "gelu"),
        normalization="layernorm",
        norm_eps=hf.get("layer_norm_eps", 1e-5),
        positional="rotary",
        rotary_dim=int(d_head * partial),
        rotary_base=theta,
        rope_scaling=scaling,
        parallel_attn_mlp=bool(hf.get("use_parallel_residual", True)),
        qkv_bias=bool(hf.get("attention_bias", True)),
        o_bias=bool(hf.get("attention_bias", True)),
        mlp_bias=True,
        tied_embeddings=bool(hf.get("tie_word_embeddings", False)),
        family="gpt_neox",
        architecture="GPTNeoXForCausalLM",
    )


def convert(src, cfg: ModelConfig) -> dict[str, np.ndarray]:
    L, H, D, M = cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model
    lay = "gpt_neox.layers.{}."
    p = {"embed.W_E": src.take("gpt_neox.embed_in.weight")}
    # query_key_value's output rows are ordered [head, (q, k, v), d_head].
    qkv = stack_layers(src, lay + "attention.query_key_value.weight", L, lambda a: a.reshape(H, 3, D, M))
    for j, n in enumerate("QKV"):
        p[f"blocks.attn.W_{n}"] = qkv[:, :, j].transpose(0, 1, 3, 2)
    if cfg.qkv_bias:
        b = stack_layers(src, lay + "attention.query_key_value.bias", L, lambda a: a.reshape(H, 3, D))
        for j, n in enumerate("QKV"):
            p[f"blocks.attn.b_{n}"] = b[:, :, j]
    p["blocks.attn.W_O"] = stack_layers(src, lay + "attention.dense.weight", L, lambda a: a.T.reshape(H, D, M))
    if cfg.o_bias:
        p["blocks.attn.b_O"] = stack_layers(src, lay + "attention.dense.bias", L)
    for ours, theirs in (("ln1", "input_layernorm"), ("ln2", "post_attention_layernorm")):
        p[f"blocks.{ours}.w"] = stack_layers(src, lay + theirs + ".weight", L)
        p[f"blocks.{ours}.b"] = stack_layers(src, lay + theirs + ".bias", L)
    p["blocks.mlp.W_in"] = stack_layers(src, lay + "mlp.dense_h_to_4h.weight", L, np.transpose)
    p["blocks.mlp.b_in"] = stack_layers(src, lay + "mlp.dense_h_to_4h.bias", L)
    p["blocks.mlp.W_out"] = stack_layers(src, lay + "mlp.dense_4h_to_h.weight", L, np.transpose)
    p["blocks.mlp.b_out"] = stack_layers(src, lay + "mlp.dense_4h_to_h.bias", L)
    p["ln_final.w"] = src.take("gpt_neox.final_layer_norm.weight")
    p["ln_final.b"] = src.take("gpt_neox.final_layer_norm.bias")
    p["unembed.W_U"] = (src.take("embed_out.weight") if src.has("embed_out.weight") else p["embed.W_E"]).T
    return p
