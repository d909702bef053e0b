"""Toy language models on real text: configs, tokenising a corpus, and training several
seeds at once in one compiled optax loop.

- `bigram_config`: 0 layers (embed -> final LayerNorm -> unembed, no positions): the
  logits at a position depend on the current token only, so the best such model is the
  corpus' bigram table (up to its rank ``d_model``; see `jaxinterp.toy.bigram`);
- `attn_only_config`: 1 (or more) attention-only layers: skip-trigrams
  (`jaxinterp.analysis.circuits.skip_trigrams`);
- `mlp_config`: layers with ReLU MLPs (the universal-neurons models).

`train_lms(cfg, tokens, seeds)` initialises one model per seed (`random_model`, numpy:
no compile) and trains all of them with AdamW in one ``jit``-compiled ``lax.scan`` whose
step ``vmap``s the update over the seeds. The batches (random windows of the token
stream) come from ``data_seed`` and are shared by the seeds, so models differ only in
their initialisation. Deterministic: the same inputs give the same bits.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int

from jaxinterp import ModelConfig, Transformer
from jaxinterp.core.errors import JaxinterpError
from jaxinterp.toy.random_init import random_model

__all__ = [
    "ToyLMError",
    "bigram_config",
    "attn_only_config",
    "mlp_config",
    "encode_corpus",
    "LMRun",
    "train_lms",
    "unstack",
    "sequence_losses",
]


class ToyLMError(JaxinterpError):
    """Bad arguments to the toy language-model code."""


def bigram_config(d_vocab: int, d_model: int = 64) -> ModelConfig:
    """0 layers: ``logits = LN(W_E[t]) W_U + b_U``. No positional embedding, so each
    position sees its own token only."""
    return ModelConfig(
        d_model=d_model,
        n_layers=0,
        n_heads=1,
        d_head=d_model,
        d_vocab=d_vocab,
        n_ctx=1024,
        attn_only=True,
        positional="none",
        unembed_bias=True,
        family="toy-bigram",
    )


def attn_only_config(
    d_vocab: int, n_layers: int = 1, d_model: int = 64, n_heads: int = 4, n_ctx: int = 64
) -> ModelConfig:
    """Attention-only, pre-LayerNorm, learned positions, unembedding bias."""
    return ModelConfig(
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        d_head=d_model // n_heads,
        d_vocab=d_vocab,
        n_ctx=n_ctx,
        attn_only=True,
        positional="learned",
        unembed_bias=True,
        family="toy-attn-only",
    )


def mlp_config(
    d_vocab: int, n_layers: int = 2, d_model: int = 64, d_mlp: int = 256, n_heads: int = 4, n_ctx: int = 64
) -> ModelConfig:
    """GPT-2-like blocks (pre-LayerNorm attention + ReLU MLP with biases), learned positions."""
    return ModelConfig(
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        d_head=d_model // n_heads,
        d_vocab=d_vocab,
        n_ctx=n_ctx,
        d_mlp=d_mlp,
        act_fn="relu",
        mlp_bias=True,
        positional="learned",
        unembed_bias=True,
        family="toy-mlp",
    )


def encode_corpus(tokenizer, texts: Sequence[str]) -> Int[np.ndarray, " tokens"]:
    """One int32 token stream: every document's tokens followed by the end-of-text token
    (``tokenizer.eos_token_id``), so no window mixes documents without a separator."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ToyLMError("encode_corpus needs a tokenizer with an end-of-text (eos) token to separate documents")
    pieces = []
    for enc in tokenizer.backend.encode_batch(list(texts), add_special_tokens=False):
        pieces.append(np.asarray(enc.ids, np.int32))
        pieces.append(np.asarray([eos], np.int32))
    return np.concatenate(pieces)


def sequence_losses(model: Transformer, tokens: Int[Array, " pos"]) -> Float[Array, " pos_minus_1"]:
    """Cross-entropy of ``tokens[i + 1]`` given ``tokens[: i + 1]`` for one sequence (no
    jit: for use inside the caller's jit/vmap/grad)."""
    logits, _ = model.forward(tokens)
    logp = jax.nn.log_softmax(logits[:-1].astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, tokens[1:, None], axis=-1)[:, 0]


class LMRun(NamedTuple):
    """``models``: the trained models stacked over seeds (every float leaf has a leading
    ``seed`` axis; `unstack` takes one out); ``losses [seed, steps]``: training loss."""

    models: Transformer
    losses: Float[Array, "seed steps"]


