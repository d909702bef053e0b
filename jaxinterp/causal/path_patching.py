"""Path patching (Wang et al. 2022, IOI; Goldowsky-Dill et al. 2023) and circuit
hypotheses evaluated by their averaged unexplained effect.

Path patching measures how much a *sender* (heads, MLPs) affects the metric *through*
chosen *receivers* (a head's query/key/value input, an MLP's input, the logits, or a
residual-stream site) and through nothing else. The three runs:

1. Run the base and source inputs; cache every head's ``z`` and MLP's output.
2. Run the base input with every head (and, with ``freeze_mlps``, every MLP) frozen to
   its base value, except the senders, which get their source values. Record the
   receivers' inputs: they now differ from the base run only by what flows along
   sender -> receiver paths that pass through no other head (or MLP).
3. Run the base input again, patching only the receivers' inputs with the values from
   step 2 (everything else recomputed), and read the metric.

IOI uses ``base = clean``, ``source = corrupted`` (e.g. the ABC distribution) and
freezes only heads (``freeze_mlps=False``); Goldowsky-Dill et al. freeze everything
not on the path (the default here). Every sender of a sweep is one row of a chunked
`vmap` (`jaxinterp.engine.sweep`): steps 2 and 3 of all senders run in one program.

With the receiver a residual-stream site right after the sender (``resid_pre`` of the
next layer) and MLPs free to react, path patching *is* activation patching of the
sender: nothing else lies between them.

Circuit hypotheses (Goldowsky-Dill et al., "Localizing Model Behavior with Path
Patching"): a hypothesis ``H = (G, delta, S, D)`` names important nodes ``S`` of the
computational graph ``G``, a distribution ``D`` of (reference, counterfactual) input
pairs and a dissimilarity ``delta``. ``G_H(x_r, x_c)`` runs ``x_r`` with every node
outside ``S`` computed on ``x_c`` instead: at the level of heads and MLPs, their
outputs resample-ablated from the counterfactual run. The averaged unexplained effect
``AUE = E_D[delta(G(x_r), G_H(x_r, x_c))]`` is zero when ``S`` explains everything.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Optional, Sequence, Union

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..core.errors import AttentionMaskError, PairBatchError, PathPatchingError
from ..core.labelled import LabelledArray
from ..core.pair_metrics import PairAt, PairMetric
from ..core.sites import parse_site
from ..engine.grads import cache_run, metric_of_run
from ..model.interventions import Patch
from ..model.transformer import check_pair
from .attribution.graph import Component, parse_component
from .pairs import is_batch, prompt_pairs

__all__ = [
    "path_patch",
    "path_patch_sweep",
    "path_patch_cost",
    "evaluate_hypothesis",
    "HypothesisResult",
    "kl_dissimilarity",
    "metric_dissimilarity",
]

Metric = Callable[[Float[Array, "pos d_vocab"]], Float[Array, ""]]
Names = Union[str, Sequence[str]]


# ---------------------------------------------------------------- node -> intervention


class _Receiver(eqx.Module):
    """Where a receiver reads: a per-layer site, its layer, and optionally one head."""

    site: str = eqx.field(static=True)
    layer: int = eqx.field(static=True)
    head: Optional[int] = eqx.field(static=True)


def _receiver(name: str, cfg) -> _Receiver:
    if name.startswith("blocks."):
        site = parse_site(name, cfg)
        if site.layer is None:
            raise PathPatchingError(
                f"receiver {name!r}: give a per-layer site with its layer, e.g. 'blocks.3.hook_resid_pre'"
            )
        return _Receiver(site.name, site.layer, None)
    try:
        comp = parse_component(name, cfg)
    except ValueError as e:
        raise PathPatchingError(f"receiver {name!r}: {e}") from None
    if comp.kind == "logits":
        return _Receiver("resid_post", cfg.n_layers - 1, None)  # all that the unembedding reads
    if comp.kind == "mlp":
        return _Receiver("ln2.normalized", comp.layer, None)  # the MLP's (normalised) input
    if comp.kind in ("head", "kv_head") and comp.input is not None:
        if comp.input == "q" and comp.kind == "kv_head":
            raise PathPatchingError(f"receiver {name!r}: queries belong to query heads ('a{comp.layer}.h<head>.q')")
        if comp.input in "kv" and comp.kind == "head" and cfg.n_kv_heads != cfg.n_heads:
            raise PathPatchingError(
                f"receiver {name!r}: with grouped-query attention keys and values belong to key/value heads: "
                f"'a{comp.layer}.kv<kv_head>.{comp.input}' (0..{cfg.n_kv_heads - 1})"
            )
        return _Receiver(f"attn.{comp.input}", comp.layer, comp.index)
    raise PathPatchingError(
        f"receiver {name!r} reads nothing: receivers are a head's input ('a3.h2.q', '.k', '.v'), an MLP ('m3'), "
        f"'logits', or a residual site ('blocks.3.hook_resid_pre')"
    )


def _sender(name: str, cfg) -> Component:
    try:
        comp = parse_component(name, cfg)
    except ValueError as e:
        raise PathPatchingError(f"sender {name!r}: {e}") from None
    if comp.kind not in ("head", "mlp") or comp.input is not None:
        raise PathPatchingError(f"sender {name!r}: senders are heads ('a3.h2') or MLPs ('m3')")
    return comp


def _names(x: Names) -> list[str]:
    out = [x] if isinstance(x, str) else list(x)
    if not out:
        raise PathPatchingError("give at least one node")
    return out


# ----------------------------------------------------------------------- the 3 runs


def _three_runs(model, base, caches, senders_iv, receivers, receiver_pos, freeze_mlps, metric, start=0):
    """Steps 2 and 3 for one set of sender interventions (pure; vmap-able).

    Step 2 starts from the base run's residual stream at layer ``start`` (static; at or
    below the first sender's layer: below it every head is frozen to its base output and
    every MLP computes its base output, so nothing differs from the base run) and runs
    only up to the last receiver's layer. Step 3 starts from the base run's residual
    stream at the first receiver's layer (nothing below it changes) and unembeds only
    where the metric reads."""
    base_z, source_z, base_mlp, source_mlp, base_resid = caches
    first, last = min(r.layer for r in receivers), max(r.layer for r in receivers)
    start = min(start, last)
    freeze = [Patch("attn.z", base_z)]
    if freeze_mlps and base_mlp is not None:
        freeze.append(Patch("mlp_out", base_mlp))
    _, recorded = model.run(
        base if start == 0 else base_resid[start],
        freeze + senders_iv(source_z, source_mlp),
        layers=(start, last + 1),
        cache=frozenset(r.site for r in receivers),
    )

    patches = [
        Patch(r.site, recorded[r.site][r.layer - start], layer=r.layer, head=r.head, pos=receiver_pos)
        for r in receivers
    ]
    return metric_of_run(model, base_resid[first], patches, frozenset(), metric, start=first)[0]


def _caches(model, base, source):
    """Step 1: heads' z and MLP outputs of both runs, and the base residual stream."""
    names = frozenset(["attn.z", "resid_pre"] + (["mlp_out"] if model.cfg.has_mlp else []))
    cb, cs = cache_run(model, base, names), cache_run(model, source, names)
    return cb["attn.z"], cs["attn.z"], cb.get("mlp_out"), cs.get("mlp_out"), cb["resid_pre"]


