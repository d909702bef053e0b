"""Universal neurons (Gurnee et al. 2024, "Universal Neurons in GPT2 Language Models").

Train several models that differ only in their seed, run them on the same text and
correlate their MLP neurons: a neuron is *universal* if some neuron of another seed
computes (nearly) the same function of the input, i.e. their activations over the same
tokens correlate highly (the paper's threshold: 0.5).

- `mlp_activations`: ``[model, neuron, sample]`` post-activations (``mlp.post``) of every
  layer's neurons (neuron ``layer * d_mlp + i``) on the same tokens, for a list of models;
- `max_correlations`: for each model ``a``, other model ``b`` and neuron ``i`` of ``a``:
  ``max_j corr(act_a[i], act_b[j])`` (Pearson over samples): ``[model, model, neuron]``;
  `summarise` reduces it to each neuron's max over all other seeds and its mean over them;
- `random_rotation`: the baseline: each model's neuron basis rotated by a random orthogonal
  matrix per layer. If the neuron basis is privileged (the ReLU makes it so), neurons are
  more universal than random directions of the same activation space;
- `neuron_properties`: activation frequency and the vocabulary effect ``W_out[i] W_U``
  (its kurtosis and skew: prediction / suppression neurons are heavy-tailed) per neuron.

Correlations cost ``[neuron, sample] x [sample, neuron]`` matmuls per pair of models.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from jaxinterp import Transformer
from jaxinterp.core.errors import JaxinterpError

__all__ = [
    "UniversalNeuronsError",
    "mlp_activations",
    "correlation_matrix",
    "max_correlations",
    "random_rotation",
    "NeuronSummary",
    "summarise",
    "NeuronProperties",
    "neuron_properties",
]


class UniversalNeuronsError(JaxinterpError):
    """Bad arguments for the universal-neurons analysis (shapes, too few models)."""


@eqx.filter_jit
def _post(model: Transformer, tokens: Int[Array, "batch pos"]) -> Float[Array, "batch pos layer d_mlp"]:
    def one(t):
        _, cache = model.forward(t, None, frozenset({"mlp.post"}))
        return jnp.moveaxis(cache["mlp.post"], 0, 1)  # [pos, layer, d_mlp]

    return jax.vmap(one)(tokens)


def mlp_activations(
    models: Sequence[Transformer], tokens: Int[np.ndarray, "batch pos"], batch_size: int = 32
) -> Float[np.ndarray, "model neuron sample"]:
    """MLP post-activations of every model on ``tokens``: ``[model, n_layers * d_mlp,
    batch * pos]`` (float32), neuron ``layer * d_mlp + i``, sample ``b * pos + p``."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise UniversalNeuronsError(f"tokens must be [batch, pos], got shape {tokens.shape}")
    if not models or any(not m.cfg.has_mlp for m in models):
        raise UniversalNeuronsError("mlp_activations needs at least one model, every one with MLP layers")
    out = []
    for model in models:
        chunks = [
            np.asarray(_post(model, jnp.asarray(tokens[i : i + batch_size]))) for i in range(0, len(tokens), batch_size)
        ]
        acts = np.concatenate(chunks)  # [batch, pos, layer, d_mlp]
        out.append(acts.reshape(-1, acts.shape[2] * acts.shape[3]).T)
    return np.stack(out).astype(np.float32)


def _standardise(x: Float[Array, "neuron sample"]) -> Float[Array, "neuron sample"]:
    x = x - x.mean(-1, keepdims=True)
    norm = jnp.sqrt((x**2).sum(-1, keepdims=True))
    # A neuron constant on these samples (dead) correlates 0 with everything.
    return jnp.where(norm > 1e-8, x / jnp.maximum(norm, 1e-8), 0.0)


@jax.jit
def correlation_matrix(
    a: Float[Array, "neuron_a sample"], b: Float[Array, "neuron_b sample"]
) -> Float[Array, "neuron_a neuron_b"]:
    """Pearson correlation of every row of ``a`` with every row of ``b`` over samples (0
    for rows that are constant)."""
    return _standardise(a) @ _standardise(b).T


def max_correlations(acts: Float[np.ndarray, "model neuron sample"]) -> Float[np.ndarray, "model model neuron"]:
    """``out[a, b, i] = max_j corr(acts[a, i], acts[b, j])``; the diagonal ``a == b`` is
    NaN (a neuron trivially matches itself)."""
    acts = np.asarray(acts, np.float32)
    if acts.ndim != 3 or acts.shape[0] < 2:
        raise UniversalNeuronsError(f"acts must be [model, neuron, sample] with at least 2 models, got {acts.shape}")
    n_models, n_neurons = acts.shape[:2]
    out = np.full((n_models, n_models, n_neurons), np.nan, np.float32)
    for a in range(n_models):
        for b in range(n_models):
            if a != b:
                out[a, b] = np.asarray(correlation_matrix(jnp.asarray(acts[a]), jnp.asarray(acts[b])).max(-1))
    return out


