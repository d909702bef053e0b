"""Phi-3: Llama with fused projections (``qkv_proj`` = [q; k; v] rows, ``gate_up_proj`` =
[gate; up] rows, split here at load), an optional sliding window on every layer, and
longrope scaling (short factors up to ``original_max_position_embeddings``, long ones past it,
cos/sin scaled by the attention factor)."""

from __future__ import annotations

import numpy as np

from ...core.config import ModelConfig
from .common import heads_in, heads_out, split_layers, stack_layers
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
    # The fused qkv rows are [q; k; v]: each block goes into its own stacked array.
    rows = ((0, H * D, H), (H * D, (H + K) * D, K), ((H + K) * D, (H + 2 * K) * D, K))
    qkv = tuple((lambda a, b=b, e=e, n=n: heads_in(a.reshape((H + 2 * K) * D, -1)[b:e], n)) for b, e, n in rows)
    p["blocks.attn.W_Q"], p["blocks.attn.W_K"], p["blocks.attn.W_V"] = split_layers(
        src, lay + "self_attn.qkv_proj.weight", L, qkv
    )
    p["blocks.attn.W_O"] = stack_layers(src, lay + "self_attn.o_proj.weight", L, lambda a: heads_out(a, H))
    gate_up = (lambda a: a.reshape(2 * F, -1)[:F].T, lambda a: a.reshape(2 * F, -1)[F:].T)
    p["blocks.mlp.W_gate"], p["blocks.mlp.W_in"] = split_layers(src, lay + "mlp.gate_up_proj.weight", L, gate_up)
    p["blocks.mlp.W_out"] = stack_layers(src, lay + "mlp.down_proj.weight", L, np.transpose)
    p["blocks.ln1.w"] = stack_layers(src, lay + "input_layernorm.weight", L)
    p["blocks.ln2.w"] = stack_layers(src, lay + "post_attention_layernorm.weight", L)
    return p
