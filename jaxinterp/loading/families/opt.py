"""OPT: learned positions whose table starts 2 rows in (HF's offset: position p reads row
p + 2, so the table is stored from row 2), ReLU, biases everywhere, tied embeddings;
``do_layer_norm_before=False`` (OPT-350m) normalises after each residual add, as BERT
(``post_norm``), with no final norm."""

from __future__ import annotations

import numpy as np

from ...core.config import ModelConfig
from ...core.errors import UnsupportedArchitectureError
from .common import heads_in, heads_out, stack_layers

MODEL_TYPES = ("opt",)
IGNORED = ()
POSITION_OFFSET = 2  # OPTLearnedPositionalEmbedding.offset


def config_from_hf(hf: dict) -> ModelConfig:
    d, h = hf["hidden_size"], hf["num_attention_heads"]
    if (hf.get("word_embed_proj_dim") or d) != d:
        raise UnsupportedArchitectureError(
            f"opt: word_embed_proj_dim={hf['word_embed_proj_dim']} != hidden_size={d} (the project_in / project_out "
            "of OPT-350m) is not supported; supported: word_embed_proj_dim equal to hidden_size"
        )
    if not hf.get("layer_norm_elementwise_affine", True) or hf.get("_remove_final_layer_norm"):
        raise UnsupportedArchitectureError(
            "opt: layer norms without weights (layer_norm_elementwise_affine=False) or _remove_final_layer_norm "
            "are not supported"
        )
    pre = bool(hf.get("do_layer_norm_before", True))
    bias = bool(hf.get("enable_bias", True))
    return ModelConfig(
        d_model=d,
        n_layers=hf["num_hidden_layers"],
        n_heads=h,
        d_head=d // h,
        d_vocab=hf["vocab_size"],
        n_ctx=hf.get("max_position_embeddings", 2048),
        d_mlp=hf["ffn_dim"],
        act_fn=hf.get("activation_function", "relu"),
        normalization="layernorm",
        norm_eps=1e-5,  # nn.LayerNorm's default; OPT's config has no eps
        positional="learned",
        post_norm=not pre,
        qkv_bias=bias,
        o_bias=bias,
        mlp_bias=bias,
        tied_embeddings=bool(hf.get("tie_word_embeddings", True)),
        family="opt",
        architecture="OPTForCausalLM",
    )


def convert(src, cfg: ModelConfig) -> dict[str, np.ndarray]:
    L, H = cfg.n_layers, cfg.n_heads
    src.strip_prefix(("model.decoder.", "decoder."), "embed_tokens.weight")
    lay = "layers.{}."
    p = {
        "embed.W_E": src.take("embed_tokens.weight"),
        "pos_embed.W_pos": src.take("embed_positions.weight")[POSITION_OFFSET:],
    }
    for ours, theirs in (("Q", "q_proj"), ("K", "k_proj"), ("V", "v_proj")):
        p[f"blocks.attn.W_{ours}"] = stack_layers(src, lay + f"self_attn.{theirs}.weight", L, lambda a: heads_in(a, H))
        if cfg.qkv_bias:
            p[f"blocks.attn.b_{ours}"] = stack_layers(
                src, lay + f"self_attn.{theirs}.bias", L, lambda a: a.reshape(H, -1)
            )
    p["blocks.attn.W_O"] = stack_layers(src, lay + "self_attn.out_proj.weight", L, lambda a: heads_out(a, H))
    if cfg.o_bias:
        p["blocks.attn.b_O"] = stack_layers(src, lay + "self_attn.out_proj.bias", L)
    for ours, theirs in (("ln1", "self_attn_layer_norm"), ("ln2", "final_layer_norm")):
        p[f"blocks.{ours}.w"] = stack_layers(src, lay + theirs + ".weight", L)
        p[f"blocks.{ours}.b"] = stack_layers(src, lay + theirs + ".bias", L)
    p["blocks.mlp.W_in"] = stack_layers(src, lay + "fc1.weight", L, np.transpose)
    p["blocks.mlp.W_out"] = stack_layers(src, lay + "fc2.weight", L, np.transpose)
    if cfg.mlp_bias:
        p["blocks.mlp.b_in"] = stack_layers(src, lay + "fc1.bias", L)
        p["blocks.mlp.b_out"] = stack_layers(src, lay + "fc2.bias", L)
    if not cfg.post_norm:
        p["ln_final.w"], p["ln_final.b"] = src.take("final_layer_norm.weight"), src.take("final_layer_norm.bias")
    src.prefix = ""
    p["unembed.W_U"] = (src.take("lm_head.weight") if src.has("lm_head.weight") else p["embed.W_E"]).T
    return p