@eqx.filter_jit
def _step_one(model, base, source):
    """`_caches` of one pair (``[pos]`` tokens) or of each pair of a batch (``[pair, pos]``:
    every cache gains a leading pair axis): computed once for a whole sweep."""
    if base.ndim == 1:
        return _caches(model, base, source)
    return jax.vmap(lambda b, s: _caches(model, b, s))(base, source)


class _Senders(eqx.Module):
    """Sender interventions at traced locations: head senders (a [layer, head] mask) and
    MLP senders (a [layer] mask; None without MLPs). Applied after the freeze, so they
    win. The structure is the same for every choice of senders: one compile serves all."""

    head_mask: Array  # [layer, head] bool
    mlp_mask: Optional[Array]  # [layer] bool
    pos: Optional[Array]

    def __call__(self, source_z, source_mlp):
        # One Patch per layer: each layer's head mask differs.
        n_layers = self.head_mask.shape[0]
        ivs = [Patch("attn.z", source_z, layer=l, head=self.head_mask[l], pos=self.pos) for l in range(n_layers)]
        if self.mlp_mask is not None:
            ivs.append(Patch("mlp_out", source_mlp, layer=self.mlp_mask, pos=self.pos))
        return ivs


def _mean_over_pairs(fn, base, source, metric, reads=None, per_pair=False):
    """``fn(base, source, metric)`` of one pair, or over a batch ``[pair, pos]`` vmapped
    in one program: the mean over pairs, or each pair's (``per_pair``). A `PairMetric`
    gives pair ``i`` its own metric (``reads``: the union over pairs, static)."""
    if base.ndim == 1:
        return fn(base, source, metric)
    if isinstance(metric, PairMetric):
        index = jnp.arange(base.shape[0])
        values = jax.vmap(lambda b, s, i: fn(b, s, PairAt(metric, i, reads)))(base, source, index)
    else:
        values = jax.vmap(lambda b, s: fn(b, s, metric))(base, source)
    return values if per_pair else values.mean()


