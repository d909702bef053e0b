"""Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT").

Corrupt a factual prompt by adding Gaussian noise to the embeddings of the subject's
tokens, then restore one clean activation at a time and see how much of the
probability of the correct answer comes back:

- ``hidden``: the residual stream after layer ``l`` at position ``p`` (``resid_post``);
- ``mlp``: the MLP outputs of a window of layers around ``l`` (default 10) at ``p``;
- ``attn``: the attention outputs of that window at ``p``.

Each map is ``[layer, pos]``: the probability of the answer with that restoration,
averaged over noise samples. Subtracting the corrupted run's probability gives ROME's
*indirect effect*. The noise is an ordinary `Noise` intervention on ``embed``, the
restoration a `Patch`; samples are a `vmap` over PRNG keys, and every (layer, position)
restoration is a chunked `vmap` (`jaxinterp.engine.sweep`) inside one compiled
program. The same keys serve every restoration (common random numbers, as ROME's
fixed-seed noise), so differences between cells are not noise-sample differences.

ROME reports, for GPT-2 XL and GPT-J, an early site (MLPs at the last subject token in
middle layers) and a late site (attention and hidden states at the last token in high
layers).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Union

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from ..core.labelled import LabelledArray
from ..core.readout import Readout
from ..model.interventions import Noise, Patch
from ..model.transformer import check_tokens

__all__ = ["causal_trace", "CausalTrace", "trace_prob", "embedding_noise_std", "window_mask"]

KINDS = {"hidden": None, "mlp": "mlp_out", "attn": "attn_out"}


def embedding_noise_std(model, multiplier: float = 3.0) -> float:
    """``multiplier`` times the standard deviation of the token-embedding matrix (as the
    model scales it): ROME's noise level is 3 standard deviations of the embeddings."""
    W = model.embed.W_E.astype(jnp.float32)
    if model.embed.scale is not None:
        W = W * model.embed.scale
    return float(multiplier * jnp.std(W))


