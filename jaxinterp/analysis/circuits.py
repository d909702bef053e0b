"""QK and OV circuits, full token-space circuits, skip-trigrams, composition and copying.

After "A Mathematical Framework for Transformer Circuits" (Elhage et al. 2021), in the
row-vector convention of TransformerLens (a residual vector ``x`` is a row, a head maps
``x -> x W_V W_O``):

- a head's **QK circuit** ``W_QK = W_Q W_K^T`` (``[d_model, d_model]``) gives the
  attention score of a destination (query) residual ``x_dst`` on a source (key)
  residual ``x_src`` as ``x_dst W_QK x_src^T`` (before the ``1/sqrt(d_head)`` scale);
- its **OV circuit** ``W_OV = W_V W_O`` maps what the head reads at the source to
  what it writes at the destination;
- the **full circuits** put tokens at both ends: ``W_E W_QK W_E^T``
  (``[d_vocab (dst), d_vocab (src)]``) and ``W_E W_OV W_U``
  (``[d_vocab (src), d_vocab (out)]``).

Everything is a `FactoredMatrix` of rank ``d_head``, so a GPT-2-size ``d_vocab x
d_vocab`` circuit costs ``2 * d_vocab * d_head`` numbers. Under GQA, query head ``h``
uses key/value head ``h // (n_heads // n_kv_heads)``.

These read the weights only: biases, norms and (for rotary models) the position-dependent
rotation between ``W_Q`` and ``W_K^T`` are not part of the circuits. Fold the norms
first (`jaxinterp.analysis.processing.fold_layer_norm`) so the weights include their scales.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..core.labelled import LabelledArray
from ..model import Transformer
from .factored_matrix import FactoredMatrix

__all__ = [
    "qk_circuit",
    "ov_circuit",
    "token_embeddings",
    "full_qk_circuit",
    "full_ov_circuit",
    "SkipTrigram",
    "skip_trigrams",
    "composition_score",
    "composition_scores",
    "all_composition_scores",
    "copying_scores",
]


def _per_query_head(W: Float[Array, "layer kv_head ..."], n_heads: int) -> Float[Array, "layer head ..."]:
    """Key/value weights repeated so that index ``h`` is query head ``h``'s kv head."""
    return jnp.repeat(W, n_heads // W.shape[1], axis=1)


def _select(x, layers, heads):
    """Index ``[layer, head, ...]`` arrays by optional layer/head selections (kept as axes)."""
    if layers is not None:
        x = x[jnp.atleast_1d(jnp.asarray(layers))]
    if heads is not None:
        x = x[:, jnp.atleast_1d(jnp.asarray(heads))]
    return x


def qk_circuit(model: Transformer) -> FactoredMatrix:
    """``W_Q W_K^T`` per head: a `FactoredMatrix` ``[layer, head, d_model, d_model]``
    (rows: destination residual, columns: source residual)."""
    attn = model.blocks.attn
    W_K = _per_query_head(attn.W_K, model.cfg.n_heads)
    return FactoredMatrix(attn.W_Q, jnp.swapaxes(W_K, -1, -2))


def ov_circuit(model: Transformer) -> FactoredMatrix:
    """``W_V W_O`` per head: a `FactoredMatrix` ``[layer, head, d_model, d_model]``
    (rows: source residual read, columns: direction written)."""
    attn = model.blocks.attn
    return FactoredMatrix(_per_query_head(attn.W_V, model.cfg.n_heads), attn.W_O)


def token_embeddings(model: Transformer) -> Float[Array, "d_vocab d_model"]:
    """What each token adds to the residual stream: ``W_E`` times Gemma's embedding
    scale if the model has one."""
    W_E = model.embed.W_E
    return W_E if model.embed.scale is None else W_E * jnp.asarray(model.embed.scale, W_E.dtype)


def _unembedding(model: Transformer):
    if model.unembed is None:
        raise ValueError(
            "this model has no unembedding (an encoder loaded without an LM head): no output-token circuit"
        )
    return model.unembed.W_U


def full_qk_circuit(model: Transformer, layers=None, heads=None) -> FactoredMatrix:
    """``W_E W_QK W_E^T``: ``[layer, head, d_vocab (dst), d_vocab (src)]`` attention
    scores between tokens, ignoring positions and norms. ``layers``/``heads`` (ints or
    index lists) restrict the heads, to bound memory (``2 * d_vocab * d_head`` per head)."""
    W_E = token_embeddings(model)
    attn = model.blocks.attn
    W_Q = _select(attn.W_Q, layers, heads)
    W_K = _select(_per_query_head(attn.W_K, model.cfg.n_heads), layers, heads)
    return FactoredMatrix(W_E @ W_Q, jnp.swapaxes(W_E @ W_K, -1, -2))


def full_ov_circuit(model: Transformer, layers=None, heads=None) -> FactoredMatrix:
    """``W_E W_OV W_U``: ``[layer, head, d_vocab (src), d_vocab (out)]``, the direct
    effect on the output logits of attending to each source token. ``layers``/``heads``
    restrict the heads, to bound memory."""
    W_E, W_U = token_embeddings(model), _unembedding(model)
    attn = model.blocks.attn
    W_V = _select(_per_query_head(attn.W_V, model.cfg.n_heads), layers, heads)
    W_O = _select(attn.W_O, layers, heads)
    return FactoredMatrix(W_E @ W_V, W_O @ W_U)


class SkipTrigram(NamedTuple):
    """``[source] ... [destination] -> [out]``: attending from ``destination`` to
    ``source`` raises the logit of ``out``."""

    source: int
    destination: int
    out: int
    ov_score: float  # full OV circuit entry (source, out): logit effect of copying source
    qk_score: float  # full QK circuit entry (destination, source): attention score
    text: Optional[str] = None


def skip_trigrams(
    model: Transformer,
    layer: int,
    head: int,
    k: int = 10,
    destinations_per_pair: int = 1,
    tokenizer=None,
    chunk_size: int = 1024,
) -> list[SkipTrigram]:
    """The top skip-trigrams of one head, as read off its full circuits.

    Takes the ``k`` largest entries ``(source, out)`` of the full OV circuit (computed
    in row chunks, so GPT-2's vocabulary fits), then for each source the
    ``destinations_per_pair`` destination tokens whose queries score it highest in the
    full QK circuit. Sorted by OV score. With a ``tokenizer`` (anything with
    ``decode(list_of_ids)``), each triple carries readable text.
    """
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise ValueError(f"head ({layer}, {head}) out of range: the model has {n_layers} layers x {n_heads} heads")
    ov = full_ov_circuit(model, layer, head)[0, 0]
    ov_vals, sources, outs = ov.top_entries(k, chunk_size=chunk_size)
    qk = full_qk_circuit(model, layer, head)[0, 0]
    # Column `source` of W_E W_QK W_E^T: every destination's score on that source.
    qk_cols = (qk.A @ (qk.B[:, sources])).T  # [k, d_vocab (dst)]
    top_dst = jnp.argsort(-qk_cols, axis=-1)[:, :destinations_per_pair]
    out = []
    for i in range(k):
        for j in range(destinations_per_pair):
            src, dst, o = int(sources[i]), int(top_dst[i, j]), int(outs[i])
            text = None
            if tokenizer is not None:
                s, d, t = (tokenizer.decode([x]) for x in (src, dst, o))
                text = f"{s!r} ... {d!r} -> {t!r}"
            out.append(SkipTrigram(src, dst, o, float(ov_vals[i]), float(qk_cols[i, dst]), text))
    return out


def composition_score(W_A: FactoredMatrix, W_B: FactoredMatrix) -> Float[Array, "..."]:
    """``||W_A W_B||_F / (||W_A||_F ||W_B||_F)``, batched over (broadcast) leading axes.

    In ``[0, 1]``: 1 when ``W_B`` reads exactly what ``W_A`` writes, small for unrelated
    matrices. Computed from ``d_head``-sized Gram matrices: with ``M = B_A A_B``,
    ``||A_A M B_B||_F^2 = tr(M^T (A_A^T A_A) M (B_B B_B^T))``, so nothing of size
    ``d_model^2`` (or even ``d_model x d_head`` per pair) is formed.
    """
    M = W_A.B @ W_B.A
    gram_a = jnp.swapaxes(W_A.A, -1, -2) @ W_A.A
    gram_b = W_B.B @ jnp.swapaxes(W_B.B, -1, -2)
    sq = jnp.sum((gram_a @ M) * (M @ gram_b), axis=(-1, -2))
    return jnp.sqrt(jnp.maximum(sq, 0.0)) / (W_A.norm() * W_B.norm())


def composition_scores(model: Transformer, mode: str) -> Float[Array, "layer head layer head"]:
    """Q-, K- or V-composition of every earlier head ``A`` into every later head ``B``.

    With ``W_OV^A`` head A's OV circuit (what it writes):

    - ``"Q"``: ``W_OV^A W_QK^B`` (A's output read by B's queries),
    - ``"K"``: ``W_OV^A (W_QK^B)^T`` (A's output read by B's keys),
    - ``"V"``: ``W_OV^A W_OV^B`` (A's output read by B's values),

    scored by `composition_score`. Returns ``[layer_A, head_A, layer_B, head_B]`` with
    zeros where ``layer_B <= layer_A`` (no path from A to B). Attention-only paths
    only: norms and MLPs in between are ignored, as in the paper (fold the norms first).
    """
    mode = mode.upper()
    ov = ov_circuit(model)
    if mode == "Q":
        right = qk_circuit(model)
    elif mode == "K":
        right = qk_circuit(model).T
    elif mode == "V":
        right = ov
    else:
        raise ValueError(f"composition mode must be 'Q', 'K' or 'V', got {mode!r}")
    L = ov.shape[0]
    right_b = FactoredMatrix(right.A[None], right.B[None])  # [1, layer_B, head_B, ...]
    rows = []
    for layer_a in range(L):  # one source layer at a time bounds memory at H * L * H * d_head^2
        left = FactoredMatrix(ov.A[layer_a, :, None, None], ov.B[layer_a, :, None, None])
        rows.append(composition_score(left, right_b))
    scores = jnp.stack(rows)
    later = jnp.arange(L)[None, None, :, None] > jnp.arange(L)[:, None, None, None]
    return jnp.where(later, scores, 0.0)


def all_composition_scores(model: Transformer) -> LabelledArray:
    """Q, K and V composition together: a `LabelledArray` ``[mode, layer_A, head_A,
    layer_B, head_B]`` with ``mode`` labelled ``Q, K, V``."""
    scores = np.stack([np.asarray(composition_scores(model, m)) for m in "QKV"])
    return LabelledArray(
        scores, ("mode", "layer_a", "head_a", "layer_b", "head_b"), {"mode": ["Q", "K", "V"]}, "composition score"
    )


def copying_scores(model: Transformer, layers: Optional[Sequence[int]] = None) -> LabelledArray:
    """How much each head copies: from the eigenvalues ``lambda`` of its full OV circuit
    ``W_E W_OV W_U``, ``sum(lambda) / sum(|lambda|)`` (Elhage et al.), in ``[-1, 1]``.

    A copying head maps a token to itself (and similar tokens), which makes the full OV
    circuit's eigenvalues mostly positive: score near 1. The eigenvalues come from the
    ``d_head x d_head`` matrix ``W_O W_U W_E W_V`` (same nonzero spectrum), so this is
    cheap even for GPT-2's vocabulary. Returns ``[layer, head]``.
    """
    full = full_ov_circuit(model, layers)
    eig = full.eigenvalues
    scores = jnp.real(eig.sum(-1)) / jnp.abs(eig).sum(-1)
    L = scores.shape[0]
    labels = {"layer": [str(l) for l in (range(L) if layers is None else np.atleast_1d(layers))]}
    return LabelledArray(np.asarray(scores), ("layer", "head"), labels, "copying score")