@eqx.filter_jit
def _path_patch_jit(model, base, source, senders, receivers, receiver_pos, freeze_mlps, metric, reads, per_pair):
    # Step 2 from the embeddings: the senders stay traced masks, so other senders reuse the program.
    def one(b, s, m):
        return _three_runs(model, b, _caches(model, b, s), senders, receivers, receiver_pos, freeze_mlps, m)

    return _mean_over_pairs(one, base, source, metric, reads, per_pair)


def _pair(model, base, source):
    return check_pair(base, source, model.cfg)


def _pairs(model, base, source, metric, attention_mask, per_pair):
    """``(base, source, metric, reads)``: one pair checked, or a batch of pairs
    (`jaxinterp.causal.pairs`: a metric per pair, right padding on causal models)."""
    if not is_batch(base, source, metric, attention_mask):
        if per_pair:
            raise PairBatchError("per_pair=True needs a batch of pairs: base/source tokens [batch, pos]")
        base, source = _pair(model, base, source)
        return base, source, metric, None
    pairs = prompt_pairs(model, base, source, metric, attention_mask)
    if pairs.attention_mask is not None and not model.cfg.causal:
        raise AttentionMaskError("attention_mask (padded pairs) needs a causal model; give equal-length prompts")
    return pairs.clean, pairs.corrupted, pairs.metric, pairs.metric.reads


def _pos(pos):
    return None if pos is None else jnp.asarray(pos)


def path_patch(
    model,
    base_tokens: Int[Array, "... pos"],
    source_tokens: Int[Array, "... pos"],
    metric: Metric,
    senders: Names,
    receivers: Names,
    *,
    freeze_mlps: bool = True,
    sender_pos=None,
    receiver_pos=None,
    attention_mask=None,
    per_pair: bool = False,
):
    """The metric after patching the paths from ``senders`` to ``receivers`` (3 runs).

    Args:
        base_tokens, source_tokens: int ``[pos]`` or ``[batch, pos]`` (metric averaged).
            Senders take their output from the source run; everything else is based
            on the base run. (IOI: base = clean, source = corrupted.)
        senders: node names, heads ``"a3.h2"`` or MLPs ``"m3"``; patched together.
        receivers: ``"a5.h1.q"`` / ``".k"`` / ``".v"`` (``"a5.kv0.k"`` with GQA), an MLP
            ``"m5"`` (its input), ``"logits"``, or a per-layer site
            ``"blocks.5.hook_resid_pre"``; patched together in step 3.
        freeze_mlps: freeze MLPs as well as heads in step 2 (default), or let them
            react to the senders (IOI's variant).
        sender_pos, receiver_pos: restrict senders' / receivers' patches to positions.
        metric: of one example, or with a batch one per pair (a `PairMetric`, e.g.
            ``pair_logit_diff(io, s, pos=last)``).
        attention_mask: ``[batch, pos]`` right padding of the pairs (causal models;
            `jaxinterp.causal.pairs`).
        per_pair: with a batch, return each pair's metric ``[pair]`` instead of the mean.
    """
    cfg = model.cfg
    base_tokens, source_tokens, metric, reads = _pairs(
        model, base_tokens, source_tokens, metric, attention_mask, per_pair
    )
    comps = [_sender(n, cfg) for n in _names(senders)]
    recv = tuple(_receiver(n, cfg) for n in _names(receivers))
    head_mask = np.zeros((cfg.n_layers, cfg.n_heads), bool)
    mlp_mask = np.zeros((cfg.n_layers,), bool)
    for c in comps:
        if c.kind == "head":
            head_mask[c.layer, c.index] = True
        else:
            mlp_mask[c.layer] = True
    senders_iv = _Senders(jnp.asarray(head_mask), jnp.asarray(mlp_mask) if cfg.has_mlp else None, _pos(sender_pos))
    value = _path_patch_jit(
        model, base_tokens, source_tokens, senders_iv, recv, _pos(receiver_pos), freeze_mlps, metric, reads, per_pair
    )
    return np.asarray(value) if per_pair else float(value)


