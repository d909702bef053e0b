"""Edge attribution patching (EAP, Syed et al. 2023) and EAP-IG (Hanna et al. 2024).

In a pre-norm transformer the input of every reader (a head's query, key or value, an
MLP, the unembedding) is the sum of the outputs of every earlier writer (the
embeddings, each head, each MLP). An *edge* ``u -> d`` is one term of that sum. Patching
the edge (giving ``d`` the clean output of ``u`` while every other reader keeps the
corrupted one) moves the metric, to first order, by ::

    score(u -> d) = sum_pos (out_u(clean) - out_u(corrupted)) . d metric / d in_d

where ``d metric / d in_d`` is the gradient with respect to the residual stream *as read
by d alone* (through d's own norm and projection, not through its neighbours).

All of those gradients come from one backward pass: the gradient with respect to a
zero `Add` at ``attn.q`` / ``attn.k`` / ``attn.v`` (per head) and ``ln2.normalized``
(per MLP), carried back through that head's projection ``W_Q[h]`` and that layer's norm
with a vector-Jacobian product at the cached residual, gives each reader's own input
gradient; the final ``resid_post`` gradient is the logits' one. EAP-IG averages those
gradients along the embedding path from corrupted to clean, as in Hanna et al.

Supported: pre-norm blocks, sequential or parallel (NeoX), any attention (MHA/GQA/MQA,
rotary or learned positions), dense or MoE MLPs. Post-norm blocks (BERT) and Gemma 2's
post-attention/MLP norms do not write head outputs additively into the residual stream,
so their edges are not defined here.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ...core.labelled import LabelledArray
from ...engine.grads import Metric, cache_run, check_pair, ig_alphas, metric_and_grads
from ...model.hooks import NO_HOOKS
from .chunks import dataset_pairs, run_pairs
from .graph import Component, parse_component

__all__ = ["edge_attribution_patch", "edge_scores", "graph_nodes", "EdgeAttribution", "Edge", "Circuit"]


# ------------------------------------------------------------------------ the graph


def graph_nodes(cfg) -> tuple[list[Component], list[Component]]:
    """The upstream (writer) and downstream (reader) nodes, in layer order.

    Upstream: ``embed``, then per layer its heads and its MLP. Downstream: per layer its
    heads' queries, its key/value heads' keys, then values, then its MLP; ``logits`` last.
    """
    _check_supported(cfg)
    up = [Component("embed")]
    down = []
    kv = "head" if cfg.n_kv_heads == cfg.n_heads else "kv_head"
    for l in range(cfg.n_layers):
        up += [Component("head", l, h) for h in range(cfg.n_heads)]
        down += [Component("head", l, h, "q") for h in range(cfg.n_heads)]
        down += [Component(kv, l, g, "k") for g in range(cfg.n_kv_heads)]
        down += [Component(kv, l, g, "v") for g in range(cfg.n_kv_heads)]
        if cfg.has_mlp:
            up.append(Component("mlp", l))
            down.append(Component("mlp", l))
    down.append(Component("logits"))
    return up, down


def _order(cfg, node: Component, reads: bool) -> int:
    # Position in the forward pass: attention of layer l at 2l, its MLP at 2l+1 (2l when
    # attention and MLP run in parallel and both read resid_pre). A writer feeds a reader
    # iff it comes strictly earlier.
    if node.kind == "embed":
        return -1
    if node.kind == "logits":
        return 2 * cfg.n_layers
    if node.kind == "mlp":
        return 2 * node.layer + (0 if (reads and cfg.parallel_attn_mlp) else 1)
    return 2 * node.layer


def valid_edges(cfg) -> Bool[np.ndarray, "upstream downstream"]:
    """Which (upstream, downstream) pairs are edges of the computational graph."""
    up, down = graph_nodes(cfg)
    u = np.array([_order(cfg, n, False) for n in up])
    d = np.array([_order(cfg, n, True) for n in down])
    return u[:, None] < d[None, :]


def _check_supported(cfg):
    if cfg.post_norm or cfg.post_attn_norm or cfg.post_mlp_norm:
        raise NotImplementedError(
            "edge attribution needs pre-norm blocks whose heads and MLPs add their outputs to the residual "
            f"stream; this {cfg.family} model normalises after attention/MLP (post_norm={cfg.post_norm}, "
            f"post_attn_norm={cfg.post_attn_norm}, post_mlp_norm={cfg.post_mlp_norm})"
        )


# -------------------------------------------------------------------- computation


def _through_norm(norms, xs, cts):
    """Per layer, pull cotangents ``cts [layer, n, pos, d_model]`` on a norm's output back
    to its input ``xs [layer, pos, d_model]`` (vector-Jacobian product at xs)."""

    def one(norm, x, ct):
        _, vjp = jax.vjp(lambda x: norm(x, NO_HOOKS, "norm"), x)
        return jax.vmap(lambda c: vjp(c.astype(x.dtype))[0])(ct)

    return jax.vmap(one)(norms, xs, cts)


def _sites(cfg):
    grad_sites = ("attn.q", "attn.k", "attn.v") + (("ln2.normalized",) if cfg.has_mlp else ()) + ("resid_post",)
    cache = {"resid_pre", "attn.result"}
    if cfg.has_mlp:
        cache.add("mlp_out")
        if not cfg.parallel_attn_mlp:
            cache.add("resid_mid")
    return grad_sites, frozenset(cache)


def _writer_outputs(cfg, cache) -> Float[Array, "upstream pos d_model"]:
    """Each upstream node's output, in `graph_nodes` order."""
    heads = jnp.moveaxis(cache["attn.result"], 2, 1)  # [layer, head, pos, d_model]
    if cfg.has_mlp:
        heads = jnp.concatenate([heads, cache["mlp_out"][:, None]], axis=1)
    per_layer = heads.reshape((-1,) + heads.shape[2:])
    return jnp.concatenate([cache["resid_pre"][0][None], per_layer]).astype(jnp.float32)


