"""Refusal directions: one direction in the residual stream that mediates whether a chat
model refuses.

Two recipes:

- **The seed notes' per-head recipe** (after "Refusal mechanisms: initial experiments
  with Llama-2-7b-chat", 2023): each selected head's output (``attn.result``) at one
  position, mean over harmful instructions minus mean over harmless ones, gives one
  direction per head (`head_directions`); the directions are compared by their cosine
  matrix (`cosine_matrix`) and averaged into one (`mean_direction`), which is added to
  the residual stream at a position over a range of layers (`add_direction`).
- **Arditi et al. 2024** ("Refusal in Language Models Is Mediated by a Single
  Direction"): difference-in-means candidates at every layer and post-instruction
  position (`diff_in_means`); each scored by how much ablating it lowers the refusal
  score on harmful prompts, how much adding it raises it on harmless ones, and the KL it
  causes on harmless prompts, in one vmapped program (`select_direction`); then
  directional ablation of every residual-stream write at every layer and position
  (`ablate_direction`), or the same edit baked into the weights (`orthogonalize`).

The refusal score (`RefusalScore`) is the log-odds of the refusal-opening tokens at the
first generated position.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

import jaxinterp as ji
from jaxinterp.editing.common import EditingError, last_token_states

__all__ = [
    "RefusalScore",
    "Selection",
    "ablate_direction",
    "add_direction",
    "cosine_matrix",
    "diff_in_means",
    "head_directions",
    "last_position_logits",
    "mean_direction",
    "orthogonalize",
    "refusal_score",
    "scores",
    "select_direction",
]


# ----------------------------------------------------------------------------- score


class RefusalScore(eqx.Module):
    """Refusal score of one example's logits ``[pos, d_vocab]`` at ``pos``.

    Without compliance tokens: Arditi et al.'s log-odds ``log p - log(1 - p)`` with ``p``
    the total probability of the ``refusal`` tokens. With ``compliance`` tokens: the
    log-probability ratio ``log P(refusal) - log P(compliance)``."""

    refusal: Int[Array, " n_refusal"]
    compliance: Int[Array, " n_compliance"] | None
    pos: int = eqx.field(static=True, default=-1)

    def __call__(self, logits: Float[Array, "pos d_vocab"]) -> Float[Array, ""]:
        lp = jax.nn.log_softmax(logits[self.pos].astype(jnp.float32))
        log_refuse = jax.nn.logsumexp(lp[self.refusal])
        if self.compliance is None:
            # log(1 - p) computed stably from log p.
            return log_refuse - jnp.log1p(-jnp.minimum(jnp.exp(log_refuse), 1 - 1e-7))
        return log_refuse - jax.nn.logsumexp(lp[self.compliance])


def refusal_score(
    tokenizer, refusal: Sequence[str] = ("I", "Sorry", "As"), compliance: Sequence[str] | None = None, pos: int = -1
) -> RefusalScore:
    """A `RefusalScore` from token strings (each must be one token). The defaults are the
    first tokens of typical refusals ("I cannot", "I'm sorry", "Sorry, ...", "As an AI")."""

    def ids(words, what):
        try:
            return jnp.asarray([tokenizer.to_single_token(w) for w in words], jnp.int32)
        except ValueError as e:
            raise EditingError(f"refusal_score: {what} tokens must each be one token: {e}") from None

    return RefusalScore(
        ids(refusal, "refusal"), None if compliance is None else ids(compliance, "compliance"), int(pos)
    )


# ----------------------------------------------------------------------------- seed recipe


def head_directions(
    model,
    tokens_harmful: Int[np.ndarray, "batch pos"],
    lengths_harmful: Int[np.ndarray, " batch"],
    tokens_harmless: Int[np.ndarray, "batch pos"],
    lengths_harmless: Int[np.ndarray, " batch"],
    heads: Sequence[tuple[int, int]],
    offset: int = -1,
    batch_size: int = 16,
) -> Float[np.ndarray, "n_heads d_model"]:
    """Per selected head ``(layer, head)``: the mean of its output ``attn.result`` (``z @
    W_O[layer, head]``) at position ``length + offset`` over harmful instructions minus
    that over harmless ones. Tokens are right-padded batches (see
    `jaxinterp.editing.common.encode_batch`). The head outputs are computed from the
    cached ``attn.z``, ``d_model / d_head`` times smaller than caching ``attn.result`` (``attn.result``
    excludes ``b_O``, as here)."""
    heads = [(int(l), int(h)) for l, h in heads]
    for l, h in heads:
        if not (0 <= l < model.cfg.n_layers and 0 <= h < model.cfg.n_heads):
            raise EditingError(
                f"head ({l}, {h}) is outside the model's {model.cfg.n_layers} layers x {model.cfg.n_heads} heads"
            )
    W_O = np.asarray(model.blocks.attn.W_O)  # [layer, head, d_head, d_model]

    def mean_result(tokens, lengths):
        z = last_token_states(model, tokens, lengths, "attn.z", (offset,), batch_size)[
            :, 0
        ]  # [batch, layer, head, d_head]
        return np.stack([z[:, l, h].mean(0) @ W_O[l, h] for l, h in heads])

    return mean_result(tokens_harmful, lengths_harmful) - mean_result(tokens_harmless, lengths_harmless)


def cosine_matrix(directions: Float[np.ndarray, "n d_model"]) -> Float[np.ndarray, "n n"]:
    """Pairwise cosine similarities of ``directions``."""
    d = np.asarray(directions, np.float64)
    unit = d / np.linalg.norm(d, axis=-1, keepdims=True)
    return unit @ unit.T


def mean_direction(directions: Float[np.ndarray, "n d_model"]) -> Float[np.ndarray, " d_model"]:
    """The mean of the per-head directions: the seed notes' single refusal direction."""
    return np.asarray(directions).mean(0)


