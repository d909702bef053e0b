"""Steering vectors: directions in the residual stream that, added while the model runs,
move its behaviour.

- **ActAdd** (Turner et al. 2023, "Steering Language Models With Activation
  Engineering"): the activation difference of two prompts (``"Love"`` - ``"Hate"``) at
  one layer, position by position (the shorter prompt padded with spaces), added over
  the first positions of the target prompt with a coefficient: `actadd_vector`,
  `actadd`.
- **CAA** (Rimsky et al. 2024, "Steering Llama 2 via Contrastive Activation Addition"):
  the mean difference of the residual stream at the answer token over many A/B pairs,
  at every layer from one cached pass per batch: `ab_prompt`, `caa_vectors`, `caa`.
- **RepE control vectors** (Zou et al. 2023, "Representation Engineering"): last-token
  states of counterfactual pairs at every layer, their differences, the first principal
  component per layer with its sign chosen by projection; applied at every layer with a
  per-layer coefficient: `repe_directions`, `repe_control`.
- **Sweeps**: `steering_sweep` scores a steering vector at every (layer, coefficient)
  pair with a metric in one vmapped, compiled call.

Every steering edit is an ordinary intervention (`jaxinterp.Add` or `jaxinterp.Fn`), so
it composes with patching, caching and `jaxinterp.editing.common.generate`, and with a
coefficient of 0 it is exactly the identity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

import jaxinterp as ji
from jaxinterp.editing.common import EditingError, encode_batch, last_token_states

__all__ = [
    "ActAddVector",
    "ab_prompt",
    "actadd",
    "actadd_vector",
    "caa",
    "caa_vectors",
    "mean_activation_difference",
    "repe_control",
    "repe_directions",
    "steering_sweep",
]


# ----------------------------------------------------------------------------- mean difference


def mean_activation_difference(
    model, tokenizer, positive: Sequence[str], negative: Sequence[str], layer: int, site: str = "resid_pre"
) -> Float[np.ndarray, " d_model"]:
    """Mean ``site`` activation at ``layer`` over the ``positive`` prompts minus that over the
    ``negative`` ones, each prompt averaged over its positions after the first (the first
    position's residual is far larger in many models and would dominate). This is
    `jaxinterp.editing.steering.steering_vector`."""
    name = f"blocks.{int(layer)}.hook_{site}"

    def mean_act(texts, what):
        if isinstance(texts, str) or len(texts) == 0:
            raise EditingError(f"{what} must be a non-empty list of prompts")
        acts = []
        for text in texts:
            tokens = jnp.asarray(tokenizer.to_tokens(text))
            if tokens.shape[-1] < 2:
                raise EditingError(
                    f"steering prompts need at least 2 tokens (the first is left out); {text!r} has {tokens.shape[-1]}"
                )
            acts.append(np.asarray(model.run_with_cache(tokens, names=[name])[1][name])[1:].mean(0))
        return np.mean(acts, 0)

    return mean_act(positive, "positive") - mean_act(negative, "negative")


# ----------------------------------------------------------------------------- ActAdd


class ActAddVector(eqx.Module):
    """An ActAdd steering vector: ``delta [n_pos, d_model]`` = activation of the positive
    prompt minus that of the negative one at ``layer`` of ``site``, position by position."""

    delta: Float[Array, "n_pos d_model"]
    layer: int = eqx.field(static=True)
    site: str = eqx.field(static=True, default="resid_pre")

    def __check_init__(self):
        if self.delta.ndim != 2:
            raise EditingError(f"ActAddVector.delta must be [n_pos, d_model], got shape {self.delta.shape}")


def _add_prefix(x: Float[Array, "pos d_model"], args) -> Float[Array, "pos d_model"]:
    """``x`` with ``coefficient * delta`` added over its first ``len(delta)`` positions
    (clipped to ``x``'s length); a module-level function so `Fn` stays hashable."""
    delta, coefficient = args
    n = min(delta.shape[0], x.shape[0])
    return x.at[:n].add((coefficient * delta[:n]).astype(x.dtype))


def actadd_vector(
    model,
    tokenizer,
    positive: str,
    negative: str,
    layer: int,
    site: str = "resid_pre",
    pad: str = " ",
    prepend_bos: bool | None = None,
) -> ActAddVector:
    """ActAdd's steering vector (Turner et al. 2023): run ``positive`` and ``negative``
    (e.g. ``"Love"`` and ``"Hate"``), take ``site`` at ``layer`` for each, and subtract
    position by position. The shorter prompt is right-padded with the single token ``pad``
    (a space, as in the paper) so both have the same length. ``prepend_bos`` as in
    `jaxinterp.Tokenizer.encode`: the paper's GPT-2 prompts start with BOS, so position 0
    is the same in both and the vector is zero there; for a model whose tokenizer adds no
    BOS (SmolLM2), pass ``prepend_bos=True`` and tokenise the target prompts the same way,
    or position 0 (an attention sink with a very large norm) dominates the difference.
    """
    a, b = list(tokenizer.encode(positive, prepend_bos)), list(tokenizer.encode(negative, prepend_bos))
    if not a or not b:
        raise EditingError("actadd_vector: positive and negative prompts must encode to at least one token")
    n = max(len(a), len(b))
    if len(a) != len(b):
        try:
            pad_id = tokenizer.to_single_token(pad)
        except ValueError as e:
            raise EditingError(f"actadd_vector: pad={pad!r} must be a single token ({e})") from None
        a, b = a + [pad_id] * (n - len(a)), b + [pad_id] * (n - len(b))
    name = f"blocks.{int(layer)}.hook_{site}"
    _, cache = model.run_with_cache(jnp.asarray(np.asarray([a, b], np.int32)), names=[name])
    acts = cache[name]  # [2, n_pos, d_model]
    return ActAddVector(acts[0] - acts[1], int(layer), site)


def actadd(vector: ActAddVector, coefficient: float | Array) -> ji.Fn:
    """The ActAdd intervention: ``coefficient * vector.delta`` added to ``vector.site`` at
    ``vector.layer`` over the first ``n_pos`` positions of whatever sequence runs (a
    prompt, or a generation buffer). ``coefficient`` may be traced (sweeps)."""
    return ji.Fn(vector.site, _add_prefix, (vector.delta, jnp.asarray(coefficient, jnp.float32)), layer=vector.layer)


# ----------------------------------------------------------------------------- CAA


def ab_prompt(question: str, choice_a: str, choice_b: str, answer: str) -> str:
    """A Rimsky et al. A/B prompt ending at the answer letter: the steering activations are
    read at that last token. ``answer`` is ``"A"`` or ``"B"``."""
    if answer not in ("A", "B"):
        raise EditingError(f"answer must be 'A' or 'B', got {answer!r}")
    return f"{question}\n\nChoices:\n(A) {choice_a}\n(B) {choice_b}\n\nAnswer: ({answer}"


def caa_vectors(
    model, tokenizer, positive: Sequence[str], negative: Sequence[str], site: str = "resid_pre", batch_size: int = 16
) -> Float[np.ndarray, "layer d_model"]:
    """Contrastive activation addition vectors at every layer (Rimsky et al. 2024): the
    mean over pairs of ``site`` at the last token of ``positive[i]`` minus that of
    ``negative[i]`` (the answer-letter token of an `ab_prompt`). All layers come from
    one cached pass per batch."""
    if len(positive) != len(negative):
        raise EditingError(f"caa_vectors needs paired prompts: {len(positive)} positive vs {len(negative)} negative")
    tp, lp = encode_batch(tokenizer, list(positive), "positive")
    tn, ln = encode_batch(tokenizer, list(negative), "negative")
    pos = last_token_states(model, tp, lp, site, (-1,), batch_size)[:, 0]
    neg = last_token_states(model, tn, ln, site, (-1,), batch_size)[:, 0]
    return (pos - neg).mean(0)


def caa(
    vectors: Float[Array, "layer d_model"],
    layer: int | Array,
    coefficient: float | Array,
    site: str = "resid_pre",
    pos=None,
) -> ji.Add:
    """Add ``coefficient * vectors[layer]`` to ``site`` at ``layer`` (at every position,
    or at ``pos``), as CAA does for all tokens after the prompt and during generation."""
    vectors = jnp.asarray(vectors)
    return ji.Add(site, jnp.asarray(coefficient, vectors.dtype) * vectors[layer], layer=layer, pos=pos)


# ----------------------------------------------------------------------------- RepE


def repe_directions(
    model, tokenizer, positive: Sequence[str], negative: Sequence[str], site: str = "resid_pre", batch_size: int = 16
) -> Float[np.ndarray, "layer d_model"]:
    """RepE reading vectors (Zou et al. 2023) at every layer: unit first principal
    components of the paired differences of last-token states.

    For each pair ``i`` and layer ``l``: ``d_il = h_l(positive[i]) - h_l(negative[i])``
    at the last token. Per layer the differences are centred and the top right-singular
    vector taken; its sign is chosen so that the mean projection of the differences is
    positive, i.e. the direction points from ``negative`` towards ``positive``.
    """
    if len(positive) != len(negative) or len(positive) < 2:
        raise EditingError(f"repe_directions needs at least 2 paired prompts, got {len(positive)} and {len(negative)}")
    tp, lp = encode_batch(tokenizer, list(positive), "positive")
    tn, ln = encode_batch(tokenizer, list(negative), "negative")
    diffs = (
        last_token_states(model, tp, lp, site, (-1,), batch_size)
        - last_token_states(model, tn, ln, site, (-1,), batch_size)
    )[:, 0]
    return np.asarray(first_components(jnp.asarray(diffs)))


@jax.jit
def first_components(diffs: Float[Array, "pair layer d_model"]) -> Float[Array, "layer d_model"]:
    """Per layer, the unit top principal component of ``diffs`` (centred over pairs), with
    its sign set so that the uncentred differences project positively on average."""

    def one(d):  # [pair, d_model]
        _, _, vt = jnp.linalg.svd(d - d.mean(0), full_matrices=False)
        v = vt[0]
        return v * jnp.where(jnp.mean(d @ v) < 0, -1.0, 1.0)

    return jax.vmap(one, in_axes=1)(diffs)


def repe_control(
    directions: Float[Array, "layer d_model"], coefficients: Float[Array, " layer"], site: str = "resid_pre"
) -> ji.Add:
    """One intervention adding ``coefficients[l] * directions[l]`` to ``site`` at every
    layer ``l`` and every position (a zero coefficient leaves that layer untouched)."""
    directions = jnp.asarray(directions)
    coefficients = jnp.asarray(coefficients, directions.dtype)
    if coefficients.shape != directions.shape[:1]:
        raise EditingError(f"coefficients must be [layer] = {directions.shape[:1]}, got {coefficients.shape}")
    # [layer, 1, d_model]: stacked over layers, broadcast over positions.
    return ji.Add(site, (coefficients[:, None] * directions)[:, None, :])


# ----------------------------------------------------------------------------- sweep


@eqx.filter_jit
def _sweep(model, tokens, vectors, layers, coefficients, metric, site, pos):
    def one(layer, c):
        delta = c * vectors[layer]
        logits, _ = model.forward(tokens, [ji.Add(site, delta, layer=layer, pos=pos)])
        return metric(logits)

    return jax.vmap(lambda l: jax.vmap(lambda c: one(l, c))(coefficients))(layers)


def steering_sweep(
    model,
    tokens: Int[Array, " pos"],
    vectors: Float[Array, "layer d_model"],
    metric: Callable[[Float[Array, "pos d_vocab"]], Float[Array, ""]],
    coefficients: Float[Array, " coefficient"],
    layers: Int[Array, " n_layers"] | None = None,
    site: str = "resid_pre",
    pos=None,
) -> Float[np.ndarray, "n_layers coefficient"]:
    """``metric(logits)`` with ``coefficients[j] * vectors[layers[i]]`` added to ``site`` at
    layer ``layers[i]`` (every position, or ``pos``): ``[n_layers, coefficient]``, every
    pair in one vmapped program that compiles once per shape.

    ``vectors``: one vector per layer (``[layer, d_model]``, as `caa_vectors` returns), or a
    single ``[d_model]`` vector used at every layer. ``metric``: a function of one
    example's logits ``[pos, d_vocab]``, e.g. from `jaxinterp.core.metrics` (an Equinox module
    is passed as data, so another metric of the same kind reuses the compiled program).
    """
    vectors = jnp.asarray(vectors, jnp.float32)
    n_layers = model.cfg.n_layers
    if vectors.ndim == 1:
        vectors = jnp.broadcast_to(vectors, (n_layers,) + vectors.shape)
    if vectors.shape != (n_layers, model.cfg.d_model):
        raise EditingError(
            f"vectors must be [d_model] or [layer, d_model] = ({n_layers}, {model.cfg.d_model}), got {vectors.shape}"
        )
    layers = jnp.arange(n_layers) if layers is None else jnp.asarray(layers, jnp.int32).reshape(-1)
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 1:
        raise EditingError(f"steering_sweep takes one prompt's tokens [pos], got shape {tokens.shape}")
    out = _sweep(model, tokens, vectors, layers, jnp.asarray(coefficients, jnp.float32).reshape(-1), metric, site, pos)
    return np.asarray(out)


def steering_vector(
    model, tokenizer, positive: Sequence[str], negative: Sequence[str], layer: int
) -> Float[np.ndarray, " d_model"]:
    """The mean ``resid_pre`` at ``layer`` over the ``positive`` prompts minus that over the
    ``negative`` ones ("activation addition", Turner et al. 2023; mean difference as in
    Rimsky et al. 2024). Each prompt is averaged over its positions after the first:
    the first position's residual is far larger in many models and would dominate.
    (`mean_activation_difference` at ``resid_pre``; the original entry point.)"""
    return mean_activation_difference(model, tokenizer, positive, negative, layer, "resid_pre")
