"""Shared pieces of the editing room: its error type, batched last-token caching, and
the one generation entry point the techniques call.

Everything here takes the model as an argument and reaches it only through its public
calls (``model(...)``, ``model.run_with_cache``, ``model.forward``)."""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from jaxinterp.core.errors import JaxinterpError
from jaxinterp.editing.greedy import greedy_generate

__all__ = [
    "EditingError",
    "Prompts",
    "answer_probs",
    "encode_batch",
    "encode_prompts",
    "generate",
    "last_token_states",
    "row_answer_prob",
]


class EditingError(JaxinterpError):
    """Bad input to a steering / refusal / function-vector / ROME call: the message names
    the argument and what was expected."""


def generate(model, tokens: Int[np.ndarray, " pos"], n_new: int, interventions=None) -> Int[np.ndarray, " n_new"]:
    """``n_new`` greedily decoded tokens after ``tokens`` with ``interventions`` applied at
    every step. The single generation call of this room, so a KV-cached decoder can
    replace the full re-run of `jaxinterp.editing.greedy.greedy_generate` in one place."""
    return greedy_generate(model, np.asarray(tokens), int(n_new), interventions)


def encode_batch(
    tokenizer, texts: Sequence[str], what: str = "texts"
) -> tuple[Int[np.ndarray, "batch pos"], Int[np.ndarray, " batch"]]:
    """Right-padded ids ``[batch, pos]`` and each row's length ``[batch]``.

    Right padding keeps every real token at its own position (rotary and learned
    positions unchanged) and, under causal attention, padding after a token cannot
    change that token's activations: a row's states up to its length are exactly those
    of the row run alone."""
    if isinstance(texts, str) or len(texts) == 0 or not all(isinstance(t, str) for t in texts):
        raise EditingError(f"{what} must be a non-empty list of strings, got {type(texts).__name__}")
    rows = [list(tokenizer.encode(t)) for t in texts]
    for t, r in zip(texts, rows):
        if len(r) == 0:
            raise EditingError(f"{what}: {t!r} encodes to no tokens")
    width = max(len(r) for r in rows)
    tokens = np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = r
    return tokens, np.asarray([len(r) for r in rows], np.int32)


def last_token_states(
    model,
    tokens: Int[np.ndarray, "batch pos"],
    lengths: Int[np.ndarray, " batch"],
    site: str = "resid_pre",
    offsets: Sequence[int] = (-1,),
    batch_size: int = 16,
) -> Float[np.ndarray, "batch offset layer ..."]:
    """The per-layer activation ``site`` of every row at positions ``length + offset``
    (``offset=-1``: the last real token), for all layers from ONE cached pass per batch of
    ``batch_size`` rows: ``[batch, offset, layer, *site_shape_after_pos]``."""
    if not model.cfg.causal:
        raise EditingError("right-padded batches need a causal model (padding would be attended to)")
    offsets = np.asarray(offsets, np.int32)
    if (offsets >= 0).any():
        raise EditingError(f"offsets count back from each row's end and must be negative, got {offsets.tolist()}")
    if (lengths[:, None] + offsets[None, :] < 0).any():
        raise EditingError(f"a row has fewer than {-offsets.min()} tokens for offsets {offsets.tolist()}")
    n = tokens.shape[0]
    size = min(batch_size, n)
    # Every chunk gets the same number of rows (the last is padded with copies of row 0
    # and trimmed), so the cached run compiles once per call.
    n_pad = -n % size
    tokens = np.concatenate([tokens, np.repeat(tokens[:1], n_pad, 0)])
    lengths = np.concatenate([lengths, np.repeat(lengths[:1], n_pad)])
    out = []
    for start in range(0, tokens.shape[0], size):
        chunk = jnp.asarray(tokens[start : start + size])
        _, cache = model.run_with_cache(chunk, names=[site])
        stacked = cache.stack(site)  # [layer, batch, pos, ...]
        idx = jnp.asarray(lengths[start : start + size][:, None] + offsets[None, :])  # [batch, offset]
        rows = jnp.arange(size)[:, None]
        out.append(np.asarray(jnp.moveaxis(stacked[:, rows, idx], 0, 2)))  # [batch, offset, layer, ...]
    return np.concatenate(out, 0)[:n]


class Prompts(eqx.Module):
    """Right-padded prompts with the first token of each one's answer:
    ``tokens [batch, pos]``, ``lengths [batch]``, ``answers [batch]``."""

    tokens: Int[Array, "batch pos"]
    lengths: Int[Array, " batch"]
    answers: Int[Array, " batch"]


def encode_prompts(tokenizer, prompts: Sequence[str], answers: Sequence[str]) -> Prompts:
    """`Prompts` from texts and their answers (the answer's first token is the target, as in
    Todd et al.'s first-token accuracy)."""
    if len(prompts) != len(answers):
        raise EditingError(f"{len(prompts)} prompts but {len(answers)} answers")
    tokens, lengths = encode_batch(tokenizer, list(prompts), "prompts")
    first = []
    for a in answers:
        ids = tokenizer.backend.encode(a, add_special_tokens=False).ids
        if not ids:
            raise EditingError(f"answer {a!r} encodes to no tokens")
        first.append(ids[0])
    return Prompts(jnp.asarray(tokens), jnp.asarray(lengths), jnp.asarray(first, jnp.int32))


def row_answer_prob(
    model, tokens: Int[Array, " pos"], length: Int[Array, ""], answer: Int[Array, ""], interventions
) -> Float[Array, ""]:
    """P(``answer``) at the last real position (``length - 1``) of one right-padded row
    under ``interventions``. Un-jitted: for use inside jit/vmap."""
    logits, _ = model.forward(tokens, interventions)
    last = jax.lax.dynamic_index_in_dim(logits, length - 1, 0, keepdims=False)
    return jax.nn.softmax(last.astype(jnp.float32))[answer]


@eqx.filter_jit
def answer_probs(model, prompts: Prompts, interventions=()) -> Float[Array, " batch"]:
    """P(answer) at each prompt's last position under ``interventions``."""
    return jax.vmap(row_answer_prob, in_axes=(None, 0, 0, 0, None))(
        model, prompts.tokens, prompts.lengths, prompts.answers, tuple(interventions)
    )
