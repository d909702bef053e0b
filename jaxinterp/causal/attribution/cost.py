"""Counting what an attribution costs, in matrix-multiply FLOPs and forward passes.

XLA's ``cost_analysis()`` counts a ``scan`` body once, whatever its length, and the
layers of a `Transformer` run under ``scan``. `matmul_flops` walks the jaxpr instead,
multiplying loop bodies by their trip counts, after removing the dead code that XLA
would remove too. Matrix products (``dot_general``) are
nearly all the FLOPs of a transformer, and the same count for every program compared,
so the ratio to one forward pass is a fair measure of cost.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
from jax.extend import core as jex_core

from ...engine.grads import Metric, check_pair, short_sites

__all__ = ["matmul_flops", "attribution_cost"]


def _dot_flops(eqn) -> int:
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    out = eqn.outvars[0].aval.shape
    return 2 * math.prod(out) * math.prod(lhs[d] for d in lhs_contract)


def _sub_jaxprs(value):
    if isinstance(value, jex_core.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, jex_core.Jaxpr):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _sub_jaxprs(v)


def _jaxpr_flops(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
            continue
        if name == "while":
            raise ValueError("matmul_flops cannot count a while loop (its trip count is not static); use scan")
        subs = [f for v in eqn.params.values() for f in _sub_jaxprs(v)]
        if not subs:
            continue
        counts = [_jaxpr_flops(j) for j in subs]
        if name == "cond":
            total += max(counts)  # one branch runs
        elif name == "scan":
            total += eqn.params["length"] * sum(counts)
        else:  # pjit, custom_jvp/vjp calls, remat, ...: the body runs once
            total += sum(counts)
    return total


def matmul_flops(fn: Callable, *args, **kwargs) -> int:
    """FLOPs of the matrix products ``fn(*args, **kwargs)`` executes (2 per multiply-add),
    scan bodies counted once per iteration. Traces ``fn``; runs nothing.

    Products whose results nothing uses are not counted: XLA removes them (e.g. a head's
    attention when a full `Patch` overwrites its output), and so does this count
    (dead-code elimination on the jaxpr, through loop bodies)."""
    closed = jax.make_jaxpr(fn)(*args, **kwargs)
    return _jaxpr_flops(_live(closed.jaxpr))


def _live(jaxpr):
    """``jaxpr`` without the equations no output depends on (JAX's own dead-code pass,
    which recurses into scan, cond and pjit bodies; the jaxpr as it is if this JAX lacks
    it)."""
    try:
        from jax._src.interpreters import partial_eval as pe

        live, _ = pe.dce_jaxpr(jaxpr, [True] * len(jaxpr.outvars))
    except (ImportError, AttributeError):  # private API: counting then includes dead code
        return jaxpr
    return live


def attribution_cost(
    model,
    clean_tokens,
    corrupted_tokens,
    metric: Metric,
    sites=("resid_pre", "attn.z"),
    method: str = "ap",
    n_steps: int = 16,
    edges: bool = False,
) -> dict[str, float]:
    """Matmul FLOPs of `attribution_patch` (or `edge_attribution_patch` with ``edges``)
    for one example, and of one plain forward pass computing all logits (as a
    TransformerLens forward does). Returns ``{"attribution": flops, "forward": flops,
    "forward_passes": ratio}``, and with ``edges`` also ``"n_edges"`` (the graph's
    valid edges, every one scored) and ``"per_edge"``: forward passes per scored edge."""
    from .edges import edge_scores
    from .nodes import attribution_scores

    clean_tokens, corrupted_tokens = check_pair(model, clean_tokens, corrupted_tokens)
    if clean_tokens.ndim != 1:
        raise ValueError("attribution_cost counts one example: give tokens of shape [pos]")
    forward = matmul_flops(lambda m, t: m.forward(t)[0], model, corrupted_tokens)
    if edges:
        method = "eap" if method == "ap" else method
        cost = matmul_flops(
            lambda m, b, t: edge_scores(m, b, t, metric, method, n_steps), model, corrupted_tokens, clean_tokens
        )
    else:
        shorts = short_sites(model, sites)
        cost = matmul_flops(
            lambda m, b, t: attribution_scores(m, b, t, metric, shorts, method, n_steps),
            model,
            corrupted_tokens,
            clean_tokens,
        )
    out = {"attribution": float(cost), "forward": float(forward), "forward_passes": cost / forward}
    if edges:
        from .edges import valid_edges

        n_edges = int(valid_edges(model.cfg).sum())
        out.update(n_edges=n_edges, per_edge=out["forward_passes"] / n_edges)
    return out