class _SweepCell(eqx.Module):
    """One sender of a sweep: head (layer, head) or MLP (layer), as traced indices."""

    receivers: tuple = eqx.field(static=True)
    kind: str = eqx.field(static=True)
    freeze_mlps: bool = eqx.field(static=True)
    metric: Callable  # arrays (token ids) traced, the rest static under filter_jit
    reads: Optional[tuple] = eqx.field(static=True, default=None)  # a PairMetric's union of reads
    per_pair: bool = eqx.field(static=True, default=False)
    start: int = eqx.field(static=True, default=0)  # step 2's first layer: at most every sender's

    def __call__(self, loc, model, base, caches, sender_pos, receiver_pos):
        cfg = model.cfg
        layer_mask = jnp.arange(cfg.n_layers) == loc["layer"]
        if self.kind == "heads":
            heads = layer_mask[:, None] & (jnp.arange(cfg.n_heads) == loc["head"])[None, :]
            mlps = jnp.zeros_like(layer_mask) if cfg.has_mlp else None
        else:
            heads, mlps = jnp.zeros((cfg.n_layers, cfg.n_heads), bool), layer_mask
        senders = _Senders(heads, mlps, sender_pos)

        def one(b, c, m):
            return _three_runs(model, b, c, senders, self.receivers, receiver_pos, self.freeze_mlps, m, self.start)

        # The step-1 caches (of each pair) travel with the base tokens through the pair vmap.
        return _mean_over_pairs(one, base, caches, self.metric, self.reads, self.per_pair)


def path_patch_sweep(
    model,
    base_tokens: Int[Array, "... pos"],
    source_tokens: Int[Array, "... pos"],
    metric: Metric,
    receivers: Names,
    *,
    senders: str = "heads",
    freeze_mlps: bool = True,
    sender_pos=None,
    receiver_pos=None,
    batch_size: Optional[int] = None,
    attention_mask=None,
    per_pair: bool = False,
    checkpoint=None,
    bands: Optional[int] = None,
) -> LabelledArray:
    """`path_patch` with every head (``senders="heads"``: ``[layer, head]``) or every MLP
    (``senders="mlps"``: ``[layer]``) as the sender in turn, in one compiled program per
    band of layers.

    Senders at or after a receiver's layer cannot reach it: their cells equal the
    unpatched base run's metric. ``batch_size`` bounds memory (senders per chunk).
    ``bands``: the senders are split into this many bands of consecutive layers, and
    step 2 of a band starts at its first layer from the base run's residual stream
    (everything below a sender is the base run). Each band is its own compiled program.
    Only reacting MLPs (``freeze_mlps=False``) make this pay: their step-2 cost falls
    from every layer below the last receiver to those from the band's first layer on
    (frozen heads and MLPs are dead code that XLA drops anyway). Default (None):
    `DEFAULT_BANDS` for a batch of pairs with reacting MLPs, where compute outweighs the
    extra compiles; one band otherwise.
    A batch of pairs (a metric per pair, ``attention_mask``) as in `path_patch`;
    ``per_pair=True`` puts each pair's values along a leading ``"pair"`` axis.
    ``checkpoint``: a directory (or a `jaxinterp.engine.checkpoint.SweepCheckpoint`):
    finished chunks of senders are saved there and a later call with the same inputs
    (model, prompts, metric, receivers, senders, positions, chunking) loads them instead
    of computing them again; other inputs are refused (`ResumeError`). With several
    bands, each keeps its chunks in a subdirectory ``band-<first>-<end>``.
    """
    from ..engine.sweep import sweep

    cfg = model.cfg
    base_tokens, source_tokens, metric, reads = _pairs(
        model, base_tokens, source_tokens, metric, attention_mask, per_pair
    )
    recv = tuple(_receiver(n, cfg) for n in _names(receivers))
    locs, shape, dims = _sender_grid(cfg, senders)
    caches = _step_one(model, base_tokens, source_tokens)  # once, for every band and chunk
    positions = _pos(sender_pos), _pos(receiver_pos)
    cells = _band_cells(
        cfg.n_layers, locs, recv, senders, freeze_mlps, metric, reads, per_pair, bands, base_tokens.ndim == 2
    )
    parts = []
    for lo, hi, cell, band in cells:  # senders are layer-major: the bands' results concatenate in order
        ckpt = _band_checkpoint(
            checkpoint,
            lo,
            hi,
            len(cells),
            function=cell,
            locations=band,
            model=model,
            base=base_tokens,
            source=source_tokens,
            sender_pos=positions[0],
            receiver_pos=positions[1],
        )
        parts.append(
            np.asarray(
                sweep(cell, band, model, base_tokens, caches, *positions, batch_size=batch_size, checkpoint=ckpt)
            )
        )
    receivers_label = ", ".join(_names(receivers))
    vals = np.concatenate(parts)
    if per_pair:  # [sender, pair] -> [pair, *shape]
        out = np.moveaxis(vals, -1, 0).reshape((vals.shape[-1], *shape))
        return LabelledArray(out, ("pair", *dims), name=f"path patching -> {receivers_label}, per pair")
    return LabelledArray(vals.reshape(shape), dims, name=f"path patching -> {receivers_label}")