def _reader_grads(model, cache, grads) -> Float[Array, "downstream pos d_model"]:
    """d metric / d (residual stream as each downstream node reads it), `graph_nodes` order."""
    cfg, attn = model.cfg, model.blocks.attn
    # Through each head's own projection: [layer, pos, head, d_head] x [layer, head, d_model, d_head].
    per_head = [
        jnp.einsum("lphd,lhmd->lhpm", grads[s].astype(jnp.float32), W.astype(jnp.float32))
        for s, W in (("attn.q", attn.W_Q), ("attn.k", attn.W_K), ("attn.v", attn.W_V))
    ]
    readers = _through_norm(model.blocks.ln1, cache["resid_pre"], jnp.concatenate(per_head, axis=1))
    if cfg.has_mlp:
        mlp_in = cache["resid_pre"] if cfg.parallel_attn_mlp else cache["resid_mid"]
        g_mlp = _through_norm(model.blocks.ln2, mlp_in, grads["ln2.normalized"][:, None])
        readers = jnp.concatenate([readers, g_mlp], axis=1)
    readers = readers.reshape((-1,) + readers.shape[2:]).astype(jnp.float32)
    # ln_final (if any) reads the last block's resid_post, and nothing else does.
    return jnp.concatenate([readers, grads["resid_post"][-1][None].astype(jnp.float32)])


def edge_scores(
    model,
    base_tokens: Int[Array, " pos"],
    target_tokens: Int[Array, " pos"],
    metric: Metric,
    method: str = "eap",
    n_steps: int = 16,
) -> Float[Array, "upstream downstream"]:
    """Edge scores of one example (pure, jittable): ``(out_u(target) - out_u(base)) .
    grad_d`` summed over positions, the gradient at the base run (``"eap"``) or averaged
    along the embedding path from base to target (``"ig"``). Zero off the graph's edges."""
    cfg = model.cfg
    grad_sites, cache_names = _sites(cfg)
    if method == "eap":
        target_cache = cache_run(model, target_tokens, cache_names)
        _, base_cache, grads = metric_and_grads(model, base_tokens, metric, grad_sites, cache_names)
        g = _reader_grads(model, base_cache, grads)
    elif method == "ig":
        names = cache_names | {"embed"}
        target_cache = cache_run(model, target_tokens, names)
        base_cache = cache_run(model, base_tokens, names)
        e0, e1 = base_cache["embed"], target_cache["embed"]

        def reader_grads_at(alpha):
            _, cache, grads = metric_and_grads(
                model, base_tokens, metric, grad_sites, cache_names, embed=e0 + alpha * (e1 - e0)
            )
            return _reader_grads(model, cache, grads)

        g = jax.lax.map(reader_grads_at, ig_alphas(n_steps)).mean(0)
    else:
        raise ValueError(f"method must be 'eap' or 'ig' (EAP-IG), got {method!r}")
    delta = _writer_outputs(cfg, target_cache) - _writer_outputs(cfg, base_cache)
    return jnp.einsum("upm,dpm->ud", delta, g) * jnp.asarray(valid_edges(cfg))