def add_direction(
    direction: Float[Array, " d_model"], layers, coefficient: float | Array = 1.0, pos=None, site: str = "resid_pre"
) -> ji.Add:
    """Add ``coefficient * direction`` to ``site`` at every layer in ``layers`` (indices or a
    bool mask) and at ``pos`` (None: every position)."""
    direction = jnp.asarray(direction)
    return ji.Add(site, jnp.asarray(coefficient, direction.dtype) * direction, layer=jnp.asarray(layers), pos=pos)


# ----------------------------------------------------------------------------- Arditi et al.


def diff_in_means(
    model,
    tokens_harmful: Int[np.ndarray, "batch pos"],
    lengths_harmful: Int[np.ndarray, " batch"],
    tokens_harmless: Int[np.ndarray, "batch pos"],
    lengths_harmless: Int[np.ndarray, " batch"],
    offsets: Sequence[int] = (-5, -4, -3, -2, -1),
    site: str = "resid_pre",
    batch_size: int = 16,
) -> Float[np.ndarray, "offset layer d_model"]:
    """Candidate refusal directions (Arditi et al.): mean ``site`` activation over harmful
    instructions minus that over harmless ones, at every layer and at each
    post-instruction position ``length + offset`` (the tokens of the chat template after
    the instruction), from one cached pass per batch."""
    harmful = last_token_states(model, tokens_harmful, lengths_harmful, site, offsets, batch_size)
    harmless = last_token_states(model, tokens_harmless, lengths_harmless, site, offsets, batch_size)
    return harmful.mean(0) - harmless.mean(0)


def ablate_direction(cfg: ji.ModelConfig, direction: Float[Array, " d_model"]) -> list:
    """Directional ablation: `jaxinterp.ProjectOut` of ``direction`` from every write to
    the residual stream, at every layer and position: the embeddings (token, and
    positional / token-type where the model has them), every ``attn_out`` and every
    ``mlp_out``. The residual stream then never holds a component along it."""
    _check_linear_writes(cfg)
    d = jnp.asarray(direction)
    sites = (
        ["embed"]
        + (["pos_embed"] if cfg.positional == "learned" else [])
        + (["token_type_embed"] if cfg.n_token_types else [])
    )
    sites += ["attn_out"] + (["mlp_out"] if cfg.has_mlp else [])
    return [ji.ProjectOut(s, d) for s in sites]


