"""Gemma, Gemma 2 and Gemma 3 (text-only): ``1 + w`` RMSNorm, sqrt(d_model) embedding
scale, GeGLU, MQA/GQA; Gemma 2 adds soft-capping, alternating local/global attention and
sandwich norms; Gemma 3 adds QK-norm (``1 + w``, per head) and a second rope base for
its sliding-window layers."""

from __future__ import annotations

import math

import numpy as np

from ...core.config import ModelConfig
from ...core.errors import UnsupportedArchitectureError
from .common import rope_settings, stack_layers, windows_from_layer_types
from .llama import base_config, convert_attention, convert_embeddings, convert_gated_mlp
from .qwen3 import convert_qk_norms

MODEL_TYPES = ("gemma", "gemma2", "gemma3_text")
IGNORED = ("*.rotary_emb.inv_freq",)


def config_from_hf(hf: dict) -> ModelConfig:
    d = hf["hidden_size"]
    kw = base_config(
        hf,
        norm_weight_offset=1.0,
        embed_scale=math.sqrt(d),
        tied_embeddings=True,
        act_fn=hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh",
    )
    if kw["act_fn"] == "gelu":  # Gemma checkpoints say "gelu" but were trained with the tanh form
        kw["act_fn"] = "gelu_pytorch_tanh"
    if hf.get("model_type") in ("gemma2", "gemma3_text"):
        n_layers = hf["num_hidden_layers"]
        types = hf.get("layer_types") or [
            "sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)
        ]
        kw.update(
            attn_scale=hf.get("query_pre_attn_scalar", kw["d_head"]) ** -0.5,
            attn_logit_softcap=hf.get("attn_logit_softcapping"),
            final_logit_softcap=hf.get("final_logit_softcapping"),
            layer_windows=windows_from_layer_types({"layer_types": types}, n_layers, hf.get("sliding_window")),
            post_attn_norm=True,
            post_mlp_norm=True,
        )
    if hf.get("model_type") == "gemma3_text":
        kw.update(qk_norm="head", **_gemma3_rope(hf))
    return ModelConfig(**kw)


def _gemma3_rope(hf: dict) -> dict:
    """Gemma 3's two ropes: ``rope_parameters`` per layer type (transformers 5), or the
    older ``rope_theta`` / ``rope_scaling`` (global) and ``rope_local_base_freq`` keys."""
    params = hf.get("rope_parameters") or {}
    if "full_attention" in params:
        theta, scaling, _ = rope_settings({"rope_parameters": params["full_attention"]})
        local = params.get("sliding_attention") or {}
        if local.get("rope_type", "default") != "default":
            raise UnsupportedArchitectureError(
                f"gemma3_text: rope_type {local['rope_type']!r} on the sliding-window layers is not supported "
                "(supported there: default)"
            )
        local_theta = local.get("rope_theta", 10000.0)
    else:
        theta, scaling, _ = rope_settings(hf)
        local_theta = hf.get("rope_local_base_freq", 10000.0)
    return dict(rotary_base=theta, rope_scaling=scaling, rotary_local_base=float(local_theta))


def convert(src, cfg: ModelConfig) -> dict[str, np.ndarray]:
    p: dict[str, np.ndarray] = {}
    convert_embeddings(src, cfg, p)
    convert_attention(src, cfg, p)
    convert_gated_mlp(src, cfg, p)
    if cfg.qk_norm != "none":
        convert_qk_norms(src, cfg, p)
    L = cfg.n_layers
    p["blocks.ln1.w"] = stack_layers(src, "model.layers.{}.input_layernorm.weight", L)
    if cfg.post_attn_norm:  # Gemma 2 names its sandwich norms differently from Llama
        p["blocks.ln1_post.w"] = stack_layers(src, "model.layers.{}.post_attention_layernorm.weight", L)
        p["blocks.ln2.w"] = stack_layers(src, "model.layers.{}.pre_feedforward_layernorm.weight", L)
        p["blocks.ln2_post.w"] = stack_layers(src, "model.layers.{}.post_feedforward_layernorm.weight", L)
    else:
        p["blocks.ln2.w"] = stack_layers(src, "model.layers.{}.post_attention_layernorm.weight", L)
    return p