def path_patch_cost(
    model,
    base_tokens: Int[Array, "... pos"],
    source_tokens: Int[Array, "... pos"],
    metric: Metric,
    receivers: Names,
    *,
    senders: str = "heads",
    freeze_mlps: bool = True,
    batch_size: Optional[int] = None,
    bands: Optional[int] = None,
) -> dict[str, float]:
    """Matmul FLOPs of `path_patch_sweep` with these arguments, in forward passes (one
    forward pass computing every logit, as a TransformerLens forward does), counted from
    its jaxpr (`jaxinterp.causal.attribution.cost.matmul_flops`; runs nothing).

    Returns ``{"sweep", "forward"}`` (FLOPs), ``"forward_passes"`` (their ratio),
    ``"n_senders"`` and ``"per_sender"``: forward passes per evaluated sender. Each
    sender runs step 2 from its band's first layer (``bands`` as in `path_patch_sweep`)
    up to the last receiver's layer, less what XLA drops as dead (frozen heads' and
    MLPs' own computation), and step 3 from the first receiver's layer; step 1 (the
    base and source runs) does not depend on the sender and is computed once."""
    from ..engine.sweep import sweep
    from .attribution.cost import matmul_flops

    cfg = model.cfg
    base_tokens, source_tokens, metric, reads = _pairs(model, base_tokens, source_tokens, metric, None, False)
    recv = tuple(_receiver(n, cfg) for n in _names(receivers))
    locs, shape, _ = _sender_grid(cfg, senders)
    one_base = base_tokens.reshape(-1, base_tokens.shape[-1])[0]
    forward = matmul_flops(lambda m, t: m.run(t)[0], model, one_base)
    total = matmul_flops(_step_one, model, base_tokens, source_tokens)
    caches = jax.eval_shape(_step_one, model, base_tokens, source_tokens)
    for _, _, cell, band in _band_cells(
        cfg.n_layers, locs, recv, senders, freeze_mlps, metric, reads, False, bands, base_tokens.ndim == 2
    ):
        total += matmul_flops(
            lambda m, b, c, cell=cell, band=band: sweep(cell, band, m, b, c, None, None, batch_size=batch_size),
            model,
            base_tokens,
            caches,
        )
    n_senders = int(np.prod(shape))
    passes = total / forward
    return {
        "sweep": float(total),
        "forward": float(forward),
        "forward_passes": passes,
        "n_senders": n_senders,
        "per_sender": passes / n_senders,
    }


DEFAULT_BANDS = 4