def window_mask(layer: Int[Array, ""], n_layers: int, window: int) -> Bool[Array, " layer"]:
    """Layers ``max(0, l - window//2) .. min(L, l + ceil(window/2)) - 1``: ROME's window
    of ``window`` layers around ``l`` (clipped at the ends). Traceable in ``layer``."""
    lo = jnp.maximum(0, layer - window // 2)
    hi = jnp.minimum(n_layers, layer - (-window // 2))
    ar = jnp.arange(n_layers)
    return (ar >= lo) & (ar < hi)


def _last_position_logits(model, tokens, interventions) -> Float[Array, " d_vocab"]:
    # Only the last position's logits are read: skip the unembedding elsewhere.
    n_pos = tokens.shape[0]
    return model.run(tokens, interventions, readout=Readout.at(-1, n_pos))[0][0]


def trace_prob(
    model,
    tokens: Int[Array, " pos"],
    answer: Int[Array, ""],
    subject: Bool[Array, " pos"],
    keys: PRNGKeyArray,
    noise_std: Float[Array, ""],
    restore: Sequence = (),
) -> Float[Array, ""]:
    """Mean over ``keys`` of the probability of ``answer`` at the last position when the
    subject's embeddings get ``noise_std`` Gaussian noise and ``restore`` (interventions,
    e.g. clean `Patch`es) is applied. Pure and jittable; vmapped over the keys.

    ``keys``: ``[n_samples]`` PRNG keys; each draws one noise sample (reproducibly).
    """

    def one(key):
        logits = _last_position_logits(model, tokens, [Noise("embed", key, noise_std, pos=subject), *restore])
        return jax.nn.softmax(logits.astype(jnp.float32))[answer]

    return jax.vmap(one)(keys).mean()


@dataclasses.dataclass
class CausalTrace:
    """Result of `causal_trace`. ``hidden``, ``mlp``, ``attn``: `LabelledArray` ``[layer,
    pos]`` of the answer's probability with that restoration (averaged over samples;
    absent kinds are None). ``clean_prob`` / ``corrupted_prob``: without noise / with
    noise and no restoration."""

    hidden: Optional[LabelledArray]
    mlp: Optional[LabelledArray]
    attn: Optional[LabelledArray]
    clean_prob: float
    corrupted_prob: float
    answer: int
    subject: tuple
    noise_std: float
    window: int
    answer_label: str = ""

    def indirect_effect(self, kind: str) -> LabelledArray:
        """``prob(restored) - prob(corrupted)`` for ``kind`` in hidden / mlp / attn."""
        arr = self._get(kind)
        return LabelledArray(arr.values - self.corrupted_prob, arr.dims, arr.labels, name=f"indirect effect ({kind})")

    def _get(self, kind: str) -> LabelledArray:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
        arr = getattr(self, kind)
        if arr is None:
            raise ValueError(f"this trace has no {kind!r} map: pass kinds=(..., {kind!r}) to causal_trace")
        return arr

    def plot(self, path: Optional[str] = None):
        """ROME's figure: one heatmap per kind, tokens down, layers across. Returns the Figure."""
        from ..viz.causal_trace import plot_causal_trace  # plots live in viz; loaded on use (matplotlib)

        return plot_causal_trace(self, path)


def causal_trace(
    model,
    tokens: Int[Array, " pos"],
    subject: Union[Sequence[int], slice, np.ndarray],
    answer: Optional[int] = None,
    *,
    n_samples: int = 10,
    noise: float = 3.0,
    noise_std: Optional[float] = None,
    window: int = 10,
    kinds: Sequence[str] = ("hidden", "mlp", "attn"),
    hidden_site: str = "resid_post",
    key: Optional[PRNGKeyArray] = None,
    batch_size: Optional[int] = 32,
    pos_labels: Optional[Sequence[str]] = None,
    answer_label: str = "",
) -> CausalTrace:
    """ROME causal tracing of one prompt.

    Args:
        tokens: int ``[pos]``; the answer is predicted at the last position.
        subject: the subject's token positions (indices, a slice or a bool mask).
        answer: the correct token id; default the clean run's top prediction (as ROME).
        n_samples: noise samples averaged per cell (ROME: 10).
        noise: noise std as a multiple of the embeddings' std (`embedding_noise_std`);
            ``noise_std`` sets it absolutely instead.
        window: layers restored together for the ``mlp`` / ``attn`` maps (ROME: 10).
        kinds: which maps to compute, from ``"hidden"``, ``"mlp"``, ``"attn"``.
        hidden_site: ``"resid_post"`` (a layer's output, as ROME) or ``"resid_pre"``.
        key: PRNG key for the noise; the same key gives the same result.
        batch_size: restorations evaluated at once (times ``n_samples`` forward passes);
            bounds memory.
        pos_labels: token strings for the position axis.

    Returns:
        A `CausalTrace`. Cost: ``len(kinds) * n_layers * pos * n_samples`` forward passes
        (logits at the last position only), in one compiled program per kind.
    """
    from ..engine.sweep import sweep

    cfg = model.cfg
    tokens = check_tokens(tokens, cfg)
    if tokens.ndim != 1:
        raise ValueError(f"causal_trace traces one prompt: tokens must be [pos], got shape {tokens.shape}")
    n_pos = tokens.shape[0]
    subject_mask = _subject_mask(subject, n_pos)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {list(KINDS)}, got {list(kinds)}")
    if hidden_site not in ("resid_post", "resid_pre"):
        raise ValueError(f"hidden_site must be 'resid_post' or 'resid_pre', got {hidden_site!r}")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive int (layers restored together), got {window!r}")
    std = embedding_noise_std(model, noise) if noise_std is None else float(noise_std)
    keys = jax.random.split(jax.random.PRNGKey(0) if key is None else key, n_samples)

    sites = {k: (hidden_site if k == "hidden" else KINDS[k]) for k in kinds}
    logits, cache = model.run_with_cache(tokens, names=sorted(set(sites.values())))
    clean_probs = jax.nn.softmax(logits[-1].astype(jnp.float32))
    if answer is None:
        answer = int(jnp.argmax(clean_probs))
    if not 0 <= int(answer) < cfg.d_vocab:
        raise ValueError(f"answer token id {answer} is outside the vocabulary (0..{cfg.d_vocab - 1})")
    answer_arr = jnp.asarray(answer)
    corrupted = float(_trace_prob_jit(model, tokens, answer_arr, subject_mask, keys, std))

    layers, positions = np.meshgrid(np.arange(cfg.n_layers), np.arange(n_pos), indexing="ij")
    locations = {"layer": jnp.asarray(layers.reshape(-1)), "pos": jnp.asarray(positions.reshape(-1))}
    maps = {}
    for kind, site in sites.items():
        restored = _Restore(site, None if kind == "hidden" else window)
        probs = sweep(
            restored,
            locations,
            model,
            cache[site],
            tokens,
            answer_arr,
            subject_mask,
            keys,
            jnp.asarray(std),
            batch_size=batch_size,
        )
        labels = {"pos": list(pos_labels)} if pos_labels is not None else {}
        maps[kind] = LabelledArray(
            np.asarray(probs).reshape(cfg.n_layers, n_pos),
            ("layer", "pos"),
            labels,
            name=f"p(answer), restoring {kind}" + ("" if kind == "hidden" else f" (window {window})"),
        )
    return CausalTrace(
        hidden=maps.get("hidden"),
        mlp=maps.get("mlp"),
        attn=maps.get("attn"),
        clean_prob=float(clean_probs[answer]),
        corrupted_prob=corrupted,
        answer=int(answer),
        subject=tuple(int(i) for i in np.flatnonzero(np.asarray(subject_mask))),
        noise_std=std,
        window=window,
        answer_label=answer_label,
    )


class _Restore(eqx.Module):
    """One cell of a trace: restore ``site`` at (a window of layers around) ``loc``.
    A module of static fields, so equal restorations hash equal and reuse one compile."""

    site: str = eqx.field(static=True)
    window: Optional[int] = eqx.field(static=True)

    def __call__(self, loc, model, clean, tokens, answer, subject, keys, std):
        layer = loc["layer"] if self.window is None else window_mask(loc["layer"], model.cfg.n_layers, self.window)
        return trace_prob(
            model, tokens, answer, subject, keys, std, [Patch(self.site, clean, layer=layer, pos=loc["pos"])]
        )


@eqx.filter_jit
def _trace_prob_jit(model, tokens, answer, subject, keys, std):
    return trace_prob(model, tokens, answer, subject, keys, std)


def _subject_mask(subject, n_pos: int) -> Bool[Array, " pos"]:
    if isinstance(subject, slice):
        idx = np.arange(n_pos)[subject]
    else:
        arr = np.asarray(subject)
        if arr.dtype == bool:
            if arr.shape != (n_pos,):
                raise ValueError(f"a bool subject mask must have shape ({n_pos},), got {arr.shape}")
            idx = np.flatnonzero(arr)
        else:
            idx = arr.reshape(-1).astype(int)
            bad = idx[(idx < -n_pos) | (idx >= n_pos)]
            if bad.size:
                raise ValueError(f"subject position {int(bad[0])} is out of range for a prompt of {n_pos} tokens")
            idx = np.where(idx < 0, idx + n_pos, idx)
    if idx.size == 0:
        raise ValueError("subject selects no token: give the positions of the subject's tokens")
    mask = np.zeros(n_pos, bool)
    mask[idx] = True
    return jnp.asarray(mask)
