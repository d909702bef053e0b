"""GPT-J: a parallel block with one LayerNorm read by both attention and MLP (stored as
``ln1`` and a copy in ``ln2``), interleaved rotary (GPT-J's rotate-every-two) on the first
``rotary_dim`` features of each head, no attention biases, an LM head with a bias."""

from __future__ import annotations

import numpy as np

from ...core.config import ModelConfig
from .common import heads_in, heads_out, stack_layers

MODEL_TYPES = ("gptj",)
IGNORED = ("*.attn.bias", "*.attn.masked_bias", "*.embed_positions")


def config_from_hf(hf: dict) -> ModelConfig:
    d, h = hf["n_embd"], hf["n_head"]
    return ModelConfig(
        d_model=d,
        n_layers=hf["n_layer"],
        n_heads=h,
        d_head=d // h,
        d_vocab=hf["vocab_size"],
        n_ctx=hf.get("n_positions", 2048),
        d_mlp=hf.get("n_inner") or 4 * d,
        act_fn=hf.get("activation_function", "gelu_new"),
        normalization="layernorm",
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        positional="rotary",
        rotary_dim=hf.get("rotary_dim") or d // h,
        rotary_base=10000.0,  # fixed in GPT-J's code
        rotary_interleaved=True,
        parallel_attn_mlp=True,
        mlp_bias=True,
        unembed_bias=True,
        tied_embeddings=bool(hf.get("tie_word_embeddings", False)),
        family="gptj",
        architecture="GPTJForCausalLM",
    )


def convert(src, cfg: ModelConfig) -> dict[str, np.ndarray]:
    L, H = cfg.n_layers, cfg.n_heads
    lay = "transformer.h.{}."
    p = {"embed.W_E": src.take("transformer.wte.weight")}
    for ours, theirs in (("Q", "q_proj"), ("K", "k_proj"), ("V", "v_proj")):
        p[f"blocks.attn.W_{ours}"] = stack_layers(src, lay + f"attn.{theirs}.weight", L, lambda a: heads_in(a, H))
    p["blocks.attn.W_O"] = stack_layers(src, lay + "attn.out_proj.weight", L, lambda a: heads_out(a, H))
    w, b = stack_layers(src, lay + "ln_1.weight", L), stack_layers(src, lay + "ln_1.bias", L)
    p["blocks.ln1.w"], p["blocks.ln1.b"], p["blocks.ln2.w"], p["blocks.ln2.b"] = w, b, w.copy(), b.copy()
    p["blocks.mlp.W_in"] = stack_layers(src, lay + "mlp.fc_in.weight", L, np.transpose)
    p["blocks.mlp.b_in"] = stack_layers(src, lay + "mlp.fc_in.bias", L)
    p["blocks.mlp.W_out"] = stack_layers(src, lay + "mlp.fc_out.weight", L, np.transpose)
    p["blocks.mlp.b_out"] = stack_layers(src, lay + "mlp.fc_out.bias", L)
    p["ln_final.w"], p["ln_final.b"] = src.take("transformer.ln_f.weight"), src.take("transformer.ln_f.bias")
    p["unembed.W_U"] = (src.take("lm_head.weight") if src.has("lm_head.weight") else p["embed.W_E"]).T
    p["unembed.b_U"] = src.take("lm_head.bias")
    return p
