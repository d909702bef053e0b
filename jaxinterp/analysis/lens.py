"""Logit lens, residual-stream decomposition and direct logit attribution (DLA).

In a pre-norm transformer the final residual stream is a sum: the embeddings plus what
every attention layer (every head, plus its output bias) and every MLP wrote. Through
the final norm, whose divisor is one number per position, and the (linear) unembedding,
each term's *direct* effect on a logit is well defined::

    logits[pos] = sum_c  (norm_linear(c) @ W_U)  +  b_final @ W_U + b_U

where ``norm_linear(c) = centre(c) / scale[pos] * (offset + w)`` (no centring for
RMSNorm) uses the final norm's *cached* ``scale`` -- TransformerLens's
``apply_ln_to_stack``. Summed over all components the attributions give the logits
exactly (before Gemma 2's final soft-capping, which is not linear).

- `decompose_resid`: the components, per layer or per head (``attn.result``, with
  Gemma 2's output norm applied the same way through its cached scale).
- `accumulated_resid`: the residual stream after each layer (the logit lens's input).
- `logit_lens`: each accumulated residual through the final norm (recomputed on that
  residual, as the logit lens does) and the unembedding.
- `direct_logit_attribution` / `head_logit_attribution`: components projected on a
  logit direction such as ``W_U[:, answer] - W_U[:, wrong]``.

Post-norm models (BERT) have no such decomposition: every layer renormalises the
stream itself. They are refused.
"""

from __future__ import annotations

from typing import Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..core.errors import JaxinterpError
from ..core.labelled import LabelledArray
from ..model import Transformer
from ..model.norms import Norm

__all__ = [
    "apply_norm_linear",
    "apply_ln_to_stack",
    "decompose_resid",
    "accumulated_resid",
    "logit_lens",
    "top_token_table",
    "token_ranks",
    "logit_direction",
    "direct_logit_attribution",
    "head_logit_attribution",
]


def _check_decomposable(model: Transformer, what: str):
    if model.cfg.post_norm:
        raise ValueError(
            f"{what}: post-norm models (BERT) renormalise the residual stream in every layer, so it is not a sum of "
            "component outputs"
        )


def apply_norm_linear(
    norm: Norm, x: Float[Array, "... d_model"], scale: Float[Array, "... 1"]
) -> Float[Array, "... d_model"]:
    """A norm's action on one summand ``x`` of its input, given the divisor ``scale``
    cached for the whole input: centre (LayerNorm only), divide by ``scale``, multiply
    by ``offset + w``. Linear in ``x``, so the results of all summands add up to the
    norm's output minus its bias."""
    x = x.astype(jnp.float32)
    if norm.kind == "layernorm":
        x = x - x.mean(-1, keepdims=True)
    return x / scale.astype(jnp.float32) * (norm.w.astype(jnp.float32) + norm.weight_offset)


def apply_ln_to_stack(model: Transformer, stack: Float[Array, "component ... d_model"], scale: Float[Array, "... 1"]):
    """`apply_norm_linear` with the final norm: ``stack`` is ``[component, ...]`` of
    residual summands and ``scale`` the cached ``ln_final.scale`` (broadcast over
    components). The final norm's bias is not included (it is its own component)."""
    if model.ln_final is None:
        raise ValueError("this model has no final norm")
    return apply_norm_linear(model.ln_final, stack, scale)


def _batched_cache(model: Transformer, tokens, names, cache):
    """``(cache, batched)``: run the model if no cache was given."""
    if cache is None:
        if tokens is None:
            raise ValueError("pass tokens or a cache")
        _, cache = model.run_with_cache(tokens, names=names)
    return cache, cache.batched


def _add_batch(x, batched: bool, stacked: bool):
    """Give a cached array a batch axis (after the layer axis for stacked sites)."""
    if batched:
        return x
    return x[:, None] if stacked else x[None]


