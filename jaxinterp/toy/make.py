"""Regenerate the shipped toy models bit for bit: ``python -m jaxinterp.toy.make [OUT]``.

Trains the byte-level BPE tokenizer (1024 ids) on the training part of the bundled
Shakespeare corpus (`shakespeare_texts`, the last 5% of every document held out), then
each model of `SPECS` (seed 0) with `train_lms`, and writes them with `save_toy` to
``OUT`` (default: the package's ``toy/weights``). The same machine and library versions
give the same bytes (XLA on CPU is deterministic); other CPUs may differ in the last bits.
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

from jaxinterp.toy.bpe import train_bpe_tokenizer
from jaxinterp.toy.corpus import shakespeare_texts, split_heldout
from jaxinterp.toy.lm import (
    attn_only_config,
    bigram_config,
    encode_corpus,
    mlp_config,
    sequence_losses,
    train_lms,
    unstack,
)
from jaxinterp.toy.shipped import WEIGHTS_DIR, save_toy

__all__ = ["ToySpec", "SPECS", "make_toys", "heldout_loss"]


class ToySpec(NamedTuple):
    """How one toy is trained: ``config(d_vocab) -> ModelConfig`` and `train_lms` budgets."""

    config: Callable
    steps: int
    batch_size: int = 32
    seq_len: int = 64
    learning_rate: float = 3e-3


# Budgets sized for a shared 2-core CPU (a few CPU-minutes in all).
SPECS = {
    "bigram-0l": ToySpec(lambda v: bigram_config(v, d_model=64), steps=2000, learning_rate=1e-2),
    "attn-only-1l": ToySpec(
        lambda v: attn_only_config(v, n_layers=1, d_model=64, n_heads=4), steps=2000, batch_size=16
    ),
    "mlp-2l": ToySpec(lambda v: mlp_config(v, n_layers=2, d_model=64, d_mlp=256, n_heads=4), steps=2000, batch_size=16),
}


def heldout_loss(model, tokens: np.ndarray, seq_len: int = 64, max_windows: int = 256) -> float:
    """Mean next-token loss over consecutive windows of ``tokens``."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    n = min(max_windows, (len(tokens) - 1) // seq_len)
    windows = jnp.asarray(np.asarray(tokens[: n * seq_len]).reshape(n, seq_len))
    losses = eqx.filter_jit(lambda m, w: jax.vmap(lambda t: sequence_losses(m, t))(w))(model, windows)
    return float(losses.mean())


def make_toys(
    out_dir: str = WEIGHTS_DIR,
    texts: Optional[Sequence[str]] = None,
    vocab_size: int = 1024,
    specs: Optional[dict] = None,
    seed: int = 0,
) -> dict[str, dict]:
    """Train the tokenizer and every toy of ``specs`` (default `SPECS`) on ``texts``
    (default: the bundled Shakespeare corpus) and save them under ``out_dir/<name>``.
    Returns each toy's ``training.json`` contents."""
    texts = shakespeare_texts() if texts is None else list(texts)
    specs = SPECS if specs is None else specs
    train_texts, held_texts = split_heldout(texts, 0.05)
    tokenizer = train_bpe_tokenizer(train_texts, vocab_size)
    train_tokens = encode_corpus(tokenizer, train_texts)
    held_tokens = encode_corpus(tokenizer, held_texts)
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    infos = {}
    for name, spec in specs.items():
        cfg = spec.config(tokenizer.vocab_size)
        run = train_lms(
            cfg,
            train_tokens,
            [seed],
            steps=spec.steps,
            batch_size=spec.batch_size,
            seq_len=spec.seq_len,
            learning_rate=spec.learning_rate,
        )
        model = unstack(run.models, 0)
        info = {
            "corpus_sha256_16": digest,
            "train_tokens": int(len(train_tokens)),
            "heldout_tokens": int(len(held_tokens)),
            "seed": seed,
            "steps": spec.steps,
            "batch_size": spec.batch_size,
            "seq_len": spec.seq_len,
            "learning_rate": spec.learning_rate,
            "vocab_size": tokenizer.vocab_size,
            "final_train_loss": round(float(np.asarray(run.losses)[0, -100:].mean()), 4),
            "heldout_loss": round(heldout_loss(model, held_tokens, spec.seq_len), 4),
        }
        save_toy(os.path.join(out_dir, name), model, tokenizer, info)
        infos[name] = info
        print(f"{name}: {info}", flush=True)
    return infos


if __name__ == "__main__":
    make_toys(*(sys.argv[1:2]))
