"""Tiny random HuggingFace models of every supported family (test-only, needs torch)."""

from __future__ import annotations

import functools
import os
import tempfile
import zlib

TINY = dict(vocab_size=101, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4)


def _configs():
    import transformers as T

    return {
        "gpt2": (
            T.GPT2Config(
                vocab_size=101, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0
            ),
            T.GPT2LMHeadModel,
        ),
        "neox": (T.GPTNeoXConfig(**TINY, rotary_pct=0.5, max_position_embeddings=64), T.GPTNeoXForCausalLM),
        "neox_sequential": (
            T.GPTNeoXConfig(**TINY, rotary_pct=0.25, use_parallel_residual=False),
            T.GPTNeoXForCausalLM,
        ),
        "llama": (
            T.LlamaConfig(
                **TINY,
                num_key_value_heads=2,
                rope_scaling={
                    "rope_type": "llama3",
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 8,
                },
            ),
            T.LlamaForCausalLM,
        ),
        "llama_tied": (
            T.LlamaConfig(**TINY, num_key_value_heads=1, tie_word_embeddings=True, attention_bias=True, mlp_bias=True),
            T.LlamaForCausalLM,
        ),
        "mistral": (T.MistralConfig(**TINY, num_key_value_heads=2, sliding_window=4, head_dim=8), T.MistralForCausalLM),
        "qwen2": (T.Qwen2Config(**TINY, num_key_value_heads=2), T.Qwen2ForCausalLM),
        "gemma": (T.GemmaConfig(**TINY, num_key_value_heads=1, head_dim=8), T.GemmaForCausalLM),
        "gemma2": (
            T.Gemma2Config(
                **TINY,
                num_key_value_heads=2,
                head_dim=8,
                sliding_window=4,
                query_pre_attn_scalar=16,
                attn_logit_softcapping=2.0,
                final_logit_softcapping=3.0,
            ),
            T.Gemma2ForCausalLM,
        ),
        "mixtral": (
            T.MixtralConfig(**TINY, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2),
            T.MixtralForCausalLM,
        ),
        "bert": (T.BertConfig(**TINY), T.BertModel),
        # New families (tests/test_parity_new_families.py). head_dim 12 != hidden/heads = 8.
        "qwen3": (T.Qwen3Config(**TINY, num_key_value_heads=2, head_dim=12), T.Qwen3ForCausalLM),
        "qwen3_sliding": (
            T.Qwen3Config(
                **TINY,
                num_key_value_heads=1,
                use_sliding_window=True,
                sliding_window=4,
                layer_types=["full_attention", "sliding_attention"],
            ),
            T.Qwen3ForCausalLM,
        ),
        "olmo2": (T.Olmo2Config(**TINY, num_key_value_heads=2), T.Olmo2ForCausalLM),
        # Local layers 0 and 2 (window 4, rope base 100), a global layer 1 with linear rope scaling.
        "gemma3": (
            T.Gemma3TextConfig(
                **{**TINY, "num_hidden_layers": 3},
                num_key_value_heads=2,
                head_dim=8,
                sliding_window=4,
                query_pre_attn_scalar=16,
                final_logit_softcapping=3.0,
                layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                rope_parameters={
                    "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
                    "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0},
                },
            ),
            T.Gemma3ForCausalLM,
        ),
        # Longrope past original_max_position_embeddings=8 (the parity test runs 12 tokens: long
        # factors, and 6: short), a window of 6 on every layer, fused qkv / gate_up.
        "phi3": (
            T.Phi3Config(
                **TINY,
                num_key_value_heads=2,
                max_position_embeddings=64,
                original_max_position_embeddings=8,
                rope_scaling={
                    "type": "longrope",
                    "short_factor": [1.0, 1.5, 2.0, 3.0],
                    "long_factor": [2.0, 3.0, 5.0, 7.0],
                },
                sliding_window=6,
                pad_token_id=0,
                bos_token_id=0,
                eos_token_id=0,
            ),
            T.Phi3ForCausalLM,
        ),
        # YaRN: factor 4 over an original context of 8 (the attention factor 0.1 ln 4 + 1 scales cos/sin).
        "llama_yarn": (
            T.LlamaConfig(
                **TINY,
                num_key_value_heads=2,
                rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8},
            ),
            T.LlamaForCausalLM,
        ),
        # Dynamic NTK past max_position_embeddings=8 (12 tokens: the base stretched).
        "llama_dynamic": (
            T.LlamaConfig(
                **TINY,
                max_position_embeddings=8,
                rope_scaling={"rope_type": "dynamic", "factor": 2.0},
                initializer_range=0.1,  # larger weights: the stretched base moves the logits well past 1e-4
            ),
            T.LlamaForCausalLM,
        ),
        # rotary_dim 4 of d_head 8: interleaved rotary on part of each head.
        "gptj": (
            T.GPTJConfig(
                vocab_size=101,
                n_embd=32,
                n_layer=2,
                n_head=4,
                rotary_dim=4,
                n_positions=64,
                initializer_range=0.1,  # larger weights: rotary changes the logits well past the tolerance
                bos_token_id=0,
                eos_token_id=0,
            ),
            T.GPTJForCausalLM,
        ),
        "opt": (
            T.OPTConfig(
                **{k: v for k, v in TINY.items() if k != "intermediate_size"},
                ffn_dim=48,
                max_position_embeddings=64,
                pad_token_id=1,
                bos_token_id=0,
                eos_token_id=0,
            ),
            T.OPTForCausalLM,
        ),
        "opt_post_norm": (
            T.OPTConfig(
                **{k: v for k, v in TINY.items() if k != "intermediate_size"},
                ffn_dim=48,
                max_position_embeddings=64,
                do_layer_norm_before=False,
                pad_token_id=1,
                bos_token_id=0,
                eos_token_id=0,
            ),
            T.OPTForCausalLM,
        ),
        # Experts of width 24 (moe_intermediate_size), top 2 of 4, renormalised; per-head QK-norm.
        "qwen3_moe": (
            T.Qwen3MoeConfig(
                **TINY,
                moe_intermediate_size=24,
                num_key_value_heads=2,
                head_dim=8,
                num_experts=4,
                num_experts_per_tok=2,
                norm_topk_prob=True,
                initializer_range=0.1,  # routing that differs per token
            ),
            T.Qwen3MoeForCausalLM,
        ),
        # The same without renormalising the top-k router weights (transformers' default).
        "qwen3_moe_unnormalized": (
            T.Qwen3MoeConfig(
                **TINY,
                moe_intermediate_size=24,
                num_key_value_heads=2,
                head_dim=8,
                num_experts=4,
                num_experts_per_tok=2,
                norm_topk_prob=False,
                initializer_range=0.1,  # routing that differs per token
            ),
            T.Qwen3MoeForCausalLM,
        ),
        # Partial rotate-half rotary (a quarter / half of each head) with parallel blocks.
        "phi2": (
            T.PhiConfig(**TINY, partial_rotary_factor=0.5, max_position_embeddings=64, initializer_range=0.1),
            T.PhiForCausalLM,
        ),
        "stablelm": (
            T.StableLmConfig(
                **TINY, num_key_value_heads=2, partial_rotary_factor=0.25, use_qkv_bias=True, initializer_range=0.1
            ),
            T.StableLmForCausalLM,
        ),
        "stablelm_parallel": (
            T.StableLmConfig(
                **TINY,
                num_key_value_heads=4,
                partial_rotary_factor=0.5,
                use_parallel_residual=True,
                initializer_range=0.1,
            ),
            T.StableLmForCausalLM,
        ),
    }