def decompose_resid(
    model: Transformer,
    tokens: Optional[Int[Array, "... pos"]] = None,
    cache=None,
    by: str = "layer",
) -> tuple[Float[Array, "component ... pos d_model"], list[str]]:
    """The final residual stream (the input of the final norm) as a sum of components.

    ``by="layer"``: ``embed``, ``pos_embed`` (learned positions), ``token_type_embed``,
    then ``L{l}_attn`` and ``L{l}_mlp`` per layer. ``by="head"``: the attention layers
    split into heads ``L{l}H{h}`` (from ``attn.result``) plus ``L{l}_attn_bias``
    (``b_O``, and any output-norm bias) where the model has one. Under Gemma 2's output
    norms, heads and bias are mapped through that norm with its cached scale, so the
    components still sum to the stream.

    Returns ``(stack [component, (batch,) pos, d_model], labels)``. Pass a cache (with
    the sites above, and ``ln1_post.scale`` for Gemma 2 in head mode) or the tokens.
    """
    _check_decomposable(model, "decompose_resid")
    if by not in ("layer", "head"):
        raise ValueError(f"by must be 'layer' or 'head', got {by!r}")
    cfg = model.cfg
    tops = (
        ["embed"]
        + (["pos_embed"] if cfg.positional == "learned" else [])
        + (["token_type_embed"] if cfg.n_token_types else [])
    )
    names = tops + ["attn_out"] + (["mlp_out"] if cfg.has_mlp else [])
    if by == "head":
        names += ["attn.result"] + (["ln1_post.scale"] if cfg.post_attn_norm else [])
    cache, batched = _batched_cache(model, tokens, names, cache)
    parts, labels = [], []
    for name in tops:
        parts.append(_add_batch(cache[name], batched, False))
        labels.append(name)
    attn = model.blocks.attn
    attn_out = _add_batch(cache["attn_out"], batched, True)  # [layer, batch, pos, d_model]
    mlp_out = _add_batch(cache["mlp_out"], batched, True) if cfg.has_mlp else None
    if by == "head":
        result = _add_batch(cache["attn.result"], batched, True)  # [layer, batch, pos, head, d_model]
        post_scale = _add_batch(cache["ln1_post.scale"], batched, True) if cfg.post_attn_norm else None
    for layer in range(cfg.n_layers):
        if by == "layer":
            parts.append(attn_out[layer])
            labels.append(f"L{layer}_attn")
        else:
            heads = jnp.moveaxis(result[layer], -2, 0)  # [head, batch, pos, d_model]
            bias = None if attn.b_O is None else jnp.broadcast_to(attn.b_O[layer], heads.shape[1:])
            if cfg.post_attn_norm:
                post = jax.tree_util.tree_map(lambda a: a[layer], model.blocks.ln1_post)
                heads = apply_norm_linear(post, heads, post_scale[layer])
                if bias is not None:
                    bias = apply_norm_linear(post, bias, post_scale[layer])
                if post.b is not None:
                    bias = (0.0 if bias is None else bias) + jnp.broadcast_to(post.b, heads.shape[1:])
            parts.extend(list(heads))
            labels.extend(f"L{layer}H{h}" for h in range(cfg.n_heads))
            if bias is not None:
                parts.append(bias)
                labels.append(f"L{layer}_attn_bias")
        if mlp_out is not None:
            parts.append(mlp_out[layer])
            labels.append(f"L{layer}_mlp")
    dtype = jnp.result_type(*[p.dtype for p in parts])
    stack = jnp.stack([p.astype(dtype) for p in parts])
    return (stack if batched else stack[:, 0]), labels


def accumulated_resid(
    model: Transformer,
    tokens: Optional[Int[Array, "... pos"]] = None,
    cache=None,
    incl_mid: bool = False,
) -> tuple[Float[Array, "component ... pos d_model"], list[str]]:
    """The residual stream as it accumulates: before each layer (``L{l}_pre``), after
    attention (``L{l}_mid``, with ``incl_mid``) and after the last layer (``final``, the
    input of the final norm). Returns ``(stack [component, (batch,) pos, d_model],
    labels)``."""
    _check_decomposable(model, "accumulated_resid")
    cfg = model.cfg
    if incl_mid and cfg.parallel_attn_mlp:
        raise ValueError("incl_mid: parallel attention+MLP blocks have no residual stream between attention and MLP")
    names = ["resid_pre", "resid_post"] + (["resid_mid"] if incl_mid else [])
    cache, _ = _batched_cache(model, tokens, names, cache)
    parts, labels = [], []
    for layer in range(cfg.n_layers):
        parts.append(cache["resid_pre"][layer])
        labels.append(f"L{layer}_pre")
        if incl_mid:
            parts.append(cache["resid_mid"][layer])
            labels.append(f"L{layer}_mid")
    parts.append(cache["resid_post"][cfg.n_layers - 1])
    labels.append("final")
    return jnp.stack(parts), labels


