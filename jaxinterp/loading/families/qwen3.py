"""Qwen3: Llama with QK-norm (an RMSNorm over each head's queries and keys, before
rotary), an explicit ``head_dim``, no QKV bias, optional sliding windows per layer."""

from __future__ import annotations

import numpy as np

from ...core.config import ModelConfig
from .common import stack_layers, windows_from_layer_types
from .llama import base_config, convert_attention, convert_embeddings, convert_gated_mlp

MODEL_TYPES = ("qwen3",)
IGNORED = ("*.rotary_emb.inv_freq",)


def config_from_hf(hf: dict) -> ModelConfig:
    window = hf.get("sliding_window") if hf.get("use_sliding_window") else None
    return ModelConfig(
        **base_config(
            hf,
            qk_norm="head",
            layer_windows=windows_from_layer_types(hf, hf["num_hidden_layers"], window),
        )
    )


def convert_qk_norms(src, cfg: ModelConfig, p: dict, prefix: str = "model.layers.{}.self_attn.") -> None:
    """``q_norm`` / ``k_norm`` weights (``[d_head]`` per head, or the projection's width)."""
    p["blocks.attn.q_norm.w"] = stack_layers(src, prefix + "q_norm.weight", cfg.n_layers)
    p["blocks.attn.k_norm.w"] = stack_layers(src, prefix + "k_norm.weight", cfg.n_layers)


def convert(src, cfg: ModelConfig) -> dict[str, np.ndarray]:
    p: dict[str, np.ndarray] = {}
    convert_embeddings(src, cfg, p)
    convert_attention(src, cfg, p)
    convert_qk_norms(src, cfg, p)
    convert_gated_mlp(src, cfg, p)
    p["blocks.ln1.w"] = stack_layers(src, "model.layers.{}.input_layernorm.weight", cfg.n_layers)
    p["blocks.ln2.w"] = stack_layers(src, "model.layers.{}.post_attention_layernorm.weight", cfg.n_layers)
    return p
