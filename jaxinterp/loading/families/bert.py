"""BERT-style encoders: bidirectional, post-norm, learned positions, segment embeddings.
Loaded as the encoder (``BertModel``): the model returns the final hidden states."""

from __future__ import annotations

import numpy as np

from ...core.config import ModelConfig
from .common import heads_in, heads_out, stack_layers

MODEL_TYPES = ("bert",)
IGNORED = ("pooler.*", "cls.*", "*.position_ids")


def config_from_hf(hf: dict) -> ModelConfig:
    d, h = hf["hidden_size"], hf["num_attention_heads"]
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("only absolute position embeddings are supported for BERT")
    return ModelConfig(
        d_model=d,
        n_layers=hf["num_hidden_layers"],
        n_heads=h,
        d_head=d // h,
        d_vocab=hf["vocab_size"],
        n_ctx=hf.get("max_position_embeddings", 512),
        d_mlp=hf["intermediate_size"],
        act_fn=hf.get("hidden_act", "gelu"),
        normalization="layernorm",
        norm_eps=hf.get("layer_norm_eps", 1e-12),
        positional="learned",
        post_norm=True,
        causal=False,
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        embed_norm=True,
        n_token_types=hf.get("type_vocab_size", 2),
        has_unembed=False,
        family="bert",
        architecture="BertModel",
    )


def convert(src, cfg: ModelConfig) -> dict[str, np.ndarray]:
    src.strip_prefix(("bert.", ""), "embeddings.word_embeddings.weight")
    L, H = cfg.n_layers, cfg.n_heads
    lay = "encoder.layer.{}."
    p = {
        "embed.W_E": src.take("embeddings.word_embeddings.weight"),
        "pos_embed.W_pos": src.take("embeddings.position_embeddings.weight"),
        "token_type_embed.W_token_type": src.take("embeddings.token_type_embeddings.weight"),
        "embed_ln.w": src.take("embeddings.LayerNorm.weight"),
        "embed_ln.b": src.take("embeddings.LayerNorm.bias"),
    }
    for ours, theirs in (("Q", "query"), ("K", "key"), ("V", "value")):
        p[f"blocks.attn.W_{ours}"] = stack_layers(
            src, lay + f"attention.self.{theirs}.weight", L, lambda a: heads_in(a, H)
        )
        p[f"blocks.attn.b_{ours}"] = stack_layers(
            src, lay + f"attention.self.{theirs}.bias", L, lambda a: a.reshape(H, -1)
        )
    p["blocks.attn.W_O"] = stack_layers(src, lay + "attention.output.dense.weight", L, lambda a: heads_out(a, H))
    p["blocks.attn.b_O"] = stack_layers(src, lay + "attention.output.dense.bias", L)
    for ours, theirs in (("ln1", "attention.output.LayerNorm"), ("ln2", "output.LayerNorm")):
        p[f"blocks.{ours}.w"] = stack_layers(src, lay + theirs + ".weight", L)
        p[f"blocks.{ours}.b"] = stack_layers(src, lay + theirs + ".bias", L)
    p["blocks.mlp.W_in"] = stack_layers(src, lay + "intermediate.dense.weight", L, np.transpose)
    p["blocks.mlp.b_in"] = stack_layers(src, lay + "intermediate.dense.bias", L)
    p["blocks.mlp.W_out"] = stack_layers(src, lay + "output.dense.weight", L, np.transpose)
    p["blocks.mlp.b_out"] = stack_layers(src, lay + "output.dense.bias", L)
    return p