def layer_bands(n_layers: int, bands: Optional[int], freeze_mlps: bool, batch: bool) -> list[tuple[int, int]]:
    """``bands`` ranges of consecutive layers ``(first, end)`` covering ``0 .. n_layers-1``,
    as even as can be. None: `DEFAULT_BANDS` for a batch of pairs with reacting MLPs,
    else 1 (see `path_patch_sweep`)."""
    if bands is None:
        bands = 1 if freeze_mlps or not batch else DEFAULT_BANDS
    if isinstance(bands, bool) or not isinstance(bands, (int, np.integer)) or bands < 1:
        raise PathPatchingError(f"bands must be a positive int (bands of sender layers), got {bands!r}")
    edges = np.linspace(0, n_layers, min(int(bands), n_layers) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _band_cells(n_layers, locs, recv, senders, freeze_mlps, metric, reads, per_pair, bands, batch) -> list:
    """``(first, end, cell, locations)`` of each band of sender layers (`layer_bands`):
    the band's `_SweepCell`, whose step 2 starts at ``first``, and its senders."""
    out = []
    for lo, hi in layer_bands(n_layers, bands, freeze_mlps, batch):
        cell = _SweepCell(recv, senders, freeze_mlps, metric, reads, per_pair, start=lo)
        band = jax.tree_util.tree_map(lambda a: a[(locs["layer"] >= lo) & (locs["layer"] < hi)], locs)
        out.append((lo, hi, cell, band))
    return out


def _band_checkpoint(checkpoint, first: int, end: int, n_bands: int, **named):
    """One band's checkpoint (the sweep's own with one band, else a subdirectory), keyed
    on ``named`` inputs: the prompts' tokens rather than the sweep's operand of step 1's
    caches, float arrays that another backend or thread count may round differently,
    which would refuse a faithful resume."""
    from ..engine.checkpoint import SweepCheckpoint, as_checkpoint

    checkpoint = as_checkpoint(checkpoint)
    if checkpoint is None:
        return None
    if n_bands > 1:
        checkpoint = SweepCheckpoint(checkpoint.directory / f"band-{first}-{end}", checkpoint.key, checkpoint.inputs)
    if checkpoint.inputs:  # named by the caller
        return checkpoint
    return checkpoint.with_inputs(("function",), **named)


def _sender_grid(cfg, senders: str):
    """The sweep's sender locations, result shape and dims."""
    if senders == "heads":
        layers, heads = np.meshgrid(np.arange(cfg.n_layers), np.arange(cfg.n_heads), indexing="ij")
        locs = {"layer": jnp.asarray(layers.reshape(-1)), "head": jnp.asarray(heads.reshape(-1))}
        shape, dims = (cfg.n_layers, cfg.n_heads), ("layer", "head")
    elif senders == "mlps":
        if not cfg.has_mlp:
            raise PathPatchingError("senders='mlps': this model has no MLPs")
        locs = {"layer": jnp.arange(cfg.n_layers)}
        shape, dims = (cfg.n_layers,), ("layer",)  # type: ignore[assignment]
    else:
        raise PathPatchingError(f"senders must be 'heads' or 'mlps', got {senders!r}")
    return locs, shape, dims


# ------------------------------------------------------------ circuit hypotheses


class _KLDissimilarity(eqx.Module):
    """`kl_dissimilarity`'s callable: a module, so that two of them with one ``pos`` are
    equal and `evaluate_hypothesis` reuses its compiled program (a fresh closure per call
    compiled anew each time)."""

    pos: int = eqx.field(static=True)

    def __call__(self, a, b):
        la = jax.nn.log_softmax(a[self.pos].astype(jnp.float32))
        lb = jax.nn.log_softmax(b[self.pos].astype(jnp.float32))
        return jnp.sum(jnp.exp(la) * (la - lb))


class _MetricDissimilarity(eqx.Module):
    """`metric_dissimilarity`'s callable: the metric is a field (its arrays data), so the
    compiled program is shared between calls, as with `_KLDissimilarity`."""

    metric: Metric

    def __call__(self, a, b):
        return jnp.abs(self.metric(a) - self.metric(b))


def kl_dissimilarity(pos: int = -1) -> Callable:
    """``delta(model_logits, hypothesis_logits) = KL(model || hypothesis)`` of the next-token
    distributions at ``pos``."""
    return _KLDissimilarity(int(pos))


def metric_dissimilarity(metric: Metric) -> Callable:
    """``delta(a, b) = |metric(a) - metric(b)|``."""
    return _MetricDissimilarity(metric)


@dataclasses.dataclass
class HypothesisResult:
    """``aue``: the averaged unexplained effect; ``per_pair``: ``delta`` per (reference,
    counterfactual) pair; ``important``: the node names of S."""

    aue: float
    per_pair: np.ndarray
    important: list


def _important_masks(cfg, important: Iterable[str]):
    heads = np.zeros((cfg.n_layers, cfg.n_heads), bool)
    mlps = np.zeros((cfg.n_layers,), bool)
    for name in important:
        comp = parse_component(name, cfg)
        if comp.kind == "head" and comp.input is None:
            heads[comp.layer, comp.index] = True
        elif comp.kind == "kv_head" and comp.input is None:
            # A key/value head acts only through the query heads that read it.
            group = cfg.n_heads // cfg.n_kv_heads
            heads[comp.layer, comp.index * group : (comp.index + 1) * group] = True
        elif comp.kind == "mlp":
            mlps[comp.layer] = True
        elif comp.kind in ("embed", "logits"):
            continue  # inputs and outputs are always part of the graph
        else:
            raise PathPatchingError(
                f"important node {name!r}: nodes are heads ('a3.h2'), key/value heads ('a3.kv1') and MLPs ('m3')"
            )
    return heads, mlps


@eqx.filter_jit
def _hypothesis_deltas(model, refs, cfs, heads, mlps, dissimilarity):
    cfg = model.cfg
    names = frozenset(["attn.z"] + (["mlp_out"] if cfg.has_mlp else []))

    def one(ref, cf):
        model_logits = model.forward(ref, None)[0]
        cf_cache = model.forward(cf, None, names)[1]
        # Nodes outside S are computed on the counterfactual: their outputs come from its run.
        ivs = [Patch("attn.z", cf_cache["attn.z"], layer=l, head=~heads[l]) for l in range(cfg.n_layers)]
        if cfg.has_mlp:
            ivs.append(Patch("mlp_out", cf_cache["mlp_out"], layer=~mlps))
        return dissimilarity(model_logits, model.forward(ref, ivs)[0])

    return jax.vmap(one)(refs, cfs)


def evaluate_hypothesis(
    model,
    important: Iterable[str],
    reference_tokens: Int[Array, "... pos"],
    counterfactual_tokens: Int[Array, "... pos"],
    dissimilarity: Optional[Callable] = None,
    *,
    metric: Optional[Metric] = None,
) -> HypothesisResult:
    """The averaged unexplained effect of the hypothesis that only ``important`` nodes
    matter, over the pairs ``D = zip(reference_tokens, counterfactual_tokens)``.

    Args:
        important: node names (heads ``"a3.h2"``, MLPs ``"m3"``); e.g.
            ``EdgeAttribution.circuit(k).nodes``. Every other head and MLP gets its output
            from the counterfactual run. A key/value head (``"a3.kv1"``, grouped-query
            attention) stands for the query heads that read it.
        reference_tokens, counterfactual_tokens: int ``[batch, pos]`` (or ``[pos]``).
        dissimilarity: ``delta(model_logits, hypothesis_logits) -> scalar``; default
            ``|metric(a) - metric(b)|`` if ``metric`` is given, else KL at the last position.

    Returns:
        `HypothesisResult` with ``aue = mean(delta)`` and the per-pair values.
    """
    cfg = model.cfg
    refs, cfs = _pair(model, reference_tokens, counterfactual_tokens)
    if refs.ndim == 1:
        refs, cfs = refs[None], cfs[None]
    important = list(important)
    heads, mlps = _important_masks(cfg, important)
    if dissimilarity is None:
        dissimilarity = metric_dissimilarity(metric) if metric is not None else kl_dissimilarity()
    deltas = np.asarray(_hypothesis_deltas(model, refs, cfs, jnp.asarray(heads), jnp.asarray(mlps), dissimilarity))
    return HypothesisResult(float(deltas.mean()), deltas, important)