def _pos_select(x, pos, batched):
    """Select ``pos`` (int or None) on ``[component, (batch,) pos, ...]``."""
    if pos is None:
        return x
    return x[:, :, pos] if batched else x[:, pos]


def _dims(batched: bool, pos) -> tuple:
    return (("batch",) if batched else ()) + (() if pos is not None else ("pos",))


def logit_lens(
    model: Transformer,
    tokens: Optional[Int[Array, "... pos"]] = None,
    cache=None,
    pos: Optional[int] = -1,
    incl_mid: bool = False,
) -> LabelledArray:
    """Logits read off the residual stream after each layer: each accumulated residual
    goes through the final norm (its own scale, recomputed) and the unembedding (and
    final soft-capping, if any), as if the remaining layers were skipped (nostalgebraist
    2020). The last row is the model's own output.

    Returns a `LabelledArray` ``[layer, (batch,) (pos,) d_vocab]`` (``pos=None`` keeps
    every position) with the layer axis labelled ``L0_pre ... final``.
    """
    if model.unembed is None:
        raise ValueError("logit_lens: this model has no unembedding (an encoder loaded without an LM head)")
    if cache is None:
        if tokens is None:
            raise ValueError("logit_lens: pass tokens or a cache")
        _, cache = model.run_with_cache(tokens, names=["resid_pre", "resid_post"] + (["resid_mid"] if incl_mid else []))
    stack, labels = accumulated_resid(model, cache=cache, incl_mid=incl_mid)
    stack = _pos_select(stack, pos, cache.batched)
    logits = model.to_logits(stack)
    dims = ("layer",) + _dims(cache.batched, pos) + ("d_vocab",)
    return LabelledArray(np.asarray(logits), dims, {"layer": labels}, "logit lens")


def token_ranks(logits: Float[Array, "... d_vocab"], token: Union[int, Int[Array, "..."]]) -> np.ndarray:
    """Rank of ``token`` in each logit vector (0 = top-1). ``token`` broadcasts against
    the leading axes (e.g. one answer per batch row)."""
    logits = np.asarray(logits)
    token = np.broadcast_to(np.asarray(token), logits.shape[:-1])
    target = np.take_along_axis(logits, token[..., None], axis=-1)
    return (logits > target).sum(-1)


def logit_direction(model: Transformer, answer, wrong=None) -> tuple[Float[Array, "... d_model"], Float[Array, "..."]]:
    """``W_U[:, answer] - W_U[:, wrong]`` (just ``W_U[:, answer]`` without ``wrong``) and
    the matching unembedding-bias difference. ``answer``/``wrong`` are token ids: ints,
    or arrays ``[batch]`` with one answer per prompt."""
    if model.unembed is None:
        raise ValueError("this model has no unembedding: no logit direction")
    W_U, b_U = model.unembed.W_U, model.unembed.b_U
    answer = jnp.asarray(answer)
    direction = W_U[:, answer].T
    bias = jnp.zeros(answer.shape, W_U.dtype) if b_U is None else b_U[answer]
    if wrong is not None:
        wrong = jnp.asarray(wrong)
        direction = direction - W_U[:, wrong].T
        if b_U is not None:
            bias = bias - b_U[wrong]
    return direction, bias


