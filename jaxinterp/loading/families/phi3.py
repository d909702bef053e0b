"""Phi-3: Llama with fused projections (``qkv_proj`` = [q; k; v] rows, ``gate_up_proj`` =
[gate; up] rows, split here at load), an optional sliding window on every layer, and
longrope scaling (short factors up to ``original_max_position_embeddings``, long ones past it,
cos/sin scaled by the attention factor)."""

from __future__ import annotations

import numpy as np

from ...core.config import ModelConfig
from .common import heads_in, heads_out, stack_layers
from .llama import base_config, convert_embeddings

MODEL_TYPES = ("phi3",)
IGNORED = ("*.rotary_emb.inv_freq",)


def config_from_hf(hf: dict) -> ModelConfig:
    kw = base_config(hf)
    scaling = dict(kw["rope_scaling"] or ())
    if scaling:
        # transformers keeps original_max_position_embeddings at the top level of Phi-3's
        # config; the rope needs it (and longrope's attention factor, n_ctx / it).
        scaling.setdefault("original_max_position_embeddings", hf.get("original_max_position_embeddings", 4096))
        kw["rope_scaling"] = tuple(sorted(scaling.items()))
    if hf.get("sliding_window"):
        kw["layer_windows"] = (int(hf["sliding_window"]),) * hf["num_hidden_layers"]
    return ModelConfig(**kw)


def convert(src, cfg: ModelConfig) -> dict[str, np.ndarray]:
    L, H, K, D, F = cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_mlp
    lay = "model.layers.{}."
    p: dict[str, np.ndarray] = {}
    convert_embeddings(src, cfg, p)
    qkv = stack_layers(src, lay + "self_attn.qkv_proj.weight", L, lambda a: a.reshape((H + 2 * K) * D, -1))
    q, k, v = np.split(qkv, [H * D, (H + K) * D], axis=1)
    p["blocks.attn.W_Q"] = np.stack([heads_in(w, H) for w in q])
    p["blocks.attn.W_K"] = np.stack([heads_in(w, K) for w in k])
    p["blocks.attn.W_V"] = np.stack([heads_in(w, K) for w in v])
    p["blocks.attn.W_O"] = stack_layers(src, lay + "self_attn.o_proj.weight", L, lambda a: heads_out(a, H))
    gate_up = stack_layers(src, lay + "mlp.gate_up_proj.weight", L, lambda a: a.reshape(2 * F, -1))
    p["blocks.mlp.W_gate"] = gate_up[:, :F].transpose(0, 2, 1)
    p["blocks.mlp.W_in"] = gate_up[:, F:].transpose(0, 2, 1)
    p["blocks.mlp.W_out"] = stack_layers(src, lay + "mlp.down_proj.weight", L, np.transpose)
    p["blocks.ln1.w"] = stack_layers(src, lay + "input_layernorm.weight", L)
    p["blocks.ln2.w"] = stack_layers(src, lay + "post_attention_layernorm.weight", L)
    return p