FAMILIES = [
    "gpt2",
    "neox",
    "neox_sequential",
    "llama",
    "llama_tied",
    "mistral",
    "qwen2",
    "gemma",
    "gemma2",
    "mixtral",
    "bert",
]
NEW_FAMILIES = [
    "qwen3",
    "qwen3_sliding",
    "olmo2",
    "gemma3",
    "phi3",
    "llama_yarn",
    "llama_dynamic",
    "gptj",
    "opt",
    "opt_post_norm",
    "phi2",
    "stablelm",
    "stablelm_parallel",
    "qwen3_moe",
    "qwen3_moe_unnormalized",
]


@functools.lru_cache(maxsize=None)
def hf_model(name: str):
    """``(torch_model, saved_dir)`` for a tiny random model, deterministic per name."""
    import torch

    cfg, cls = _configs()[name]
    cfg._attn_implementation = "eager"
    torch.manual_seed(zlib.crc32(name.encode()))
    model = cls(cfg).eval()
    with torch.no_grad():  # random norm weights/biases so the mapping of every tensor matters
        for n, p in model.named_parameters():
            if "norm" in n.lower() or n.endswith("bias") or "ln" in n:
                p.add_(0.1 * torch.randn_like(p))
    path = os.path.join(tempfile.mkdtemp(prefix=f"jaxinterp-{name}-"), "model")
    model.save_pretrained(path)
    return model, path