def _pair_edge_scores(model, method, n_steps, base, target, metric):
    return edge_scores(model, base, target, metric, method, n_steps)


_one_pair = eqx.filter_jit(_pair_edge_scores)


# ----------------------------------------------------------------------- results


class Edge(NamedTuple):
    """One edge of the graph: an upstream (writer) node name, a downstream (reader) node
    name, and its attribution score."""

    upstream: str
    downstream: str
    score: float


class Circuit(NamedTuple):
    """A set of edges; ``nodes`` are the components they touch (a reader's ``.q``/``.k``/
    ``.v`` suffix dropped), ready for `jaxinterp.causal.path_patching.evaluate_hypothesis`."""

    edges: tuple

    @property
    def nodes(self) -> list[str]:
        names = set()
        for e in self.edges:
            names.add(e.upstream)
            names.add(parse_component(e.downstream)._replace(input=None).name)
        return sorted(names, key=_node_sort_key)


def _node_sort_key(name: str):
    c = parse_component(name)
    layer = -1 if c.kind == "embed" else (10**9 if c.kind == "logits" else c.layer)
    return (layer, c.kind == "mlp", c.index or 0, name)


class EdgeAttribution:
    """Edge scores ``[upstream, downstream]`` as a `LabelledArray` (``.scores``), with the
    mask of pairs that are edges (``.valid``) and helpers to pick a circuit."""

    def __init__(self, scores: np.ndarray, valid: np.ndarray, upstream: list[str], downstream: list[str], method: str):
        self.scores = LabelledArray(
            scores,
            ("upstream", "downstream"),
            {"upstream": upstream, "downstream": downstream},
            name=f"edge attribution ({method})",
        )
        self.valid = valid
        self.upstream, self.downstream = upstream, downstream

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.scores, dtype)

    @property
    def n_edges(self) -> int:
        return int(self.valid.sum())

    def score(self, upstream: str, downstream: str) -> float:
        """The score of one edge, by node names."""
        try:
            i, j = self.upstream.index(upstream), self.downstream.index(downstream)
        except ValueError:
            raise KeyError(
                f"no edge {upstream!r} -> {downstream!r}; upstream nodes look like {self.upstream[:3]}, "
                f"downstream like {self.downstream[:3]}"
            ) from None
        if not self.valid[i, j]:
            raise KeyError(f"{upstream!r} does not feed {downstream!r} (it is not earlier in the forward pass)")
        return float(self.scores.values[i, j])

    def top_edges(self, k: int, absolute: bool = True) -> list[Edge]:
        """The ``k`` edges with the largest score (by magnitude if ``absolute``)."""
        vals = np.where(self.valid, self.scores.values, np.nan)
        key = np.abs(vals) if absolute else vals
        flat = np.argsort(np.nan_to_num(-key, nan=np.inf), axis=None, kind="stable")[: min(k, self.n_edges)]
        rows, cols = np.unravel_index(flat, vals.shape)
        return [Edge(self.upstream[i], self.downstream[j], float(vals[i, j])) for i, j in zip(rows, cols)]

    def circuit(self, k: Optional[int] = None, threshold: Optional[float] = None, absolute: bool = True) -> Circuit:
        """The top-``k`` edges, or every edge whose (absolute) score is at least ``threshold``."""
        if (k is None) == (threshold is None):
            raise ValueError("give exactly one of k= (number of edges) or threshold= (minimum score)")
        if k is not None:
            return Circuit(tuple(self.top_edges(k, absolute)))
        edges = [
            e for e in self.top_edges(self.n_edges, absolute) if (abs(e.score) if absolute else e.score) >= threshold
        ]
        return Circuit(tuple(edges))


