"""Qwen3-MoE: Qwen3 attention (per-head QK-norm) with a top-k mixture of SwiGLU experts in
every layer. The router keeps the top k of a softmax over all experts and renormalises
them (``norm_topk_prob=True``, as the released checkpoints; Mixtral's rule) or keeps
their softmax values (``norm_topk_prob=False``, `ModelConfig.moe_renormalize`).
Checkpoints with dense MLP layers among the sparse ones (``mlp_only_layers``,
``decoder_sparse_step > 1``) are refused."""

from __future__ import annotations

import numpy as np

from ...core.config import ModelConfig
from ...core.errors import UnsupportedArchitectureError
from .common import convert_experts, stack_layers, windows_from_layer_types
from .llama import base_config, convert_attention, convert_embeddings
from .qwen3 import convert_qk_norms

MODEL_TYPES = ("qwen3_moe",)
IGNORED = ("*.rotary_emb.inv_freq",)


def config_from_hf(hf: dict) -> ModelConfig:
    n_layers = hf["num_hidden_layers"]
    if hf.get("mlp_only_layers") or hf.get("decoder_sparse_step", 1) != 1:
        raise UnsupportedArchitectureError(
            "qwen3_moe: dense MLP layers among the experts (mlp_only_layers / decoder_sparse_step > 1) are not "
            "supported; supported: experts in every layer"
        )
    window = hf.get("sliding_window") if hf.get("use_sliding_window") else None
    return ModelConfig(
        **base_config(
            hf,
            d_mlp=hf["moe_intermediate_size"],
            n_experts=hf.get("num_experts") or hf["num_local_experts"],  # the hub name; transformers 5 saves the other
            experts_per_token=hf["num_experts_per_tok"],
            qk_norm="head",
            moe_renormalize=bool(hf.get("norm_topk_prob", False)),  # transformers' default: False
            layer_windows=windows_from_layer_types(hf, n_layers, window),
        )
    )


def convert(src, cfg: ModelConfig) -> dict[str, np.ndarray]:
    p: dict[str, np.ndarray] = {}
    convert_embeddings(src, cfg, p)
    convert_attention(src, cfg, p)
    convert_qk_norms(src, cfg, p)
    convert_experts(src, cfg, p, "model.layers.{}.mlp.", ("gate_proj", "up_proj", "down_proj"))
    L = cfg.n_layers
    p["blocks.ln1.w"] = stack_layers(src, "model.layers.{}.input_layernorm.weight", L)
    p["blocks.ln2.w"] = stack_layers(src, "model.layers.{}.post_attention_layernorm.weight", L)
    return p