def _check_linear_writes(cfg: ji.ModelConfig):
    # With a norm after a write (Gemma 2's post-attention / post-MLP norms, BERT's
    # post-norm, an embedding norm), the residual stream is not the sum of the writes.
    if cfg.post_attn_norm or cfg.post_mlp_norm or cfg.post_norm or cfg.embed_norm:
        raise EditingError(
            "directional ablation needs a pre-norm model whose residual stream is the sum of its writes; "
            "this config has post-attention/post-MLP norms, post-norm blocks or an embedding norm"
        )


def _project_out(W: Array, unit: Array) -> Array:
    """``W`` with the component of its last axis along ``unit`` removed."""
    return W - jnp.einsum("...m,m->...", W, unit)[..., None] * unit


def orthogonalize(model, direction: Float[Array, " d_model"]):
    """A NEW model whose weights cannot write ``direction`` into the residual stream:
    ``W -= (W r) r^T`` for the embeddings ``W_E`` (and ``W_pos``/``W_token_type`` where
    present), every head's ``W_O``, every ``W_out`` (experts included), and the biases
    ``b_O``/``b_out`` where present (Arditi et al.'s weight orthogonalisation). Its
    logits equal the original model's under `ablate_direction`."""
    cfg = model.cfg
    _check_linear_writes(cfg)
    d = jnp.asarray(direction, jnp.float32)
    unit = d / jnp.linalg.norm(d)

    def proj(W):
        return _project_out(W.astype(jnp.float32), unit).astype(W.dtype)

    getters = [lambda m: m.embed.W_E, lambda m: m.blocks.attn.W_O]
    if model.pos_embed is not None:
        getters.append(lambda m: m.pos_embed.W_pos)
    if model.token_type_embed is not None:
        getters.append(lambda m: m.token_type_embed.W_token_type)
    if model.blocks.attn.b_O is not None:
        getters.append(lambda m: m.blocks.attn.b_O)
    if model.blocks.mlp is not None:
        getters.append(lambda m: m.blocks.mlp.W_out)
        if not cfg.is_moe and model.blocks.mlp.b_out is not None:  # MoE experts have no output bias
            getters.append(lambda m: m.blocks.mlp.b_out)
    for get in getters:
        model = eqx.tree_at(get, model, proj(get(model)))
    return model


def last_position_logits(
    model, tokens: Int[Array, " pos"], length: Int[Array, ""], interventions
) -> Float[Array, "1 d_vocab"]:
    """One right-padded row's logits at its last real position, as ``[1, d_vocab]`` (so a
    metric with ``pos=-1`` reads it). Un-jitted: for use inside jit/vmap."""
    logits, _ = model.forward(tokens, interventions)
    return jax.lax.dynamic_slice_in_dim(logits, length - 1, 1, axis=0)


class Selection(NamedTuple):
    """What `select_direction` measured, per candidate ``[offset, layer]``:
    ``bypass`` (mean refusal score on harmful prompts with the direction ablated; lower
    is better), ``induce`` (mean refusal score on harmless prompts with it added at its
    layer; higher is better), ``kl`` (mean KL on harmless prompts caused by ablation),
    ``eligible`` (passes the filters), and the chosen ``offset``/``layer``/``direction``."""

    bypass: np.ndarray
    induce: np.ndarray
    kl: np.ndarray
    eligible: np.ndarray
    offsets: np.ndarray
    layers: np.ndarray
    offset: int
    layer: int
    direction: np.ndarray
    baseline_harmful: float
    baseline_harmless: float


