"""The embedding-space view: read weights and activations as distributions over tokens.

Following Geva et al. ("Transformer Feed-Forward Layers Are Key-Value Memories", 2021;
"... Build Predictions by Promoting Concepts in the Vocabulary Space", 2022) and
Dar et al. ("Analyzing Transformers in Embedding Space", 2023): a vector written to
the residual stream can be read through the unembedding as scores over the vocabulary.

- `project_to_vocab`: any ``[..., d_model]`` vectors -> top tokens. By default the
  vector first goes through the final norm's linear part (centring for LayerNorm, the
  weight ``offset + w``), which is how anything written to the stream reaches the
  logits; the norm's positive divisor does not change the ranking and is left out.
- `value_vector_top_tokens`: an MLP neuron's value vector (its row of ``W_out``) ->
  the tokens it promotes when it fires.
- `head_ov_top_tokens`: what a head writes when it attends to a given source token
  (rows of its full OV circuit) -> the tokens it promotes.
- `neuron_top_activations`: an MLP neuron's key side -> the positions of a token
  stream where it fires most (chunked and vmapped; memory bounded by one chunk).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..model import Transformer
from .circuits import token_embeddings
from .lens import apply_norm_linear

__all__ = [
    "TopTokens",
    "project_to_vocab",
    "mlp_value_vectors",
    "value_vector_top_tokens",
    "head_ov_top_tokens",
    "NeuronActivations",
    "neuron_top_activations",
    "activation_contexts",
]


class TopTokens(NamedTuple):
    """Top tokens per vector: ids and scores ``[..., k]`` (best first) and, with a
    tokenizer, their strings (nested lists shaped like ``ids``)."""

    ids: np.ndarray
    scores: np.ndarray
    strings: Optional[list] = None


def _decode_all(ids: np.ndarray, tokenizer) -> Optional[list]:
    if tokenizer is None:
        return None
    flat = [tokenizer.decode([int(i)]) for i in ids.reshape(-1)]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(ids.shape).tolist()


def _vocab_scores(model: Transformer, vectors, apply_final_norm: bool):
    if model.unembed is None:
        raise ValueError(
            "this model has no unembedding (an encoder loaded without an LM head): no vocabulary to project on"
        )
    if vectors.shape[-1] != model.cfg.d_model:
        raise ValueError(f"vectors must end in d_model={model.cfg.d_model}, got shape {vectors.shape}")
    x = vectors.astype(jnp.float32)
    if apply_final_norm and model.ln_final is not None:
        x = apply_norm_linear(model.ln_final, x, jnp.ones((), jnp.float32))
    return x @ model.unembed.W_U.astype(jnp.float32)


def project_to_vocab(
    model: Transformer,
    vectors: Float[Array, "... d_model"],
    k: int = 10,
    tokenizer=None,
    largest: bool = True,
    apply_final_norm: bool = True,
    chunk_size: int = 256,
) -> TopTokens:
    """The ``k`` tokens each residual-space vector promotes most (``largest=False``:
    suppresses most), with scores ``vector' @ W_U`` where ``vector'`` is the vector
    after the final norm's linear part (``apply_final_norm``). Vectors are scored
    ``chunk_size`` at a time, so ``[d_mlp, d_vocab]`` never has to fit at once."""
    vectors = jnp.asarray(vectors)
    lead = vectors.shape[:-1]
    if not 0 < k <= model.cfg.d_vocab:
        raise ValueError(f"k must be in 1..d_vocab ({model.cfg.d_vocab}), got {k}")
    flat = vectors.reshape(-1, vectors.shape[-1])
    sign = 1.0 if largest else -1.0

    def top(v):
        vals, ids = jax.lax.top_k(sign * _vocab_scores(model, v, apply_final_norm), k)
        return sign * vals, ids

    scores, ids = jax.lax.map(top, flat, batch_size=min(chunk_size, max(1, flat.shape[0])))
    ids, scores = np.asarray(ids).reshape(lead + (k,)), np.asarray(scores).reshape(lead + (k,))
    return TopTokens(ids, scores, _decode_all(ids, tokenizer))


def mlp_value_vectors(model: Transformer, layer: int, expert: Optional[int] = None) -> Float[Array, "d_mlp d_model"]:
    """The value vectors of layer ``layer``'s MLP: rows of ``W_out`` (what neuron ``i``
    adds to the residual stream per unit of activation). MoE models need ``expert``."""
    cfg = model.cfg
    if not cfg.has_mlp:
        raise ValueError("this model is attention-only: it has no MLP value vectors")
    if not 0 <= layer < cfg.n_layers:
        raise ValueError(f"layer {layer} out of range: the model has {cfg.n_layers} layers")
    W_out = model.blocks.mlp.W_out[layer]
    if cfg.is_moe:
        if expert is None or not 0 <= expert < cfg.n_experts:
            raise ValueError(f"a mixture-of-experts MLP needs expert= in 0..{cfg.n_experts - 1}")
        return W_out[expert]
    if expert is not None:
        raise ValueError("expert= is only for mixture-of-experts models")
    return W_out


def value_vector_top_tokens(
    model: Transformer,
    layer: int,
    neurons: Optional[Sequence[int]] = None,
    k: int = 10,
    tokenizer=None,
    largest: bool = True,
    expert: Optional[int] = None,
    chunk_size: int = 256,
) -> TopTokens:
    """The tokens each MLP neuron's value vector promotes (Geva et al. 2021): top-k per
    neuron, ``[n_neurons, k]`` (all neurons of the layer when ``neurons`` is None)."""
    values = mlp_value_vectors(model, layer, expert)
    if neurons is not None:
        values = values[jnp.asarray(neurons)]
    return project_to_vocab(model, values, k, tokenizer, largest, chunk_size=chunk_size)


def head_ov_top_tokens(
    model: Transformer,
    layer: int,
    head: int,
    sources,
    k: int = 10,
    tokenizer=None,
    largest: bool = True,
) -> TopTokens:
    """What head ``(layer, head)`` writes when it attends to each source, projected on
    the vocabulary: ``[n_sources, k]``.

    ``sources``: token ids (``[n]`` ints: the tokens' embeddings, as in the full OV
    circuit ``W_E W_V W_O W_U``) or vectors ``[n, d_model]`` that the head reads, e.g.
    ``cache["ln1.normalized"][layer, pos]`` -- for a deep layer the residual stream at a
    token's position is a far better input than its raw embedding. A copying head lists
    each source token among its own top tokens.
    """
    cfg = model.cfg
    if not (0 <= layer < cfg.n_layers and 0 <= head < cfg.n_heads):
        raise ValueError(
            f"head ({layer}, {head}) out of range: the model has {cfg.n_layers} layers x {cfg.n_heads} heads"
        )
    attn = model.blocks.attn
    kv = head // (cfg.n_heads // cfg.n_kv_heads)
    sources = jnp.asarray(sources)
    if jnp.issubdtype(sources.dtype, jnp.integer):
        sources = token_embeddings(model)[sources]
    elif sources.shape[-1] != cfg.d_model:
        raise ValueError(
            f"sources must be token ids or vectors [..., d_model={cfg.d_model}], got shape {sources.shape}"
        )
    written = (sources @ attn.W_V[layer, kv]) @ attn.W_O[layer, head]
    return project_to_vocab(model, written, k, tokenizer, largest)


class NeuronActivations(NamedTuple):
    """The ``k`` largest (or most negative) activations per neuron over a token stream,
    most extreme first: ``values [neuron, k]``, the stream ``positions [neuron, k]``
    they occur at, and the ``neurons`` they belong to."""

    values: np.ndarray
    positions: np.ndarray
    neurons: np.ndarray


def neuron_top_activations(
    model: Transformer,
    token_stream: Int[Array, " n_tokens"],
    layer: int,
    neurons: Optional[Sequence[int]] = None,
    k: int = 10,
    seq_len: int = 64,
    batch_size: int = 8,
    bos: Optional[int] = None,
    site: str = "mlp.post",
    largest: bool = True,
) -> NeuronActivations:
    """Where each neuron of layer ``layer`` fires most over a long token stream.

    The stream is cut into windows of ``seq_len`` tokens (each optionally preceded by a
    ``bos`` token, which is not scored); ``batch_size`` windows at a time are run,
    vmapped, through layers ``0..layer`` only, and a running top-k per neuron is kept,
    so memory is one batch of ``[seq_len, d_mlp]`` activations whatever the stream's
    length. ``site``: ``mlp.post`` (the activation; default), ``mlp.pre`` or
    ``mlp.pre_linear``. ``largest=False`` finds the most negative activations instead
    (gated MLPs fire both ways). Dense MLPs only.
    """
    cfg = model.cfg
    if not cfg.has_mlp or cfg.is_moe:
        raise ValueError("neuron_top_activations needs a dense MLP (not attention-only, not mixture-of-experts)")
    if site not in ("mlp.post", "mlp.pre", "mlp.pre_linear") or (site == "mlp.pre_linear" and not cfg.gated_mlp):
        raise ValueError(f"site must be mlp.post, mlp.pre or (gated MLPs) mlp.pre_linear, got {site!r}")
    if not 0 <= layer < cfg.n_layers:
        raise ValueError(f"layer {layer} out of range: the model has {cfg.n_layers} layers")
    stream = np.asarray(token_stream)
    if stream.ndim != 1 or stream.size == 0:
        raise ValueError(f"token_stream must be a non-empty 1-D array of token ids, got shape {stream.shape}")
    width = seq_len + (bos is not None)
    if width > cfg.n_ctx:
        raise ValueError(f"seq_len={seq_len} (+ BOS) exceeds the model's context n_ctx={cfg.n_ctx}")
    neuron_ids = np.arange(cfg.d_mlp) if neurons is None else np.asarray(neurons)
    n = stream.size
    if k > n:
        raise ValueError(f"k={k} is more than the {n} tokens in the stream")
    n_windows = -(-n // seq_len)
    n_batches = -(-n_windows // batch_size)
    padded = np.zeros(n_batches * batch_size * seq_len, stream.dtype)
    padded[:n] = stream
    windows = padded.reshape(n_batches, batch_size, seq_len)
    if bos is not None:
        windows = np.concatenate([np.full(windows.shape[:-1] + (1,), bos, windows.dtype), windows], axis=-1)
    starts = (np.arange(n_batches * batch_size) * seq_len).reshape(n_batches, batch_size)
    values, positions = _scan_top_activations(
        model,
        jnp.asarray(windows),
        jnp.asarray(starts),
        jnp.asarray(neuron_ids),
        layer,
        k,
        n,
        site,
        bos is not None,
        1.0 if largest else -1.0,
    )
    return NeuronActivations(np.asarray(values), np.asarray(positions), neuron_ids)


def _layer_activations(model: Transformer, tokens, layer: int, site: str):
    """One window's activation at ``site`` of ``layer``: runs layers ``0..layer`` only."""
    _, cache = model.run(tokens, layers=(0, layer + 1), cache=frozenset({site}))
    return cache[site][layer]  # [pos, d_mlp]


