"""Tiny models and a word-level tokenizer for the editing tests (steering, refusal,
function vectors, ROME)."""

from __future__ import annotations

import jax
import numpy as np

import jaxinterp as ji

WORDS = [
    "<unk>",
    "<pad>",
    "the",
    "a",
    "of",
    "is",
    "in",
    "city",
    "to",
    "and",
    "I",
    "not",
    "love",
    "hate",
    "good",
    "bad",
    "happy",
    "sad",
    "tower",
    "Paris",
    "Rome",
    "Berlin",
    "located",
    "Q",
    "A",
    ":",
    "yes",
    "no",
    "how",
    "make",
    "cake",
    "bomb",
    "tell",
    "me",
    "cannot",
    "sure",
    "here",
    "Eiffel",
    "big",
    "small",
    "hot",
    "cold",
    "up",
    "down",
    "fact",
    "note",
    "friend",
    "said",
    "that",
    "news",
    "know",
    "book",
    "read",
    "this",
    "what",
    "day",
    "night",
    "it",
    "was",
    ",",
    ".",
    "!",
    "?",
    "\n",
]
WORDS = [w for w in WORDS if w] + ["\n"]
WORDS = list(dict.fromkeys(WORDS))

LLAMA = ji.ModelConfig(
    d_model=32,
    n_layers=3,
    n_heads=4,
    d_head=8,
    n_kv_heads=2,
    d_vocab=len(WORDS),
    n_ctx=64,
    d_mlp=48,
    normalization="rmsnorm",
    positional="rotary",
    gated_mlp=True,
    act_fn="silu",
    family="llama-like",
)
GPT2 = ji.ModelConfig(
    d_model=32,
    n_layers=2,
    n_heads=4,
    d_head=8,
    d_vocab=len(WORDS),
    n_ctx=64,
    d_mlp=64,
    positional="learned",
    qkv_bias=True,
    o_bias=True,
    mlp_bias=True,
    unembed_bias=True,
    norm_bias=True,
    family="gpt2-like",
)


def tiny_model(cfg=LLAMA, seed=0, std=0.3):
    """Random weights; biases (zero at init) made nonzero so bias handling is exercised."""
    model = ji.Transformer.init(cfg, jax.random.key(seed), std=std)
    rng = np.random.default_rng(seed + 100)

    def bump(x):
        return x + 0.1 * rng.standard_normal(x.shape).astype(np.float32)

    import equinox as eqx

    if cfg.o_bias:
        model = eqx.tree_at(lambda m: m.blocks.attn.b_O, model, bump(model.blocks.attn.b_O))
    if cfg.mlp_bias:
        model = eqx.tree_at(lambda m: m.blocks.mlp.b_out, model, bump(model.blocks.mlp.b_out))
    return model


def word_tokenizer() -> ji.Tokenizer:
    """Whitespace/punctuation word-level tokenizer over `WORDS` (unknown words -> <unk>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    backend.decoder = decoders.WordPiece()
    return ji.Tokenizer(backend, pad_token="<pad>", unk_token="<unk>", add_bos_token=False, name="words")