def edge_attribution_patch(
    model,
    clean_tokens: Int[Array, "... pos"],
    corrupted_tokens: Int[Array, "... pos"],
    metric: Metric,
    *,
    method: str = "eap",
    n_steps: int = 16,
    direction: str = "denoising",
    attention_mask=None,
    batch_size: Optional[int] = None,
    checkpoint=None,
    progress: bool = False,
) -> EdgeAttribution:
    """Score every edge between writers (embeddings, heads, MLPs) and readers (head
    q/k/v inputs, MLP inputs, logits) in one forward+backward (``"eap"``) or ``n_steps``
    of them (``"ig"``, EAP-IG).

    Args:
        clean_tokens, corrupted_tokens: int ``[pos]`` or ``[batch, pos]`` (a dataset of
            pairs: the scores of the batch-mean metric), same shape.
        metric: ``metric(logits [pos, d_vocab]) -> scalar``, or with a batch one per pair
            (a `PairMetric`, e.g. ``pair_logit_diff(io, s, pos=last)``).
        direction: ``"denoising"`` estimates patching each edge clean into the corrupted
            run; ``"noising"`` corrupted into clean.
        attention_mask: ``[batch, pos]``, right-padded pairs (causal models; see
            `jaxinterp.causal.pairs`).
        batch_size: with a batch, run ``batch_size`` pairs at a time (one compiled
            program, the last chunk padded with weight-0 repeats); the scores are the
            pair-count-weighted mean of the chunks. None: every pair at once.
        checkpoint: a directory (or a `jaxinterp.engine.checkpoint.SweepCheckpoint`):
            finished chunks are saved there and a rerun with the same inputs loads them
            instead of computing them again (keyed on the model, prompts, attention
            mask, metric, ``method``, ``n_steps`` (EAP-IG), ``direction`` and
            ``batch_size``; a mismatch raises `ResumeError` naming what differs). Needs
            a dataset (``[batch, pos]`` tokens). See docs/long_runs.md.
        progress: a tqdm bar over the chunks, with its ETA.

    Returns:
        An `EdgeAttribution`: ``.scores`` ``[upstream, downstream]`` (labelled by node
        names, see `jaxinterp.causal.attribution.graph`), ``.valid``, ``.top_edges(k)``,
        ``.circuit(k)``. Each score estimates the metric change from patching that edge.
    """
    if direction not in ("denoising", "noising"):
        raise ValueError(f"direction must be 'denoising' or 'noising', got {direction!r}")
    if method not in ("eap", "ig"):
        raise ValueError(f"method must be 'eap' or 'ig' (EAP-IG), got {method!r}")
    if method == "ig":
        ig_alphas(n_steps)  # validates n_steps
    up, down = graph_nodes(model.cfg)  # checks the architecture first
    pairs = dataset_pairs(model, clean_tokens, corrupted_tokens, metric, attention_mask, checkpoint)
    if pairs is not None:
        scores = run_pairs(
            jax.tree_util.Partial(_pair_edge_scores, model, method, n_steps),
            model,
            pairs,
            direction,
            batch_size=batch_size,
            per_pair=False,
            checkpoint=checkpoint,
            progress=progress,
            technique="edge attribution patching",
            settings={"method": method, "IG steps": n_steps if method == "ig" else None},
        )
    else:
        clean_tokens, corrupted_tokens = check_pair(model, clean_tokens, corrupted_tokens)
        base, target = (
            (corrupted_tokens, clean_tokens) if direction == "denoising" else (clean_tokens, corrupted_tokens)
        )
        scores = np.asarray(_one_pair(model, method, n_steps, base, target, metric))
    return EdgeAttribution(scores, valid_edges(model.cfg), [n.name for n in up], [n.name for n in down], method)