@eqx.filter_jit  # ints and strings (layer, k, site, ...) are static
def _scan_top_activations(model, windows, starts, neuron_ids, layer, k, n_tokens, site, has_bos, sign):
    def one_batch(carry, xs):
        toks, start = xs
        acts = jax.vmap(lambda t: _layer_activations(model, t, layer, site))(toks)  # [batch, width, d_mlp]
        if has_bos:
            acts = acts[:, 1:]
        acts = sign * acts[..., neuron_ids].astype(jnp.float32)
        pos = start[:, None] + jnp.arange(acts.shape[1])[None, :]  # stream position of each activation
        acts = jnp.where((pos < n_tokens)[..., None], acts, -jnp.inf)  # padding never wins
        flat_acts = acts.reshape(-1, acts.shape[-1]).T  # [neuron, batch * seq]
        flat_pos = jnp.broadcast_to(pos.reshape(-1), flat_acts.shape)
        best_v, best_p = carry
        all_v = jnp.concatenate([best_v, flat_acts], axis=1)
        all_p = jnp.concatenate([best_p, flat_pos], axis=1)
        v, i = jax.lax.top_k(all_v, k)
        return (v, jnp.take_along_axis(all_p, i, axis=1)), None

    m = neuron_ids.shape[0]
    init = (jnp.full((m, k), -jnp.inf, jnp.float32), jnp.zeros((m, k), jnp.int32))
    (values, positions), _ = jax.lax.scan(one_batch, init, (windows, starts))
    return sign * values, positions


def activation_contexts(
    token_stream: Int[Array, " n_tokens"], positions, tokenizer, before: int = 8, after: int = 2, mark: str = "[[{}]]"
) -> list:
    """Readable contexts for stream positions (e.g. `NeuronActivations.positions`):
    ``before`` tokens, the token itself wrapped by ``mark``, ``after`` tokens. Returns
    nested lists shaped like ``positions``."""
    stream = np.asarray(token_stream)
    pos = np.asarray(positions)

    def one(p):
        p = int(p)
        left = tokenizer.decode([int(t) for t in stream[max(0, p - before) : p]])
        right = tokenizer.decode([int(t) for t in stream[p + 1 : p + 1 + after]])
        return left + mark.format(tokenizer.decode([int(stream[p])])) + right

    out = np.empty(pos.size, dtype=object)
    out[:] = [one(p) for p in pos.reshape(-1)]
    return out.reshape(pos.shape).tolist()