def random_rotation(
    acts: Float[np.ndarray, "model neuron sample"], n_layers: int, seed: int = 0
) -> Float[np.ndarray, "model neuron sample"]:
    """The random-rotation baseline: each model's ``d_mlp``-dimensional activation vector
    of each layer expressed in a basis drawn uniformly from the orthogonal group (QR of a
    Gaussian matrix, signs fixed), independently per model and layer."""
    acts = np.asarray(acts, np.float32)
    n_models, n_neurons, n_samples = acts.shape
    if n_neurons % n_layers:
        raise UniversalNeuronsError(f"{n_neurons} neurons do not split into {n_layers} layers")
    d_mlp = n_neurons // n_layers
    rng = np.random.default_rng(seed)
    out = np.empty_like(acts)
    for m in range(n_models):
        for layer in range(n_layers):
            q, r = np.linalg.qr(rng.standard_normal((d_mlp, d_mlp)))
            q = q * np.sign(np.diag(r))[None, :]  # Haar-distributed
            rows = slice(layer * d_mlp, (layer + 1) * d_mlp)
            out[m, rows] = (q.T @ acts[m, rows].astype(np.float64)).astype(np.float32)
    return out


class NeuronSummary(NamedTuple):
    """Per neuron ``[model, neuron]``: ``max_any`` (max correlation with any neuron of any
    other seed), ``mean_over_seeds`` (the per-seed max, averaged over the other seeds: the
    paper's statistic); ``fraction_above``: share of neurons whose ``mean_over_seeds``
    exceeds ``threshold``."""

    max_any: Float[np.ndarray, "model neuron"]
    mean_over_seeds: Float[np.ndarray, "model neuron"]
    threshold: float
    fraction_above: float


def summarise(max_corr: Float[np.ndarray, "model model neuron"], threshold: float = 0.5) -> NeuronSummary:
    """Reduce `max_correlations` over the other seeds."""
    max_any = np.nanmax(max_corr, axis=1)
    mean = np.nanmean(max_corr, axis=1)
    return NeuronSummary(max_any, mean, threshold, float(np.mean(mean > threshold)))


class NeuronProperties(NamedTuple):
    """Per neuron of one model (``[n_layers * d_mlp]``): ``activation_frequency`` (share of
    samples with activation > 0), ``vocab_kurtosis`` and ``vocab_skew`` of the vocabulary
    effect ``W_out[i] W_U`` (centred over the vocabulary), and ``top_tokens`` /
    ``bottom_tokens`` (``[neuron, k]`` ids it promotes / suppresses most)."""

    activation_frequency: Float[np.ndarray, " neuron"]
    vocab_kurtosis: Float[np.ndarray, " neuron"]
    vocab_skew: Float[np.ndarray, " neuron"]
    top_tokens: Int[np.ndarray, "neuron k"]
    bottom_tokens: Int[np.ndarray, "neuron k"]


def neuron_properties(model: Transformer, acts: Float[np.ndarray, "neuron sample"], k: int = 5) -> NeuronProperties:
    """`NeuronProperties` of ``model``'s neurons; ``acts`` its row of `mlp_activations`."""
    W_out = np.asarray(model.blocks.mlp.W_out, np.float64)  # [layer, d_mlp, d_model]
    effect = W_out.reshape(-1, W_out.shape[-1]) @ np.asarray(model.unembed.W_U, np.float64)  # [neuron, d_vocab]
    if effect.shape[0] != np.asarray(acts).shape[0]:
        raise UniversalNeuronsError(f"acts has {np.asarray(acts).shape[0]} neurons, the model {effect.shape[0]}")
    z = effect - effect.mean(-1, keepdims=True)
    sd = z.std(-1, keepdims=True)
    z = z / np.maximum(sd, 1e-12)
    order = np.argsort(-effect, axis=-1)
    return NeuronProperties(
        activation_frequency=(np.asarray(acts) > 0).mean(-1),
        vocab_kurtosis=(z**4).mean(-1),
        vocab_skew=(z**3).mean(-1),
        top_tokens=order[:, :k],
        bottom_tokens=order[:, ::-1][:, :k],
    )