@eqx.filter_jit
def _candidate_scores(model, dirs, layers, h_tokens, h_len, s_tokens, s_len, s_base_lp, metric, batch_size):
    cfg = model.cfg

    def per_candidate(args):
        r, layer = args
        unit = r / jnp.linalg.norm(r)
        ablate = ablate_direction(cfg, unit)
        add = [ji.Add("resid_pre", r, layer=layer)]
        rows = jax.vmap(last_position_logits, in_axes=(None, 0, 0, None))
        bypass = jax.vmap(metric)(rows(model, h_tokens, h_len, ablate)).mean()
        induce = jax.vmap(metric)(rows(model, s_tokens, s_len, add)).mean()
        lp = jax.nn.log_softmax(rows(model, s_tokens, s_len, ablate)[:, 0].astype(jnp.float32), -1)
        kl = jnp.sum(jnp.exp(s_base_lp) * (s_base_lp - lp), -1).mean()
        return bypass, induce, kl

    return jax.lax.map(per_candidate, (dirs, layers), batch_size=batch_size)


def select_direction(
    model,
    candidates: Float[np.ndarray, "offset layer d_model"],
    offsets: Sequence[int],
    tokens_harmful,
    lengths_harmful,
    tokens_harmless,
    lengths_harmless,
    metric: RefusalScore,
    layers: Sequence[int] | None = None,
    max_layer_fraction: float = 0.8,
    kl_threshold: float = 0.1,
    batch_size: int = 4,
) -> Selection:
    """Arditi et al.'s selection: for each candidate ``candidates[o, l]`` (only ``layers``,
    default all below ``max_layer_fraction * n_layers``) measure bypass / induce / KL (see
    `Selection`) in ONE compiled program (candidates mapped in chunks of ``batch_size``,
    prompts vmapped), and choose the lowest bypass score among candidates whose induce
    score is positive and whose KL is below ``kl_threshold`` (all candidates if none
    passes). Use held-out prompts here, not those the candidates came from."""
    candidates = np.asarray(candidates, np.float32)
    n_off, n_layers = candidates.shape[:2]
    if n_off != len(offsets):
        raise EditingError(f"candidates has {n_off} offsets but offsets lists {len(offsets)}")
    layers = (
        [l for l in range(n_layers) if l < max_layer_fraction * n_layers]
        if layers is None
        else [int(l) for l in layers]
    )
    oo, ll = np.meshgrid(np.arange(n_off), np.asarray(layers), indexing="ij")
    oo, ll = oo.reshape(-1), ll.reshape(-1)
    base_h = jax.vmap(metric)(_rows(model, tokens_harmful, lengths_harmful))
    base_s_logits = _rows(model, tokens_harmless, lengths_harmless)
    base_lp = jax.nn.log_softmax(base_s_logits[:, 0].astype(jnp.float32), -1)
    base_s = jax.vmap(metric)(base_s_logits)
    bypass, induce, kl = (
        np.asarray(x).reshape(n_off, len(layers))
        for x in _candidate_scores(
            model,
            jnp.asarray(candidates[oo, ll]),
            jnp.asarray(ll),
            jnp.asarray(tokens_harmful),
            jnp.asarray(lengths_harmful),
            jnp.asarray(tokens_harmless),
            jnp.asarray(lengths_harmless),
            base_lp,
            metric,
            int(batch_size),
        )
    )
    eligible = (induce > 0) & (kl < kl_threshold)
    pool = np.where(eligible, bypass, np.inf) if eligible.any() else bypass
    o, j = np.unravel_index(int(np.argmin(pool)), pool.shape)
    return Selection(
        bypass,
        induce,
        kl,
        eligible,
        np.asarray(offsets),
        np.asarray(layers),
        int(offsets[o]),
        int(layers[j]),
        candidates[o, layers[j]],
        float(np.mean(base_h)),
        float(np.mean(base_s)),
    )


@eqx.filter_jit
def _rows_jit(model, tokens, lengths, interventions):
    return jax.vmap(last_position_logits, in_axes=(None, 0, 0, None))(model, tokens, lengths, interventions)


def _rows(model, tokens, lengths, interventions=()):
    return _rows_jit(model, jnp.asarray(tokens), jnp.asarray(lengths), tuple(interventions))


def scores(model, tokens, lengths, metric, interventions=()) -> Float[np.ndarray, " batch"]:
    """``metric`` of each right-padded row's last-position logits under ``interventions``."""
    return np.asarray(jax.vmap(metric)(_rows(model, tokens, lengths, interventions)))