def direct_logit_attribution(
    model: Transformer,
    tokens: Int[Array, "... pos"],
    answer,
    wrong=None,
    pos: int = -1,
    by: str = "head",
    cache=None,
) -> LabelledArray:
    """Each component's direct effect on ``logit[answer] - logit[wrong]`` at ``pos``.

    The components of `decompose_resid` (``by="head"`` or ``"layer"``), each passed
    through the final norm's linear action with the cached scale and dotted with the
    logit direction, plus the constant terms ``ln_final_bias`` and ``unembed_bias`` where
    the model has them. They sum to the logit difference exactly (before final
    soft-capping). ``answer``/``wrong``: token ids, or ``[batch]`` arrays for batched
    tokens. Returns a `LabelledArray` ``[component, (batch)]``.
    """
    _check_decomposable(model, "direct_logit_attribution")
    cfg = model.cfg
    if cache is None:
        names = ["embed", "attn_out", "ln_final.scale"] + (["pos_embed"] if cfg.positional == "learned" else [])
        names += ["token_type_embed"] if cfg.n_token_types else []
        names += ["mlp_out"] if cfg.has_mlp else []
        names += (["attn.result"] + (["ln1_post.scale"] if cfg.post_attn_norm else [])) if by == "head" else []
        _, cache = model.run_with_cache(tokens, names=names)
    batched = cache.batched
    stack, labels = decompose_resid(model, cache=cache, by=by)
    stack = _pos_select(stack, pos, batched)  # [component, (batch,) d_model]
    scale = cache["ln_final.scale"]
    scale = scale[:, pos] if batched else scale[pos]
    normalized = apply_ln_to_stack(model, stack, scale)
    direction, bias = logit_direction(model, answer, wrong)
    if batched and direction.ndim == 1:
        direction, bias = direction[None], bias[None]
    dla = jnp.sum(normalized * direction.astype(jnp.float32), axis=-1)  # [component, (batch)]
    extra, extra_labels = [], []
    if model.ln_final.b is not None:
        extra.append(
            jnp.broadcast_to(direction.astype(jnp.float32) @ model.ln_final.b.astype(jnp.float32), dla.shape[1:])
        )
        extra_labels.append("ln_final_bias")
    if model.unembed.b_U is not None:
        extra.append(jnp.broadcast_to(bias.astype(jnp.float32), dla.shape[1:]))
        extra_labels.append("unembed_bias")
    if extra:
        dla = jnp.concatenate([dla, jnp.stack(extra)])
    dims = ("component",) + (("batch",) if batched else ())
    return LabelledArray(np.asarray(dla), dims, {"component": labels + extra_labels}, "direct logit attribution")


def head_logit_attribution(
    model: Transformer,
    tokens: Int[Array, "... pos"],
    answer,
    wrong=None,
    pos: int = -1,
    cache=None,
) -> LabelledArray:
    """Per-head direct logit attribution as a ``[layer, head]`` `LabelledArray`
    (averaged over the batch for batched tokens): the heatmap that finds e.g. IOI's
    name movers."""
    dla = direct_logit_attribution(model, tokens, answer, wrong, pos=pos, by="head", cache=cache)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    index = {label: i for i, label in enumerate(dla.labels["component"])}
    rows = [index[f"L{l}H{h}"] for l in range(L) for h in range(H)]
    values = np.asarray(dla)[rows]
    if values.ndim == 2:
        values = values.mean(-1)
    return LabelledArray(values.reshape(L, H), ("layer", "head"), name="head direct logit attribution")


def top_token_table(lens_logits: LabelledArray) -> tuple[Int[np.ndarray, "layer pos"], Float[np.ndarray, "layer pos"]]:
    """The top token id and its probability ``[layer, pos]`` from logit-lens logits
    ``[layer, pos, d_vocab]`` (`jaxinterp.analysis.lens.logit_lens` with ``pos=None``)."""
    logits = np.asarray(lens_logits, dtype=np.float64)
    if logits.ndim != 3:
        raise JaxinterpError(
            f"expected logit-lens logits [layer, pos, d_vocab], got axes {getattr(lens_logits, 'dims', logits.shape)}"
        )
    top = logits.argmax(-1)
    top_logit = np.take_along_axis(logits, top[..., None], -1)[..., 0]
    # p(top) = 1 / sum(exp(logits - top_logit)), stable without materialising softmax.
    prob = 1.0 / np.exp(logits - top_logit[..., None]).sum(-1)
    return top, prob
