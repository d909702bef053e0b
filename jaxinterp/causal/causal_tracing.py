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
restoration a `Patch`; samples are a `vmap` over PRNG keys, and (``method="full"``) every
(layer, position) restoration is a chunked `vmap` (`jaxinterp.engine.sweep`) inside one compiled
program. The same keys serve every restoration (common random numbers, as ROME's
fixed-seed noise), so differences between cells are not noise-sample differences.

Two methods give the same maps. ``method="fast"`` (the default for causal models) runs
them on the fast patching engine (`jaxinterp.causal.patching.fast`): each noise sample's
noisy run is the engine's base run and the clean run its source, so a restoration at
layer ``l`` and position ``p`` recomputes only layers ``l`` and up (window restorations:
from the window's first layer) and positions ``p`` and after, packed into blocks; every
noise sample runs in the same compiled program (a ``vmap`` over the base runs), and the
last layer is computed only where the answer is read. ``method="full"`` runs one full
forward pass per restoration and noise sample (the reference; any model).

ROME reports, for GPT-2 XL and GPT-J, an early site (MLPs at the last subject token in
middle layers) and a late site (attention and hidden states at the last token in high
layers).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional, Sequence, Union

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from ..core.labelled import LabelledArray
from ..core.readout import Readout
from ..engine.quick_compile import QuickCompiled
from ..model.interventions import Noise, Patch
from ..model.transformer import check_tokens
from .patching.fast import fast_supported

__all__ = [
    "causal_trace",
    "CausalTrace",
    "trace_prob",
    "embedding_noise_std",
    "window_mask",
    "window_bounds",
    "trace_flops",
    "causal_trace_dataset",
    "CausalTraces",
]

KINDS = {"hidden": None, "mlp": "mlp_out", "attn": "attn_out"}
METHODS = ("auto", "fast", "full")


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


def window_bounds(n_layers: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """``(first, stop)`` ``[layer]``: the window around each layer is ``first .. stop - 1``
    (as `window_mask`, on the host)."""
    layers = np.arange(n_layers)
    return np.maximum(0, layers - window // 2), np.minimum(n_layers, layers - (-window // 2))


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
    method: str = "auto",
    checkpoint=None,
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
        method: ``"fast"`` (the fast patching engine: prefix and position-suffix reuse;
            causal models only), ``"full"`` (a full forward pass per restoration and
            sample; any model) or ``"auto"`` (fast where it applies). Same numbers up to
            float rounding.
        checkpoint: a directory (or a `jaxinterp.engine.checkpoint.SweepCheckpoint`):
            each kind's finished chunks are saved in ``<directory>/<kind>`` as they
            finish, and a later call with the same inputs (model, prompt, subject,
            answer, noise keys and level, window, method, chunking) loads them instead
            of computing them again; other inputs are refused (`ResumeError`). Each
            chunk is then its own call of one compiled program.

    Returns:
        A `CausalTrace`. Cost with ``"full"``: ``len(kinds) * n_layers * pos * n_samples``
        forward passes (logits at the last position only), in one compiled program per
        kind; ``"fast"`` computes about a third of that (`trace_flops` counts both).
    """
    cfg = model.cfg
    tokens = check_tokens(tokens, cfg)
    if tokens.ndim != 1:
        raise ValueError(
            f"causal_trace traces one prompt: tokens must be [pos], got shape {tokens.shape} "
            "(causal_trace_dataset traces a batch of prompts)"
        )
    n_pos = tokens.shape[0]
    subject_mask = _subject_mask(subject, n_pos)
    fast = _check_options(cfg, kinds, hidden_site, n_samples, window, method)
    std = embedding_noise_std(model, noise) if noise_std is None else float(noise_std)
    keys = jax.random.split(jax.random.PRNGKey(0) if key is None else key, n_samples)

    sites = {k: (hidden_site if k == "hidden" else KINDS[k]) for k in kinds}
    # The fast path restores resid_post at layer l as resid_pre at l + 1.
    names = set(sites.values()) | ({"resid_pre"} if fast and "hidden" in sites else set())
    logits, cache = model.run_with_cache(tokens, names=sorted(names))
    clean_probs = jax.nn.softmax(logits[-1].astype(jnp.float32))
    if answer is None:
        answer = int(jnp.argmax(clean_probs))
    if not 0 <= int(answer) < cfg.d_vocab:
        raise ValueError(f"answer token id {answer} is outside the vocabulary (0..{cfg.d_vocab - 1})")
    answer_arr = jnp.asarray(answer)
    checkpoints = _trace_checkpoints(
        checkpoint, "", fast, sites, model, tokens, subject_mask, answer_arr, keys, std, window, batch_size
    )
    if fast:
        values, corrupted = _fast_maps(
            model,
            tokens,
            answer_arr,
            subject_mask,
            keys,
            std,
            cache,
            sites,
            window,
            batch_size,
            float(clean_probs[answer]),
            checkpoints,
        )
    else:
        values, corrupted = _full_maps(
            model, tokens, answer_arr, subject_mask, keys, std, cache, sites, window, batch_size, checkpoints
        )
    maps = {}
    for kind, probs in values.items():
        labels = {"pos": list(pos_labels)} if pos_labels is not None else {}
        maps[kind] = LabelledArray(
            probs,
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


def _check_options(cfg, kinds, hidden_site, n_samples, window, method) -> bool:
    """Check `causal_trace`'s options; return whether the fast path runs."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {list(KINDS)}, got {list(kinds)}")
    if hidden_site not in ("resid_post", "resid_pre"):
        raise ValueError(f"hidden_site must be 'resid_post' or 'resid_pre', got {hidden_site!r}")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive int (layers restored together), got {window!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if method == "fast" and not fast_supported(cfg):
        raise ValueError(
            "method='fast' needs causal attention (a restoration at position p must not change earlier "
            "positions); this model is bidirectional: use method='full' or 'auto'"
        )
    return method == "fast" or (method == "auto" and fast_supported(cfg))


def _full_maps(model, tokens, answer, subject, keys, std, cache, sites, window, batch_size, checkpoints):
    """The reference: one full forward pass per restoration and noise sample."""
    cfg, n_pos = model.cfg, tokens.shape[0]
    corrupted = float(_trace_prob_jit(model, tokens, answer, subject, keys, std))
    args = (tokens, answer, subject, keys, jnp.asarray(std))
    probs = _restoration_sweeps(_Restore, model, n_pos, cache, sites, window, args, batch_size, checkpoints)
    return {kind: p.reshape(cfg.n_layers, n_pos) for kind, p in probs.items()}, corrupted


def _restoration_sweeps(restore, model, n_pos, cache, sites, window, args, batch_size, checkpoints) -> dict:
    """``{kind: [layer * pos, ...]}``: the engine's `sweep` of ``restore(site, window)``
    (a `_Restore` or `_RestoreItems`) over every (layer, pos) cell, per kind (``window``
    for the MLP and attention kinds, single layers for ``"hidden"``)."""
    from ..engine.sweep import sweep

    layers, positions = np.meshgrid(np.arange(model.cfg.n_layers), np.arange(n_pos), indexing="ij")
    locations = {"layer": jnp.asarray(layers.reshape(-1)), "pos": jnp.asarray(positions.reshape(-1))}
    return {
        kind: np.asarray(
            sweep(
                restore(site, None if kind == "hidden" else window),
                locations,
                model,
                cache[site],
                *args,
                batch_size=batch_size,
                checkpoint=checkpoints.get(kind),
            )
        )
        for kind, site in sites.items()
    }


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


# ---------------------------------------------------------------------------------
# The fast path: restorations as blocks of the fast patching engine.


@dataclasses.dataclass(frozen=True)
class _Rows:
    """The restorations of one map as the engine's patches: each ``[n]``, with the map
    cell ``(layer, pos)`` each fills. A restoration applies at layers ``first ..
    stop - 1`` and position ``pos`` of ``site``."""

    site: str
    first: np.ndarray
    stop: np.ndarray
    pos: np.ndarray
    cell_layer: np.ndarray
    cell_pos: np.ndarray


def _restoration_rows(cfg, n_pos: int, kind: str, site: str, window: int) -> _Rows:
    """The engine patches of map ``kind``. A hidden-state restoration of ``resid_post``
    at layer ``l`` is the same as one of ``resid_pre`` at ``l + 1`` (the same array),
    which the engine computes from layer ``l + 1``; the last layer's ``resid_post``
    (the final residual) is left out (`_fast_maps` fills it: it changes the answer only
    at the last position, to the clean prediction)."""
    layers, positions = (a.reshape(-1) for a in np.meshgrid(np.arange(cfg.n_layers), np.arange(n_pos), indexing="ij"))
    if kind == "hidden":
        if site == "resid_post":
            keep = layers < cfg.n_layers - 1
            layers, positions = layers[keep], positions[keep]
            return _Rows("resid_pre", layers + 1, layers + 2, positions, layers, positions)
        return _Rows(site, layers, layers + 1, positions, layers, positions)
    first, stop = window_bounds(cfg.n_layers, window)
    return _Rows(site, first[layers], stop[layers], positions, layers, positions)


def _rows_layout(cfg, n_pos: int, rows: _Rows, n_chunks: int):
    from .patching.layout import build_blocks
    from .patching.locations import FIELDS

    n = rows.pos.shape[0]
    fields = {f: np.full(n, -1, np.int32) for f in FIELDS if f != "layer"}
    fields["pos"] = rows.pos.astype(np.int32)
    # Blocks no bigger than a chunk's share of the tokens (every sample multiplies them).
    share = -(-int((n_pos - rows.pos).sum()) // max(1, n_chunks))
    max_tokens = min(MAX_TRACE_BLOCK_TOKENS, max(n_pos, share))
    return build_blocks(n_pos, cfg.n_layers, rows.first, rows.pos, fields, n_chunks, max_tokens, layer_stop=rows.stop)


# Largest block, in packed tokens per noise sample: the samples ride along in the same
# matmuls, so a block's matmuls have ``n_samples`` times as many rows.
MAX_TRACE_BLOCK_TOKENS = 256


def _fast_maps(
    model, tokens, answer, subject, keys, std, clean_cache, sites, window, batch_size, clean_prob, checkpoints
):
    """The maps on the fast engine, and the corrupted probability (mean over samples)."""
    from ..core.readout import Readout
    from .patching.fast import fast_flops

    cfg, n_pos = model.cfg, tokens.shape[0]
    readout = Readout.at(-1, n_pos)
    noisy = _noisy_runs(model, tokens, subject, keys, jnp.asarray(std), answer, readout=readout)
    corrupted = float(jnp.mean(noisy.metric))
    last_layer_subset = not cfg.post_norm
    values = {}
    for kind, site in sites.items():
        rows = _restoration_rows(cfg, n_pos, kind, site, window)
        n_chunks = 1 if batch_size is None else math.ceil(rows.pos.shape[0] / batch_size)
        layout = _rows_layout(cfg, n_pos, rows, n_chunks)
        flops = keys.shape[0] * fast_flops(cfg, layout, readout, last_layer_subset, cached_runs=False)
        static = dict(shape=layout.shape, site=rows.site, readout=readout, last_layer_subset=last_layer_subset)
        args = (model, noisy, clean_cache[rows.site])
        out = _run_map(_fast_programs, flops, args, layout, answer, static, checkpoints.get(kind))
        values[kind] = _fill_map(cfg, n_pos, kind, site, rows, layout, out, corrupted, clean_prob)
    return values, corrupted


def _run_map(programs, flops, args, layout, answer, static, checkpoint) -> np.ndarray:
    """One map's compiled program over ``layout``'s chunks: ``[n_chunks, ...]``. With a
    ``checkpoint``, chunk by chunk (each its own call), saving each as it finishes and
    loading those a previous run saved."""
    if checkpoint is None:
        return np.asarray(programs(flops, None, *args, layout.data, answer, **static))
    from ..engine.checkpoint import run_checkpointed

    store = checkpoint.open(layout.n_chunks, (layout.shape, layout.data))

    def compute(d):
        return programs(flops, None, *args, d, answer, **static)

    def shape_of(d):
        return programs.program(*args, d, answer, **static)

    return np.asarray(run_checkpointed(compute, layout.data, store, 1, False, "causal trace", shape_of))


def _trace_checkpoints(
    checkpoint, suffix, fast, sites, model, tokens, subject, answer, keys, std, window, batch_size
) -> dict:
    """``{kind: SweepCheckpoint}`` in ``<directory>/<kind><suffix>``, keyed on every input
    that decides the kind's map ({} without a checkpoint)."""
    from ..engine.checkpoint import SweepCheckpoint, as_checkpoint, fingerprint

    checkpoint = as_checkpoint(checkpoint)
    if checkpoint is None:
        return {}
    common = dict(
        model=fingerprint(model, "model"),
        prompt=tokens,
        subject=subject,
        answer=answer,
        **{"noise keys": jax.random.key_data(keys) if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key) else keys},
        **{"noise std": float(std), "window": window, "method": "fast" if fast else "full"},
        **{"batch size": batch_size},
    )
    out = {}
    for kind, site in sites.items():
        sub = SweepCheckpoint(checkpoint.directory / f"{kind}{suffix}", checkpoint.key, checkpoint.inputs)
        out[kind] = sub.with_inputs((), kind=kind, site=site, **common)
    return out


def _fill_map(cfg, n_pos, kind, site, rows, layout, out, corrupted, clean_prob) -> np.ndarray:
    """One map ``[layer, pos]`` from the engine's read-out values ``out`` (as ``layout.patch_of_read``)."""
    probs = np.full((cfg.n_layers, n_pos), np.nan, np.float32)
    read = layout.patch_of_read >= 0
    patch = layout.patch_of_read[read]
    probs[rows.cell_layer[patch], rows.cell_pos[patch]] = out[read]
    if kind == "hidden" and site == "resid_post":
        # The final residual: restoring it changes the answer only at the last position.
        probs[-1] = corrupted
        probs[-1, -1] = clean_prob
    return probs


@functools.partial(jax.jit, static_argnames=("readout",))
def _noisy_runs(model, tokens, subject, keys, std, answer, *, readout):
    """The noisy run of every sample, caching what the engine's blocks read (a
    `CachedRuns` with a leading sample axis; its ``site`` is filled per map)."""
    from .patching.fast import CachedRuns

    key_site = "attn.rot_k" if model.cfg.positional == "rotary" else "attn.k"
    names = frozenset({"resid_pre", "resid_post", key_site, "attn.v"})

    def one(key):
        logits, cache = model.run(tokens, [Noise("embed", key, std, pos=subject)], cache=names, readout=readout)
        return cache, jax.nn.softmax(logits[-1].astype(jnp.float32))[answer]

    cache, prob = jax.vmap(one)(keys)
    return CachedRuns(
        resid=cache["resid_pre"],
        k=cache[key_site],
        v=cache["attn.v"],
        final=cache["resid_post"][:, -1],
        site=jnp.zeros((keys.shape[0],)),  # unused: the clean activations come separately
        metric=prob[:, None],  # [sample, pair]: one pair per noisy run
    )


def _fast_program(model, noisy, clean, data, answer, *, shape, site, readout, last_layer_subset):
    """``[n_chunks, reads]``: p(answer) of each restoration, averaged over the noise
    samples, every sample's blocks run side by side (a vmap over the noisy runs)."""
    from ..engine.sweep import map_chunks
    from .patching.fast import CachedRuns, block_sweep

    def metric(logits):
        return jax.nn.softmax(logits[-1].astype(jnp.float32))[answer]

    # The engine reads the source run as site[1], with a pair axis (one pair): [2, layer, 1, pos, ...].
    source = jnp.stack([clean, clean])[:, :, None]

    def one_sample(runs, d):
        runs = CachedRuns(runs.resid, runs.k, runs.v, runs.final, source, runs.metric)
        return block_sweep(model, runs, d, shape, site, metric, readout, last_layer_subset)

    def chunk(d):
        return jax.vmap(one_sample, in_axes=(0, None))(noisy, d).mean(0)

    return map_chunks(chunk, data)


def trace_flops(
    model,
    n_pos: int,
    *,
    n_samples: int = 10,
    window: int = 10,
    kinds: Sequence[str] = ("hidden", "mlp", "attn"),
    hidden_site: str = "resid_post",
    batch_size: Optional[int] = 32,
) -> dict[str, float]:
    """Matmul FLOPs of `causal_trace` on a prompt of ``n_pos`` tokens, both methods:
    ``full`` (a forward pass with last-position logits per restoration and sample,
    counted from its jaxpr by `jaxinterp.causal.attribution.cost.matmul_flops`, plus the
    corrupted and clean runs) and ``fast`` (the noisy and clean runs, then every
    block-layer of the engine's layout, padding included, per sample:
    `jaxinterp.causal.patching.fast.fast_flops`). Returns ``{"full", "fast", "ratio"
    (fast / full), "forward" (one forward pass)}``."""
    from ..core.readout import Readout
    from .attribution.cost import matmul_flops
    from .patching.fast import fast_flops

    cfg = model.cfg
    readout = Readout.at(-1, n_pos)
    tokens = jnp.zeros(n_pos, jnp.int32)
    forward = float(matmul_flops(lambda m, t: m.run(t, readout=readout)[0], model, tokens))
    full_logits = float(matmul_flops(lambda m, t: m.run(t)[0], model, tokens))
    n_cells = cfg.n_layers * n_pos
    full = len(kinds) * n_cells * n_samples * forward + (n_samples * forward + full_logits)
    fast = n_samples * forward + full_logits  # the noisy runs and the clean run
    for kind in kinds:
        rows = _restoration_rows(cfg, n_pos, kind, hidden_site if kind == "hidden" else KINDS[kind], window)
        n_chunks = 1 if batch_size is None else math.ceil(rows.pos.shape[0] / batch_size)
        layout = _rows_layout(cfg, n_pos, rows, n_chunks)
        fast += n_samples * fast_flops(cfg, layout, readout, not cfg.post_norm, cached_runs=False)
    return {"full": full, "fast": fast, "ratio": fast / full, "forward": forward}


_FAST_STATIC = ("shape", "site", "readout", "last_layer_subset")
# Compiled for speed of compiling when the work is small, as the fast patching engine is.
_fast_programs = QuickCompiled(_fast_program, _FAST_STATIC)


# ---------------------------------------------------------------------------------
# A dataset of prompts: every item of one length in the same compiled program.


@dataclasses.dataclass
class CausalTraces:
    """Result of `causal_trace_dataset`: ``traces``, one `CausalTrace` per item, each
    ``[layer, pos]`` at its prompt's own length (``lengths [item]``)."""

    traces: list
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.traces)

    def __getitem__(self, i: int) -> CausalTrace:
        return self.traces[i]

    @property
    def clean_prob(self) -> np.ndarray:
        """``[item]``: p(answer) of each clean prompt."""
        return np.array([t.clean_prob for t in self.traces])

    @property
    def corrupted_prob(self) -> np.ndarray:
        """``[item]``: p(answer) with noise and no restoration (mean over samples)."""
        return np.array([t.corrupted_prob for t in self.traces])

    def stacked(self, kind: str, indirect: bool = False) -> LabelledArray:
        """``[item, layer, pos]``: every item's map (``indirect``: less its corrupted
        probability), positions counted from each prompt's start, NaN past its length."""
        first = self.traces[0]._get(kind)
        n_layers, n_pos = first.values.shape[0], int(max(self.lengths))
        out = np.full((len(self.traces), n_layers, n_pos), np.nan, np.float32)
        for i, trace in enumerate(self.traces):
            values = np.asarray(trace._get(kind).values)
            out[i, :, : values.shape[1]] = values - (trace.corrupted_prob if indirect else 0.0)
        return LabelledArray(out, ("item", "layer", "pos"), {}, name=first.name)

    def mean(self, kind: str, indirect: bool = False) -> LabelledArray:
        """``[layer, pos]``: the items' maps (``indirect``: indirect effects) averaged
        over items, position by position from each prompt's start; a cell averages the
        items long enough to have it. (Averages over aligned token groups, as ROME's,
        are a reduction of `stacked` with each item's `CausalTrace.subject`.)"""
        stacked = self.stacked(kind, indirect)
        with np.errstate(invalid="ignore"):
            values = np.nanmean(np.asarray(stacked.values), axis=0)
        what = "indirect effect" if indirect else "p(answer)"
        return LabelledArray(values, ("layer", "pos"), {}, name=f"mean {what} over {len(self)} prompts ({kind})")


def causal_trace_dataset(
    model,
    tokens: Int[Array, "item pos"],
    subjects,
    answers: Optional[Sequence[int]] = None,
    *,
    attention_mask=None,
    n_samples: int = 10,
    noise: float = 3.0,
    noise_std: Optional[float] = None,
    window: int = 10,
    kinds: Sequence[str] = ("hidden", "mlp", "attn"),
    hidden_site: str = "resid_post",
    key: Optional[PRNGKeyArray] = None,
    batch_size: Optional[int] = 32,
    answer_labels: Optional[Sequence[str]] = None,
    method: str = "auto",
    checkpoint=None,
) -> CausalTraces:
    """ROME causal tracing of a batch of prompts: each item's maps equal
    `causal_trace` of that prompt alone (same ``key``, so the same noise samples).

    Args:
        tokens: int ``[item, pos]``: prompts of one length, or right-padded to one with
            ``attention_mask`` (``[item, pos]``, 1 for real tokens first, then 0). Each
            answer is predicted at its prompt's last real token.
        subjects: per item, the subject's positions (indices, a slice or a bool mask
            over the prompt's real tokens), or one bool array ``[item, pos]``.
        answers: ``[item]`` token ids; default each clean prompt's top prediction.
        batch_size: (restoration, item) rows evaluated at once (times ``n_samples``);
            bounds memory.
        checkpoint: as `causal_trace`'s (``<directory>/<kind>-len<n>`` for the items
            of length ``n``).

    The other arguments are `causal_trace`'s, shared by every item.

    Items of the same length run together in one compiled program per kind (a ``vmap``
    over the items with the restorations' block layout shared, so every item's blocks
    run in the same matmuls); items of
    different lengths in one program per length (no loop over items). Returns
    `CausalTraces` (per item; ``.mean(kind)`` averaged).
    """
    from ..core.errors import AttentionMaskError, PairBatchError

    cfg = model.cfg
    tokens = check_tokens(tokens, cfg)
    if tokens.ndim != 2:
        raise PairBatchError(
            f"causal_trace_dataset takes a batch of prompts: tokens must be [item, pos], got shape {tokens.shape}"
        )
    n_items, n_pos = tokens.shape
    fast = _check_options(cfg, kinds, hidden_site, n_samples, window, method)
    lengths = np.full(n_items, n_pos)
    if attention_mask is not None:
        m = np.asarray(attention_mask)
        if m.shape != (n_items, n_pos):
            raise AttentionMaskError(
                f"attention_mask must have the tokens' shape [item, pos] = {(n_items, n_pos)}, got {m.shape}"
            )
        if not np.isin(m, (0, 1)).all():
            raise AttentionMaskError("attention_mask must hold 0 (padding) and 1 (real token) only")
        lengths = m.sum(axis=1).astype(int)
        if not (m == (np.arange(n_pos)[None] < lengths[:, None])).all():
            raise AttentionMaskError("attention_mask must be right-padded: each prompt's real tokens (1) first, then 0")
        if (lengths == 0).any():
            raise AttentionMaskError(f"attention_mask row {int(np.flatnonzero(lengths == 0)[0])} has no real token")
    subject_rows = _item_subjects(subjects, n_items, n_pos, lengths)
    answer_ids: Optional[np.ndarray] = None
    if answers is not None:
        answer_ids = np.asarray(answers).reshape(-1)
        if answer_ids.shape != (n_items,):
            raise PairBatchError(f"answers must hold one token id per prompt ({n_items}), got shape {answer_ids.shape}")
        if ((answer_ids < 0) | (answer_ids >= cfg.d_vocab)).any():
            raise ValueError(
                f"answer token ids must be in the vocabulary (0..{cfg.d_vocab - 1}), got {answer_ids.tolist()}"
            )
    std = embedding_noise_std(model, noise) if noise_std is None else float(noise_std)
    keys = jax.random.split(jax.random.PRNGKey(0) if key is None else key, n_samples)
    sites = {k: (hidden_site if k == "hidden" else KINDS[k]) for k in kinds}
    names = set(sites.values()) | ({"resid_pre"} if fast and "hidden" in sites else set())

    traces: list = [None] * n_items
    for n in sorted(set(lengths.tolist())):  # one program per prompt length
        idx = np.flatnonzero(lengths == n)
        toks = tokens[jnp.asarray(idx), :n]
        subject = jnp.stack([subject_rows[i] for i in idx])
        logits, cache = _clean_runs(model, toks, frozenset(names), n)
        clean_probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        answer = jnp.argmax(clean_probs, axis=-1) if answer_ids is None else jnp.asarray(answer_ids[idx])
        clean_p = np.asarray(jnp.take_along_axis(clean_probs, answer[:, None], axis=1)[:, 0])
        checkpoints = _trace_checkpoints(
            checkpoint, f"-len{n}", fast, sites, model, toks, subject, answer, keys, std, window, batch_size
        )
        if fast:
            values, corrupted = _fast_maps_items(
                model, toks, answer, subject, keys, std, cache, sites, window, batch_size, clean_p, checkpoints
            )
        else:
            values, corrupted = _full_maps_items(
                model, toks, answer, subject, keys, std, cache, sites, window, batch_size, checkpoints
            )
        for j, i in enumerate(idx):
            maps = {
                kind: LabelledArray(
                    v[j],
                    ("layer", "pos"),
                    {},
                    name=f"p(answer), restoring {kind}" + ("" if kind == "hidden" else f" (window {window})"),
                )
                for kind, v in values.items()
            }
            traces[i] = CausalTrace(
                hidden=maps.get("hidden"),
                mlp=maps.get("mlp"),
                attn=maps.get("attn"),
                clean_prob=float(clean_p[j]),
                corrupted_prob=float(corrupted[j]),
                answer=int(answer[j]),
                subject=tuple(int(p) for p in np.flatnonzero(np.asarray(subject[j]))),
                noise_std=std,
                window=window,
                answer_label="" if answer_labels is None else answer_labels[int(i)],
            )
    return CausalTraces(traces, lengths)


def _item_subjects(subjects, n_items: int, n_pos: int, lengths: np.ndarray) -> list:
    """Each item's subject as a bool mask over its real tokens."""
    from ..core.errors import PairBatchError

    arr = None if isinstance(subjects, (list, tuple)) else np.asarray(subjects)
    if arr is not None and arr.dtype == bool and arr.ndim == 2:
        if arr.shape != (n_items, n_pos):
            raise PairBatchError(
                f"a bool subjects array must have the tokens' shape {(n_items, n_pos)}, got {arr.shape}"
            )
        rows = []
        for i in range(n_items):
            if arr[i, lengths[i] :].any():
                raise ValueError(f"subjects row {i} marks padding (the prompt has {lengths[i]} real tokens)")
            rows.append(arr[i, : lengths[i]])
        subjects = rows
    if not isinstance(subjects, (list, tuple)) or len(subjects) != n_items:
        raise PairBatchError(
            f"subjects must give one subject per prompt ({n_items}: a list of index lists, slices or masks, "
            f"or a bool array [item, pos]), got {type(subjects).__name__}"
            + (f" of {len(subjects)}" if isinstance(subjects, (list, tuple)) else "")
        )
    return [_subject_mask(s, int(n)) for s, n in zip(subjects, lengths)]


@eqx.filter_jit
def _clean_runs(model, tokens, names, n_pos):
    """Each item's last-position logits and its cache of ``names``."""

    def one(t):
        logits, cache = model.run(t, [], cache=names, readout=Readout.at(-1, n_pos))
        return logits[0], cache

    return jax.vmap(one)(tokens)


def _fast_maps_items(
    model, tokens, answer, subject, keys, std, clean_cache, sites, window, batch_size, clean_prob, checkpoints
):
    """`_fast_maps` for ``[item, pos]`` prompts of one length: ``{kind: [item, layer,
    pos]}`` and ``[item]`` corrupted probabilities."""
    from .patching.fast import fast_flops

    cfg, (n_items, n_pos) = model.cfg, tokens.shape
    readout = Readout.at(-1, n_pos)
    noisy = _noisy_runs_items(model, tokens, subject, keys, jnp.asarray(std), answer, readout=readout)
    corrupted = np.asarray(jnp.mean(noisy.metric[..., 0], axis=1))
    last_layer_subset = not cfg.post_norm
    values = {}
    for kind, site in sites.items():
        rows = _restoration_rows(cfg, n_pos, kind, site, window)
        n_chunks = 1 if batch_size is None else math.ceil(rows.pos.shape[0] * n_items / batch_size)
        n_chunks = min(n_chunks, rows.pos.shape[0])
        layout = _rows_layout(cfg, n_pos, rows, n_chunks)
        flops = n_items * keys.shape[0] * fast_flops(cfg, layout, readout, last_layer_subset, cached_runs=False)
        static = dict(shape=layout.shape, site=rows.site, readout=readout, last_layer_subset=last_layer_subset)
        args = (model, noisy, clean_cache[rows.site])
        out = _run_map(_fast_items_programs, flops, args, layout, answer, static, checkpoints.get(kind))
        out = np.moveaxis(out, 1, 0)  # [item, n_chunks, reads]
        values[kind] = np.stack(
            [
                _fill_map(cfg, n_pos, kind, site, rows, layout, out[j], corrupted[j], clean_prob[j])
                for j in range(n_items)
            ]
        )
    return values, corrupted


@functools.partial(jax.jit, static_argnames=("readout",))
def _noisy_runs_items(model, tokens, subject, keys, std, answer, *, readout):
    return jax.vmap(lambda t, s, a: _noisy_runs(model, t, s, keys, std, a, readout=readout))(tokens, subject, answer)


def _fast_program_items(model, noisy, clean, data, answer, *, shape, site, readout, last_layer_subset):
    """`_fast_program` of every item (a vmap over the items' noisy runs, clean runs and
    answers; the block layout is shared): ``[n_chunks, item, reads]``."""

    def one(n, c, a):
        return _fast_program(
            model, n, c, data, a, shape=shape, site=site, readout=readout, last_layer_subset=last_layer_subset
        )

    return jnp.moveaxis(jax.vmap(one)(noisy, clean, answer), 0, 1)


def _full_maps_items(model, tokens, answer, subject, keys, std, cache, sites, window, batch_size, checkpoints):
    """`_full_maps` for ``[item, pos]`` prompts of one length."""
    cfg, (n_items, n_pos) = model.cfg, tokens.shape
    corrupted = np.asarray(_trace_prob_items(model, tokens, answer, subject, keys, jnp.asarray(std)))
    cells = None if batch_size is None else max(1, batch_size // n_items)
    args = (tokens, answer, subject, keys, jnp.asarray(std))
    probs = _restoration_sweeps(_RestoreItems, model, n_pos, cache, sites, window, args, cells, checkpoints)
    return {kind: p.T.reshape(n_items, cfg.n_layers, n_pos) for kind, p in probs.items()}, corrupted


class _RestoreItems(eqx.Module):
    """`_Restore` of every item at one cell: ``[item]``."""

    site: str = eqx.field(static=True)
    window: Optional[int] = eqx.field(static=True)

    def __call__(self, loc, model, clean, tokens, answer, subject, keys, std):
        one = _Restore(self.site, self.window)
        return jax.vmap(lambda c, t, a, s: one(loc, model, c, t, a, s, keys, std))(clean, tokens, answer, subject)


@eqx.filter_jit
def _trace_prob_items(model, tokens, answer, subject, keys, std):
    return jax.vmap(lambda t, a, s: trace_prob(model, t, a, s, keys, std))(tokens, answer, subject)


_fast_items_programs = QuickCompiled(_fast_program_items, _FAST_STATIC)
