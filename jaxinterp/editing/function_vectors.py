"""Function vectors (Todd et al. 2024, "Function Vectors in Large Language Models").

A few attention heads carry a compact representation of the task demonstrated in an
in-context-learning (ICL) prompt. To find them:

1. `mean_head_outputs`: each head's mean output ``attn.z`` at the last position over
   clean ICL prompts.
2. `causal_indirect_effect`: for every (layer, head), patch that mean into the last
   position of prompts whose demonstrations have shuffled labels, and measure how much
   the probability of the correct answer rises: ``CIE = P(y | shuffled, z_lh := mean)
   - P(y | shuffled)``, averaged over prompts. ONE compiled, vmapped program covers all
   heads.
3. `function_vector`: the sum of the top-k heads' mean outputs through ``W_O`` (a
   ``[d_model]`` vector); `add_function_vector` adds it to the residual stream at a
   layer at the last position of a zero-shot prompt; `first_token_accuracy` measures
   whether the model now answers correctly.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

import jaxinterp as ji
from jaxinterp.editing.common import (
    EditingError,
    Prompts,
    answer_probs,
    encode_prompts,
    last_token_states,
    row_answer_prob,
)

__all__ = [
    "Prompts",
    "accuracy_by_layer",
    "add_function_vector",
    "answer_probs",
    "causal_indirect_effect",
    "encode_prompts",
    "first_token_accuracy",
    "function_vector",
    "mean_head_outputs",
    "top_heads",
]


def mean_head_outputs(model, prompts: Prompts, batch_size: int = 16) -> Float[np.ndarray, "layer head d_head"]:
    """Every head's mean ``attn.z`` at the last position of ``prompts`` (clean ICL prompts)."""
    z = last_token_states(model, np.asarray(prompts.tokens), np.asarray(prompts.lengths), "attn.z", (-1,), batch_size)
    return z[:, 0].mean(0)


@eqx.filter_jit
def _cie(model, prompts: Prompts, mean_z, layers, heads, batch_size: int):
    base = jax.vmap(row_answer_prob, in_axes=(None, 0, 0, 0, None))(
        model, prompts.tokens, prompts.lengths, prompts.answers, ()
    )

    def one_head(lh):
        layer, head = lh

        def row(tokens, length, answer):
            patch = ji.Patch("attn.z", mean_z[layer], layer=layer, head=head, pos=length - 1)
            return row_answer_prob(model, tokens, length, answer, (patch,))

        return jax.vmap(row)(prompts.tokens, prompts.lengths, prompts.answers) - base

    return jax.lax.map(one_head, (layers, heads), batch_size=batch_size)  # [n_heads, batch]


def causal_indirect_effect(
    model,
    shuffled: Prompts,
    mean_z: Float[Array, "layer head d_head"],
    layers: Sequence[int] | None = None,
    batch_size: int = 8,
    per_prompt: bool = False,
) -> Float[np.ndarray, "layer head"]:
    """CIE of every head (of ``layers``, default all) on the ``shuffled``-label prompts:
    ``P(answer | head's last-position z := mean_z) - P(answer)``, averaged over prompts
    (``per_prompt=True``: ``[layer, head, batch]``). Layers not swept are NaN. All heads
    run in one compiled program (``batch_size`` heads at a time)."""
    cfg = model.cfg
    mean_z = jnp.asarray(mean_z)
    if mean_z.shape != (cfg.n_layers, cfg.n_heads, cfg.d_head):
        raise EditingError(
            f"mean_z must be [layer, head, d_head] = {(cfg.n_layers, cfg.n_heads, cfg.d_head)}, got {mean_z.shape}"
        )
    layers = list(range(cfg.n_layers)) if layers is None else [int(l) for l in layers]
    ll, hh = np.meshgrid(np.asarray(layers, np.int32), np.arange(cfg.n_heads, dtype=np.int32), indexing="ij")
    eff = np.asarray(
        _cie(model, shuffled, mean_z, jnp.asarray(ll.reshape(-1)), jnp.asarray(hh.reshape(-1)), int(batch_size))
    )
    out = np.full((cfg.n_layers, cfg.n_heads, eff.shape[-1]), np.nan, np.float32)
    out[ll.reshape(-1), hh.reshape(-1)] = eff
    return out if per_prompt else out.mean(-1)


def top_heads(cie: Float[np.ndarray, "layer head"], k: int) -> list[tuple[int, int]]:
    """The ``k`` (layer, head) pairs of largest CIE (NaNs, i.e. unswept layers, last)."""
    flat = np.where(np.isnan(cie), -np.inf, cie).reshape(-1)
    order = np.argsort(-flat)[:k]
    return [(int(i // cie.shape[1]), int(i % cie.shape[1])) for i in order]


def function_vector(
    model, mean_z: Float[Array, "layer head d_head"], heads: Sequence[tuple[int, int]]
) -> Float[np.ndarray, " d_model"]:
    """``sum over heads (l, h) of mean_z[l, h] @ W_O[l, h]``: the heads' mean outputs in
    the residual stream, summed (Todd et al.'s function vector)."""
    if not heads:
        raise EditingError("function_vector needs at least one head")
    W_O = np.asarray(model.blocks.attn.W_O)
    mean_z = np.asarray(mean_z)
    return np.sum([mean_z[l, h] @ W_O[l, h] for l, h in heads], axis=0)


def add_function_vector(fv: Float[Array, " d_model"], layer: int | Array, pos, scale: float | Array = 1.0) -> ji.Add:
    """Add ``scale * fv`` to ``resid_pre`` at ``layer`` and position ``pos`` (the prompt's last)."""
    fv = jnp.asarray(fv)
    return ji.Add("resid_pre", jnp.asarray(scale, fv.dtype) * fv, layer=layer, pos=pos)


@eqx.filter_jit
def _accuracy(model, prompts: Prompts, fv, layers, scale):
    def row(tokens, length, answer, layer):
        interventions = () if fv is None else (add_function_vector(fv, layer, length - 1, scale),)
        logits, _ = model.forward(tokens, interventions)
        last = jax.lax.dynamic_index_in_dim(logits, length - 1, 0, keepdims=False)
        return jnp.argmax(last) == answer

    per_layer = jax.vmap(row, in_axes=(0, 0, 0, None))
    return jax.vmap(lambda l: per_layer(prompts.tokens, prompts.lengths, prompts.answers, l))(layers)  # [layer, batch]


def first_token_accuracy(
    model, prompts: Prompts, fv: Float[Array, " d_model"] | None = None, layer: int = 0, scale: float = 1.0
) -> float:
    """Fraction of ``prompts`` whose greedy next token is the answer's first token, with
    the function vector added at ``layer`` (or without, if ``fv`` is None)."""
    fv = None if fv is None else jnp.asarray(fv, jnp.float32)
    return float(np.mean(np.asarray(_accuracy(model, prompts, fv, jnp.asarray([layer]), jnp.float32(scale)))))


def accuracy_by_layer(
    model, prompts: Prompts, fv: Float[Array, " d_model"], layers: Sequence[int] | None = None, scale: float = 1.0
) -> Float[np.ndarray, " layer"]:
    """`first_token_accuracy` with the function vector added at each of ``layers`` (default
    all), every layer in one vmapped program."""
    layers = np.arange(model.cfg.n_layers) if layers is None else np.asarray(layers)
    out = _accuracy(model, prompts, jnp.asarray(fv, jnp.float32), jnp.asarray(layers, jnp.int32), jnp.float32(scale))
    return np.asarray(out).mean(-1)
