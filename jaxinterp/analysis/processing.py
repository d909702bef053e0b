"""Weight processing: pure ``model -> model`` rewrites that keep what the model computes.

Interpretability reads weights, and a checkpoint's parameterisation hides structure that
the computation does not depend on: norm weights scale every input direction of the
next layer, writing weights carry a mean component that every LayerNorm discards, value
biases are a constant that attention cannot move, and a head's ``W_Q``/``W_K`` (and
``W_V``/``W_O``) are one arbitrary factorisation of the matrices that matter. These
functions remove that freedom:

=================================  =============================================  ===================
function                           what changes                                   output
=================================  =============================================  ===================
`fold_layer_norm`                  norm weights (and LN bias) move into the       logits equal
                                   linear layers that read the norm
`center_writing_weights`           every weight writing to the residual has zero  logits equal
                                   mean over d_model (LayerNorm models only)
`center_unembed`                   ``W_U``, ``b_U`` have zero mean over the vocab  logits + per-position constant
`fold_value_biases`                ``b_V`` moves into ``b_O``                      logits equal
`refactor_factored_attn_matrices`  W_Q/W_K and W_V/W_O re-factored by SVD          logits equal
`process_weights`                  all of the above that apply to the family
=================================  =============================================  ===================

Each is a pure function built on ``eqx.tree_at``: the input model is untouched, and the
result is an ordinary `Transformer` (run it, cache it, patch it). Models whose config
lacked a bias that a fold must create (GPT-2 has no ``b_U``, but its final LayerNorm has a
bias) get one, and the config is updated to say so.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax.numpy as jnp

from ..core.errors import ProcessingError
from ..model import MLP, Transformer
from ..model.norms import Norm
from .factored_matrix import FactoredMatrix

__all__ = [
    "ProcessingError",
    "fold_layer_norm",
    "center_writing_weights",
    "center_unembed",
    "fold_value_biases",
    "refactor_factored_attn_matrices",
    "process_weights",
]


def _is_none(x) -> bool:
    return x is None


def _set(model, where, value):
    """``eqx.tree_at`` that may also replace a ``None`` field (a bias the model lacked)."""
    return eqx.tree_at(where, model, value, is_leaf=_is_none)


def _with_cfg(model: Transformer, **changes) -> Transformer:
    """The same model with config fields changed (the config is static, not a leaf)."""
    changes = {k: v for k, v in changes.items() if getattr(model.cfg, k) != v}
    return dataclasses.replace(model, cfg=model.cfg.replace(**changes)) if changes else model


def _effective_weight(norm: Norm):
    """What the norm multiplies by: ``offset + w`` (Gemma stores ``w`` with offset 1)."""
    return norm.w.astype(jnp.float32) + norm.weight_offset


def _identity_norm(norm: Norm) -> Norm:
    """Norm parameters that compute the bare normalisation: effective weight 1, bias 0."""
    norm = eqx.tree_at(lambda n: n.w, norm, jnp.full_like(norm.w, 1.0 - norm.weight_offset))
    if norm.b is not None:
        norm = eqx.tree_at(lambda n: n.b, norm, jnp.zeros_like(norm.b))
    return norm


def _fold_into(w, b, W, bias, center: bool, d_model_axis: int):
    """Fold a norm's ``w`` (``[..., d_model]``) and ``b`` into a linear map ``W`` that
    reads it along ``d_model_axis``; return the new ``W`` and bias (``None`` if neither
    existed). ``w`` and ``b`` carry only the leading axes that ``W`` shares with them."""
    dtype = W.dtype
    W32 = W.astype(jnp.float32)
    nd = W.ndim
    axis = d_model_axis % nd
    # Put w's d_model axis at `axis` and broadcast over W's other axes.
    w_b = jnp.moveaxis(w.reshape(w.shape + (1,) * (nd - w.ndim)), w.ndim - 1, axis)
    new_bias = None
    if b is not None:
        # (x*w + b) @ W = x @ (w*W) + b @ W: contract b against the d_model axis.
        b_b = jnp.moveaxis(b.astype(jnp.float32).reshape(b.shape + (1,) * (nd - b.ndim)), b.ndim - 1, axis)
        new_bias = jnp.sum(b_b * W32, axis=axis)
        if bias is not None:
            new_bias = new_bias + bias.astype(jnp.float32)
    elif bias is not None:
        new_bias = bias.astype(jnp.float32)
    W32 = W32 * w_b
    if center:
        # A LayerNorm's output (before w, b) has zero mean over d_model, so the mean of
        # W over that axis multiplies zero: removing it changes nothing.
        W32 = W32 - W32.mean(axis=axis, keepdims=True)
    return W32.astype(dtype), None if new_bias is None else new_bias.astype(dtype)


def fold_layer_norm(model: Transformer, center_reading_weights: bool = True) -> Transformer:
    """Fold every pre-norm's weight (and LayerNorm bias) into the layers that read it.

    ``ln1`` folds into ``W_Q``/``W_K``/``W_V`` (bias into ``b_Q``/``b_K``/``b_V``), ``ln2``
    into the MLP's ``W_in``/``W_gate`` (and a MoE router), ``ln_final`` into ``W_U``
    (bias into ``b_U``). The norms are left computing the bare normalisation: ``w = 1``
    (``w = 0`` for Gemma's ``1 + w`` norms), ``b = 0``. With ``center_reading_weights``
    (LayerNorm models only), the folded matrices also lose their mean over ``d_model``,
    which multiplies the (zero) mean of a normalised vector.

    Gemma 2's output norms (``ln1_post``/``ln2_post``) are followed by a residual
    addition, not a linear layer, so they stay as they are. Post-norm models (BERT)
    are refused: there the normalised vector *is* the residual stream, read by the
    next layer and by the skip connection alike.
    """
    cfg = model.cfg
    if cfg.post_norm:
        raise ProcessingError(
            "fold_layer_norm: post-norm models (BERT) normalise the residual stream itself, which both the next "
            "layer and the skip connection read, so the norm weights have no single linear layer to fold into"
        )
    if not cfg.pre_norm:
        raise ProcessingError(
            f"fold_layer_norm: this {cfg.family} model has no pre-norms (pre_norm=False: attention and MLP read the "
            "raw residual stream), so there is no ln1/ln2 weight to fold; only ln_final would remain"
        )
    center = center_reading_weights and cfg.normalization == "layernorm"
    blocks = model.blocks
    attn = blocks.attn

    # ln1 -> attention. Weights are [L, head, d_model, d_head]; ln1.w is [L, d_model].
    w1 = _effective_weight(blocks.ln1)[:, None, :]
    b1 = None if blocks.ln1.b is None else blocks.ln1.b[:, None, :]
    new = {}
    for name in ("Q", "K", "V"):
        new[f"W_{name}"], new[f"b_{name}"] = _fold_into(
            w1, b1, getattr(attn, f"W_{name}"), getattr(attn, f"b_{name}"), center, -2
        )
    for field, value in new.items():
        model = _set(model, lambda m, f=field: getattr(m.blocks.attn, f), value)
    model = eqx.tree_at(lambda m: m.blocks.ln1, model, _identity_norm(blocks.ln1))
    created_qkv_bias = b1 is not None and attn.b_Q is None

    created_mlp_bias = False
    if blocks.mlp is not None:
        w2 = _effective_weight(blocks.ln2)
        b2 = blocks.ln2.b
        mlp = blocks.mlp
        if cfg.is_moe:
            if b2 is not None:
                raise ProcessingError("fold_layer_norm: a MoE router has no bias to take the norm's bias")
            # Router [L, d_model, expert]; experts [L, expert, d_model, d_mlp].
            router, _ = _fold_into(w2, None, mlp.W_router, None, center, -2)
            model = eqx.tree_at(lambda m: m.blocks.mlp.W_router, model, router)
            for field in ("W_in", "W_gate"):
                W, _ = _fold_into(w2[:, None, :], None, getattr(mlp, field), None, center, -2)
                model = eqx.tree_at(lambda m, f=field: getattr(m.blocks.mlp, f), model, W)
        else:
            # W_in/W_gate [L, d_model, d_mlp]; ln2.w [L, d_model].
            W_in, b_in = _fold_into(w2, b2, mlp.W_in, mlp.b_in, center, -2)
            model = _set(model, lambda m: m.blocks.mlp.W_in, W_in)
            model = _set(model, lambda m: m.blocks.mlp.b_in, b_in)
            if mlp.W_gate is not None:
                W_gate, b_gate = _fold_into(w2, b2, mlp.W_gate, mlp.b_gate, center, -2)
                model = _set(model, lambda m: m.blocks.mlp.W_gate, W_gate)
                model = _set(model, lambda m: m.blocks.mlp.b_gate, b_gate)
            created_mlp_bias = b2 is not None and mlp.b_in is None
        model = eqx.tree_at(lambda m: m.blocks.ln2, model, _identity_norm(blocks.ln2))

    created_unembed_bias = False
    if model.ln_final is not None and model.unembed is not None:
        lnf = model.ln_final
        W_U, b_U = _fold_into(_effective_weight(lnf), lnf.b, model.unembed.W_U, model.unembed.b_U, center, 0)
        created_unembed_bias = b_U is not None and model.unembed.b_U is None
        model = _set(model, lambda m: m.unembed.W_U, W_U)
        model = _set(model, lambda m: m.unembed.b_U, b_U)
        model = eqx.tree_at(lambda m: m.ln_final, model, _identity_norm(lnf))
    elif model.ln_final is not None:
        raise ProcessingError("fold_layer_norm: this model has a final norm but no unembedding to fold it into")

    changes = {}
    if created_qkv_bias:
        changes["qkv_bias"] = True
    if created_mlp_bias:
        changes["mlp_bias"] = True
    if created_unembed_bias:
        changes["unembed_bias"] = True
    return _with_cfg(model, **changes)


def center_writing_weights(model: Transformer) -> Transformer:
    """Subtract, from every weight and bias that writes to the residual stream, its mean
    over ``d_model``: ``W_E``, ``W_pos``, token-type embeddings, ``W_O``/``b_O`` and
    ``W_out``/``b_out``.

    Valid only when everything that reads the residual stream is a LayerNorm: a
    LayerNorm subtracts the mean of its input first, so a write along the all-ones
    direction is invisible to every reader. The residual stream itself changes (it
    loses its mean), the logits do not. RMSNorm does not centre: the mean component
    contributes to the RMS that it divides by, so removing it would change every
    output. Such models are refused.
    """
    cfg = model.cfg
    if cfg.normalization != "layernorm":
        raise ProcessingError(
            f"center_writing_weights: valid only for LayerNorm models; this {cfg.family} model uses {cfg.normalization}, "
            "which divides by the root mean square including the mean component, so removing it changes the output"
        )
    if cfg.post_attn_norm or cfg.post_mlp_norm:
        raise ProcessingError(
            "center_writing_weights: output norms (Gemma 2 style) read the attention/MLP output directly"
        )

    def centered(x):
        return None if x is None else x - x.mean(axis=-1, keepdims=True)

    model = eqx.tree_at(lambda m: m.embed.W_E, model, centered(model.embed.W_E))
    if model.pos_embed is not None:
        model = eqx.tree_at(lambda m: m.pos_embed.W_pos, model, centered(model.pos_embed.W_pos))
    if model.token_type_embed is not None:
        tt = model.token_type_embed
        model = eqx.tree_at(lambda m: m.token_type_embed.W_token_type, model, centered(tt.W_token_type))
    attn = model.blocks.attn
    model = eqx.tree_at(lambda m: m.blocks.attn.W_O, model, centered(attn.W_O))
    if attn.b_O is not None:
        model = eqx.tree_at(lambda m: m.blocks.attn.b_O, model, centered(attn.b_O))
    mlp = model.blocks.mlp
    if mlp is not None:
        model = eqx.tree_at(lambda m: m.blocks.mlp.W_out, model, centered(mlp.W_out))
        if isinstance(mlp, MLP) and mlp.b_out is not None:  # MoE experts have no output bias
            model = eqx.tree_at(lambda m: m.blocks.mlp.b_out, model, centered(mlp.b_out))
    return model


def center_unembed(model: Transformer) -> Transformer:
    """Subtract the mean over the vocabulary from ``W_U`` (and ``b_U``).

    Every position's logits shift by one constant (the mean logit), which softmax
    ignores, so probabilities are unchanged while logits become comparable across
    positions and layers. Refused with final-logit soft-capping (Gemma 2), where
    ``tanh`` does not commute with the shift.
    """
    if model.unembed is None:
        raise ProcessingError("center_unembed: this model has no unembedding (an encoder loaded without an LM head)")
    if model.cfg.final_logit_softcap is not None:
        raise ProcessingError(
            "center_unembed: final-logit soft-capping (tanh) is not shift invariant, so centering would change the "
            "probabilities of this model"
        )
    W_U = model.unembed.W_U
    model = eqx.tree_at(lambda m: m.unembed.W_U, model, W_U - W_U.mean(axis=-1, keepdims=True))
    if model.unembed.b_U is not None:
        b_U = model.unembed.b_U
        model = eqx.tree_at(lambda m: m.unembed.b_U, model, b_U - b_U.mean())
    return model


def fold_value_biases(model: Transformer) -> Transformer:
    """Move ``b_V`` into ``b_O`` and set ``b_V = 0``.

    Each attention pattern row sums to one, so the value bias of a head reaches its
    output unchanged as ``b_V @ W_O`` at every position, whatever the pattern: a
    constant, the same as an output bias. With GQA a key/value head's bias reaches every
    query head that reads it. A model with no value bias is returned unchanged.
    """
    attn = model.blocks.attn
    if attn.b_V is None:
        return model
    cfg = model.cfg
    group = cfg.n_heads // cfg.n_kv_heads
    b_V = jnp.repeat(attn.b_V, group, axis=1)  # [L, head, d_head]
    extra = jnp.einsum("lhd,lhdm->lm", b_V.astype(jnp.float32), attn.W_O.astype(jnp.float32))
    b_O = extra if attn.b_O is None else attn.b_O.astype(jnp.float32) + extra
    model = _set(model, lambda m: m.blocks.attn.b_O, b_O.astype(attn.W_O.dtype))
    model = eqx.tree_at(lambda m: m.blocks.attn.b_V, model, jnp.zeros_like(attn.b_V))
    return _with_cfg(model, o_bias=True)


def _with_bias_row(W, b):
    """``[..., d_model, d_head]`` and ``[..., d_head]`` -> ``[..., d_model + 1, d_head]``:
    the bias as the weight of a constant input 1, so it is refactored along with ``W``."""
    b = jnp.zeros(W.shape[:-2] + W.shape[-1:], W.dtype) if b is None else b
    return jnp.concatenate([W, b[..., None, :]], axis=-2)


def refactor_factored_attn_matrices(model: Transformer, qk: bool = True, ov: bool = True) -> Transformer:
    """Re-factor each head's ``W_Q W_K^T`` and ``W_V W_O`` by their SVDs.

    Only the products ``W_QK = W_Q W_K^T`` and ``W_OV = W_V W_O`` determine what a head
    does; the factors are one arbitrary choice among many. With the SVD
    ``W_QK = U S V^T``, set ``W_Q = U sqrt(S)``, ``W_K = V sqrt(S)`` (matching column
    norms); with ``W_OV = U S V^T``, set ``W_V = U S``, ``W_O = V^T`` (``W_O`` an
    isometry). Biases ride along as an extra input row (a constant input 1), so every
    product with a bias is preserved too.

    Refused where it would change the model: rotary models for ``qk`` (the rotation
    sits between ``W_Q`` and ``W_K^T`` and commutes only with rotations within each
    frequency pair, not with an arbitrary change of ``d_head`` basis; pass ``qk=False``
    to refactor OV only), and grouped-query attention (one ``W_K``/``W_V`` is shared by
    several query heads, so it cannot be refactored per head).
    """
    cfg = model.cfg
    if cfg.n_kv_heads != cfg.n_heads:
        raise ProcessingError(
            f"refactor_factored_attn_matrices: with grouped-query attention ({cfg.n_heads} query heads share "
            f"{cfg.n_kv_heads} key/value heads) W_K and W_V cannot be refactored per query head"
        )
    if qk and cfg.positional == "rotary":
        raise ProcessingError(
            "refactor_factored_attn_matrices: rotary embeddings rotate q and k between W_Q and W_K^T, and the "
            "rotation does not commute with a change of d_head basis; pass qk=False to refactor only W_V W_O"
        )
    attn = model.blocks.attn
    d_model = cfg.d_model
    if qk:
        Q_eff = _with_bias_row(attn.W_Q.astype(jnp.float32), attn.b_Q)
        K_eff = _with_bias_row(attn.W_K.astype(jnp.float32), attn.b_K)
        U, S, V = FactoredMatrix(Q_eff, jnp.swapaxes(K_eff, -1, -2)).svd()
        Q_new, K_new = U * jnp.sqrt(S)[..., None, :], V * jnp.sqrt(S)[..., None, :]
        model = eqx.tree_at(lambda m: m.blocks.attn.W_Q, model, Q_new[..., :d_model, :].astype(attn.W_Q.dtype))
        model = eqx.tree_at(lambda m: m.blocks.attn.W_K, model, K_new[..., :d_model, :].astype(attn.W_K.dtype))
        if attn.b_Q is not None:
            model = eqx.tree_at(lambda m: m.blocks.attn.b_Q, model, Q_new[..., d_model, :].astype(attn.b_Q.dtype))
        if attn.b_K is not None:
            model = eqx.tree_at(lambda m: m.blocks.attn.b_K, model, K_new[..., d_model, :].astype(attn.b_K.dtype))
    if ov:
        V_eff = _with_bias_row(attn.W_V.astype(jnp.float32), attn.b_V)
        U, S, V = FactoredMatrix(V_eff, attn.W_O.astype(jnp.float32)).svd()
        V_new, O_new = U * S[..., None, :], jnp.swapaxes(V, -1, -2)
        model = eqx.tree_at(lambda m: m.blocks.attn.W_V, model, V_new[..., :d_model, :].astype(attn.W_V.dtype))
        model = eqx.tree_at(lambda m: m.blocks.attn.W_O, model, O_new.astype(attn.W_O.dtype))
        if attn.b_V is not None:
            model = eqx.tree_at(lambda m: m.blocks.attn.b_V, model, V_new[..., d_model, :].astype(attn.b_V.dtype))
    return model


def process_weights(
    model: Transformer,
    fold_ln: bool = True,
    center_writing: bool = True,
    center_unembedding: bool = True,
    fold_value_bias: bool = True,
) -> Transformer:
    """The TransformerLens-style default processing, restricted to the steps that are
    exact for this architecture: each requested step runs only where it preserves the
    output (e.g. writing weights are centred only for LayerNorm models, the unembedding
    only without final soft-capping; LN is not folded for post-norm models)."""
    cfg = model.cfg
    if fold_value_bias:
        model = fold_value_biases(model)
    if fold_ln and not cfg.post_norm:
        model = fold_layer_norm(model)
    if center_writing and cfg.normalization == "layernorm" and not (cfg.post_attn_norm or cfg.post_mlp_norm):
        model = center_writing_weights(model)
    if center_unembedding and model.unembed is not None and cfg.final_logit_softcap is None:
        model = center_unembed(model)
    return model
