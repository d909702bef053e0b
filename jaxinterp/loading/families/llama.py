"""Llama, Mistral, Qwen2: RMSNorm, SwiGLU, rotary (with scaling), GQA, sliding windows."""

from __future__ import annotations

import numpy as np

from ...core.config import ModelConfig
from ...core.errors import CheckpointError
from .common import heads_in, heads_out, rope_settings, stack_layers, windows_from_layer_types

MODEL_TYPES = ("llama", "mistral", "qwen2")
IGNORED = ("*.rotary_emb.inv_freq",)


def base_config(hf: dict, **overrides) -> dict:
    """The keyword arguments of `ModelConfig` shared by Llama-like families."""
    d, h = hf["hidden_size"], hf["num_attention_heads"]
    d_head = hf.get("head_dim") or d // h
    theta, scaling, partial = rope_settings(hf)
    n_layers = hf["num_hidden_layers"]
    kw = dict(
        d_model=d,
        n_layers=n_layers,
        n_heads=h,
        d_head=d_head,
        n_kv_heads=hf.get("num_key_value_heads") or h,
        d_vocab=hf["vocab_size"],
        n_ctx=hf.get("max_position_embeddings", 2048),
        d_mlp=hf["intermediate_size"],
        act_fn=hf.get("hidden_act") or hf.get("hidden_activation") or "silu",
        normalization="rmsnorm",
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        positional="rotary",
        rotary_dim=int(d_head * partial),
        rotary_base=theta,
        rope_scaling=scaling,
        gated_mlp=True,
        qkv_bias=bool(hf.get("attention_bias", False)),
        o_bias=bool(hf.get("attention_bias", False)),
        mlp_bias=bool(hf.get("mlp_bias", False)),
        tied_embeddings=bool(hf.get("tie_word_embeddings", False)),
        family=hf.get("model_type", "llama"),
        architecture=(hf.get("architectures") or [""])[0],
    )
    if dict(scaling or ()).get("rope_type", dict(scaling or ()).get("type")) == "dynamic":
        # Dynamic NTK stretches the rope past max_position_embeddings (up to `factor` times
        # it, the context it was made for); that length stays in the scaling.
        max_len = kw["n_ctx"]
        kw["rope_scaling"] = tuple(sorted({**dict(scaling or ()), "max_position_embeddings": max_len}.items()))
        kw["n_ctx"] = int(max_len * dict(scaling or ())["factor"])
    kw.update(overrides)
    return kw


def config_from_hf(hf: dict) -> ModelConfig:
    kind = hf.get("model_type", "llama")
    n_layers = hf["num_hidden_layers"]
    overrides: dict = {}
    if kind == "qwen2":
        overrides.update(qkv_bias=True, o_bias=False)
        window = hf.get("sliding_window") if hf.get("use_sliding_window") else None
        overrides["layer_windows"] = windows_from_layer_types(hf, n_layers, window)
    elif kind == "mistral" and hf.get("sliding_window"):
        overrides["layer_windows"] = (int(hf["sliding_window"]),) * n_layers
    return ModelConfig(**base_config(hf, **overrides))


def convert_attention(src, cfg: ModelConfig, p: dict, prefix: str = "model.layers.{}.self_attn.") -> None:
    L, H, K = cfg.n_layers, cfg.n_heads, cfg.n_kv_heads
    for ours, theirs, n in (("Q", "q_proj", H), ("K", "k_proj", K), ("V", "v_proj", K)):
        p[f"blocks.attn.W_{ours}"] = stack_layers(src, prefix + theirs + ".weight", L, lambda a, n=n: heads_in(a, n))
        if cfg.qkv_bias:
            p[f"blocks.attn.b_{ours}"] = stack_layers(
                src, prefix + theirs + ".bias", L, lambda a, n=n: a.reshape(n, -1)
            )
    p["blocks.attn.W_O"] = stack_layers(src, prefix + "o_proj.weight", L, lambda a: heads_out(a, H))
    if cfg.o_bias:
        p["blocks.attn.b_O"] = stack_layers(src, prefix + "o_proj.bias", L)


def convert_gated_mlp(src, cfg: ModelConfig, p: dict, prefix: str = "model.layers.{}.mlp.") -> None:
    L = cfg.n_layers
    p["blocks.mlp.W_gate"] = stack_layers(src, prefix + "gate_proj.weight", L, np.transpose)
    p["blocks.mlp.W_in"] = stack_layers(src, prefix + "up_proj.weight", L, np.transpose)
    p["blocks.mlp.W_out"] = stack_layers(src, prefix + "down_proj.weight", L, np.transpose)
    if cfg.mlp_bias:
        p["blocks.mlp.b_gate"] = stack_layers(src, prefix + "gate_proj.bias", L)
        p["blocks.mlp.b_in"] = stack_layers(src, prefix + "up_proj.bias", L)
        p["blocks.mlp.b_out"] = stack_layers(src, prefix + "down_proj.bias", L)


def convert_embeddings(src, cfg: ModelConfig, p: dict) -> None:
    p["embed.W_E"] = src.take("model.embed_tokens.weight")
    p["ln_final.w"] = src.take("model.norm.weight")
    if src.has("lm_head.weight"):
        p["unembed.W_U"] = src.take("lm_head.weight").T
    elif cfg.tied_embeddings:
        p["unembed.W_U"] = p["embed.W_E"].T
    else:  # untied: the unembedding is its own tensor, never silently the embedding
        raise CheckpointError(
            f"checkpoint {src.origin} is missing tensor 'lm_head.weight': config.json does not tie the "
            "embeddings (tie_word_embeddings is false or absent), so the unembedding must be stored"
        )


def convert(src, cfg: ModelConfig) -> dict[str, np.ndarray]:
    p: dict[str, np.ndarray] = {}
    convert_embeddings(src, cfg, p)
    convert_attention(src, cfg, p)
    convert_gated_mlp(src, cfg, p)
    p["blocks.ln1.w"] = stack_layers(src, "model.layers.{}.input_layernorm.weight", cfg.n_layers)
    p["blocks.ln2.w"] = stack_layers(src, "model.layers.{}.post_attention_layernorm.weight", cfg.n_layers)
    return p
