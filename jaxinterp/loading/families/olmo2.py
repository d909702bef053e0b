"""OLMo-2: Llama-like, but the norms sit on the attention and MLP *outputs* (before the
residual add; no norm on their inputs), and QK-norm covers the whole query / key
projection (``n_heads * d_head`` features, not each head)."""

from __future__ import annotations

import numpy as np

from ...core.config import ModelConfig
from .common import stack_layers
from .llama import base_config, convert_attention, convert_embeddings, convert_gated_mlp
from .qwen3 import convert_qk_norms

MODEL_TYPES = ("olmo2",)
IGNORED = ("*.rotary_emb.inv_freq",)


def config_from_hf(hf: dict) -> ModelConfig:
    return ModelConfig(
        **base_config(
            hf,
            qk_norm="projection",
            pre_norm=False,
            post_attn_norm=True,
            post_mlp_norm=True,
        )
    )


def convert(src, cfg: ModelConfig) -> dict[str, np.ndarray]:
    p: dict[str, np.ndarray] = {}
    convert_embeddings(src, cfg, p)
    convert_attention(src, cfg, p)
    convert_qk_norms(src, cfg, p)
    convert_gated_mlp(src, cfg, p)
    L = cfg.n_layers
    p["blocks.ln1_post.w"] = stack_layers(src, "model.layers.{}.post_attention_layernorm.weight", L)
    p["blocks.ln2_post.w"] = stack_layers(src, "model.layers.{}.post_feedforward_layernorm.weight", L)
    return p