def _stack(models: list[Transformer]) -> Transformer:
    # Only the float weights get a seed axis; integer leaves (per-layer windows) are shared.
    params = [eqx.filter(m, eqx.is_inexact_array) for m in models]
    static = eqx.filter(models[0], eqx.is_inexact_array, inverse=True)
    return eqx.combine(jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *params), static)


def unstack(models: Transformer, index: int) -> Transformer:
    """Model ``index`` of a stack from `train_lms`."""
    return jax.tree_util.tree_map(lambda a: a[index] if eqx.is_inexact_array(a) else a, models)


def train_lms(
    cfg: ModelConfig,
    tokens: Int[np.ndarray, " tokens"],
    seeds: Sequence[int],
    steps: int = 2000,
    batch_size: int = 32,
    seq_len: int | None = None,
    learning_rate: float = 3e-3,
    weight_decay: float = 0.01,
    data_seed: int = 0,
    init_std: float = 0.02,
) -> LMRun:
    """Train one ``cfg`` model per seed on random windows of ``tokens`` (next-token loss at
    every position), all seeds in one compiled program. AdamW, linear warm-up over the
    first 5% of steps then cosine decay. ``seq_len`` defaults to ``min(cfg.n_ctx, 64)``."""
    tokens = np.asarray(tokens)
    seq_len = min(cfg.n_ctx, 64) if seq_len is None else seq_len
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise ToyLMError(f"tokens must be a 1-D integer stream, got {tokens.dtype} {tokens.shape}")
    if len(tokens) < seq_len + 2:
        raise ToyLMError(f"the token stream ({len(tokens)} tokens) is shorter than one window of seq_len={seq_len}")
    if tokens.min() < 0 or tokens.max() >= cfg.d_vocab:
        raise ToyLMError(f"token ids must be in 0..{cfg.d_vocab - 1} (cfg.d_vocab), got {tokens.min()}..{tokens.max()}")
    if not seeds:
        raise ToyLMError("seeds must name at least one model")
    if seq_len > cfg.n_ctx:
        raise ToyLMError(f"seq_len={seq_len} exceeds the model's context n_ctx={cfg.n_ctx}")
    models = _stack([random_model(cfg, seed=int(s), std=init_std) for s in seeds])
    params, static = eqx.partition(models, eqx.is_inexact_array)
    hyper = jnp.asarray([learning_rate, weight_decay], jnp.float32)
    params, losses = _train(
        params,
        static,
        jnp.asarray(tokens, jnp.int32),
        jax.random.key(data_seed),
        hyper,
        steps=steps,
        batch_size=batch_size,
        seq_len=seq_len,
    )
    return LMRun(eqx.combine(params, static), losses.T)


@eqx.filter_jit
def _train(params, static, tokens, key, hyper, *, steps, batch_size, seq_len):
    learning_rate, weight_decay = hyper[0], hyper[1]
    schedule = optax.warmup_cosine_decay_schedule(0.0, 1.0, max(1, steps // 20), steps, end_value=0.05)
    # The learning rate and weight decay are data (traced), so changing them does not recompile.
    # Decoupled weight decay on the weight matrices (W_E, W_Q, ..., W_U), not on norms or biases.
    decay_mask = jax.tree_util.tree_map_with_path(
        lambda path, _: str(getattr(path[-1], "name", "")).startswith("W_"), params
    )
    optimizer = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.scale_by_adam(),
        optax.add_decayed_weights(weight_decay, decay_mask),
        optax.scale_by_schedule(schedule),
    )
    opt_state = jax.vmap(optimizer.init)(params)

    def loss_fn(p, batch):
        model = eqx.combine(p, static)
        return jnp.mean(jax.vmap(lambda t: sequence_losses(model, t))(batch))

    def update(p, state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(p, batch)
        updates, state = optimizer.update(grads, state, p)
        p = jax.tree_util.tree_map(lambda w, u: w - learning_rate * u, p, updates)
        return p, state, loss

    def step(carry, k):
        p, state = carry
        starts = jax.random.randint(k, (batch_size,), 0, tokens.shape[0] - seq_len)
        batch = jax.vmap(lambda s: jax.lax.dynamic_slice(tokens, (s,), (seq_len,)))(starts)
        p, state, loss = jax.vmap(update, in_axes=(0, 0, None))(p, state, batch)
        return (p, state), loss

    (params, _), losses = jax.lax.scan(step, (params, opt_state), jax.random.split(key, steps))
    return params, losses
