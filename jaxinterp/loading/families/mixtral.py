"""Mixtral: Llama/Mistral attention with a top-k mixture-of-experts MLP."""

from __future__ import annotations

import numpy as np

from ...core.config import ModelConfig
from .common import convert_experts, stack_layers
from .llama import base_config, convert_attention, convert_embeddings

MODEL_TYPES = ("mixtral",)
IGNORED = ("*.rotary_emb.inv_freq",)


def config_from_hf(hf: dict) -> ModelConfig:
    n_layers = hf["num_hidden_layers"]
    window = hf.get("sliding_window")
    return ModelConfig(
        **base_config(
            hf,
            n_experts=hf["num_local_experts"],
            experts_per_token=hf["num_experts_per_tok"],
            layer_windows=(int(window),) * n_layers if window else None,
        )
    )


def convert(src, cfg: ModelConfig) -> dict[str, np.ndarray]:
    p: dict[str, np.ndarray] = {}
    convert_embeddings(src, cfg, p)
    convert_attention(src, cfg, p)
    convert_experts(src, cfg, p, "model.layers.{}.block_sparse_moe.", ("w1", "w3", "w2"))
    L = cfg.n_layers
    p["blocks.ln1.w"] = stack_layers(src, "model.layers.{}.input_layernorm.weight", L)
    p["blocks.ln2.w"] = stack_layers(src, "model.layers.{}.post_attention_layernorm.weight", L)
    return p
