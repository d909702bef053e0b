"""`activation_patch`: activation patching sweeps over any site and any axes.

The TransformerLens convention: activations of the clean run are patched, one
location at a time, into the corrupted run (``direction="denoising"``), and the metric
of each patched run is recorded. ``direction="noising"`` patches corrupted activations
into the clean run instead.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from ...core.errors import PairBatchError, PromptPairError
from ...core.labelled import LabelledArray
from ...core.metrics import as_metric, custom
from ...core.readout import readout_for
from ...core.sites import POSITION_DIMS, layer_site_dims
from ...engine.checkpoint import as_checkpoint
from ...loading.tokenizer import Tokenizer
from ...model.transformer import check_tokens
from ..pairs import is_batch, pair_axis_mean, prompt_pairs
from .engines import engine_for
from .fast import CachedRuns, cached_runs
from .locations import FIELD_DIMS, PatchGrid, PatchingError, patch_grid

POSITION_AXES = POSITION_DIMS + ("dest", "src")  # TransformerLens calls query/key positions dest/src


def activation_patch(
    model,
    clean_tokens,
    corrupted_tokens,
    metric: Callable,
    site: str = "resid_pre",
    over: Sequence[str] = ("layer", "pos"),
    *,
    direction: str = "denoising",
    layer: Optional[int] = None,
    pos: Optional[int] = None,
    head: Optional[int] = None,
    neuron: Optional[int] = None,
    key_pos: Optional[int] = None,
    expert: Optional[int] = None,
    engine="auto",
    method: Optional[str] = None,
    shortcuts: bool = False,
    batch_size: Optional[int] = None,
    progress: bool = False,
    quick_compile: Optional[bool] = None,
    tokenizer=None,
    str_tokens: Optional[Sequence[str]] = None,
    mesh=None,
    interventions: Optional[Sequence] = None,
    checkpoint=None,
    attention_mask=None,
    per_pair: bool = False,
) -> LabelledArray:
    """Patch one location at a time and record ``metric`` of each patched run.

    ``clean_tokens`` / ``corrupted_tokens``: int ``[pos]`` of the same length, or a
    dataset of pairs ``[batch, pos]`` (see below).
    ``metric(logits [pos, d_vocab]) -> scalar`` of one example (see `jaxinterp.core.metrics`),
    or with a batch of pairs one metric per pair (a `PairMetric`,
    `jaxinterp.core.pair_metrics`: e.g. ``pair_logit_diff(io_ids, s_ids, pos=last)``).
    ``site``: a per-layer site, short (``"resid_pre"``, ``"attn.z"``) or full name.
    ``over``: the axes swept, one patch per combination, in the result's axis order:
    ``"layer"``, ``"pos"``, ``"head"``, ``"neuron"``, ``"expert"``, and for attention
    patterns ``"dest"`` / ``"src"`` (query / key position). Axes of the site that are not
    swept are patched entirely, unless fixed with ``layer=``, ``pos=``, ``head=``,
    ``neuron=``, ``key_pos=``, ``expert=`` (one index each). Examples::

        activation_patch(m, clean, corrupt, metric)                         # [layer, pos]
        activation_patch(m, clean, corrupt, metric, "attn.z", ("layer", "head"))   # every pos
        activation_patch(m, clean, corrupt, metric, "attn.z", ("layer", "pos", "head"))
        activation_patch(m, clean, corrupt, metric, "attn.pattern", ("layer", "head", "dest", "src"))
        activation_patch(m, clean, corrupt, metric, "mlp.post", ("layer", "neuron"), pos=-1)

    ``direction``: ``"denoising"`` (clean into corrupted; TransformerLens's convention)
    or ``"noising"`` (corrupted into clean).
    ``engine``: a `PatchingEngine` (`Fast(...)`, `Plain(...)`, which own the batch size,
    shortcuts, mesh and compile options), or ``"fast"`` (prefix and position-suffix reuse,
    packed tokens; needs causal attention), ``"plain"`` (one vmapped full forward per
    patch; any model), ``"auto"`` (fast where it applies). Both give the same numbers.
    ``method``: the older name of ``engine`` (strings only). The keywords below build
    the engine when ``engine`` is a string (kept for code written before engine objects).
    ``shortcuts``: opt-in, metric- and data-aware savings: logits only for the token ids
    in ``metric.reads``, the last layer only at the read positions, and patches skipped
    where the clean and corrupted activations agree exactly (their value is the
    unpatched run's metric). Logits are always computed only at the positions in
    ``metric.reads`` when the metric declares them (it sees NaN elsewhere).
    ``batch_size``: patches per chunk (memory is that of one chunk); default: as many
    as fit in 512 MiB of activations. ``progress``: a progress bar over chunks.
    ``quick_compile`` (fast engine, CPU): skip XLA's LLVM optimisation, compiling in a
    fraction of a second instead of ~1.5 s but running ~1.5x slower; ``None`` does so
    for small sweeps only.
    ``tokenizer`` (with ``to_str_tokens`` or ``decode``) or ``str_tokens``: label the
    position axes with the clean prompt's tokens.
    ``interventions``: applied before the patch in every run, and to the source run
    the patched values come from (e.g. a steering vector, or an SAE spliced in with its
    error term); plain engine only, without shortcuts. Only the model's own sites are
    swept: a spliced SAE's feature activations are not sites here; patch and attribute
    them with `jaxinterp.features.sae.feature_patch` and
    `jaxinterp.features.sae.feature_attribution`.
    ``mesh``: a `jax.sharding.Mesh` to shard the patches over (its first axis; weights
    replicated): the plain engine splits each chunk's patches across the devices, the
    fast engine gives each device its share of the chunks (no progress bar then).
    ``checkpoint``: a directory (or a `jaxinterp.engine.checkpoint.SweepCheckpoint`) where
    finished chunks are saved as they finish; a later call with the same model, prompts,
    metric, site, axes and engine settings loads them instead of computing them again
    (resume after a crash), and one with other inputs is refused (`ResumeError`).

    Datasets of pairs: ``[batch, pos]`` tokens of equal length, or right-padded with an
    ``attention_mask [batch, pos]`` (1: real token, shared by a pair's two prompts; see
    `jaxinterp.causal.pairs`). Every patch runs on every pair in the same compiled
    program (the fast engine packs every pair's rows into its blocks) and the result is
    the mean over pairs, or with ``per_pair=True`` each pair's, along a leading
    ``"pair"`` axis. ``batch_size`` then counts patched runs (a patch on one pair).

    Returns a `LabelledArray` with ``dims == over``; ``np.asarray(result)`` has one axis
    per swept axis, e.g. ``[n_layers, n_pos]`` (``("pair", *over)`` with ``per_pair``).
    """
    if is_batch(clean_tokens, corrupted_tokens, metric, attention_mask):
        pairs = prompt_pairs(model, clean_tokens, corrupted_tokens, metric, attention_mask)
        clean, corrupted = pairs.clean, pairs.corrupted
    else:
        if per_pair:
            raise PairBatchError("per_pair=True needs a batch of pairs: clean/corrupted tokens [batch, pos]")
        pairs = None
    cfg = model.cfg
    if pairs is None:
        clean = _one_example(clean_tokens, cfg, "clean_tokens")
        corrupted = _one_example(corrupted_tokens, cfg, "corrupted_tokens")
    if clean.shape != corrupted.shape:
        raise PromptPairError(
            f"clean_tokens has {clean.shape[0]} positions but corrupted_tokens has {corrupted.shape[0]}: "
            "activation patching needs prompts of the same length (pad or choose same-length prompts)"
        )
    if direction not in ("denoising", "noising"):
        raise PatchingError(f"direction must be 'denoising' (clean into corrupted) or 'noising', got {direction!r}")
    if not callable(metric):
        raise PatchingError(
            f"metric must be a function of one example's logits [pos, d_vocab], got {type(metric).__name__}"
        )
    if method is not None:  # the older name of `engine`
        if engine != "auto":
            raise PatchingError("give engine= or its older name method=, not both")
        if method not in ("auto", "fast", "plain"):
            raise PatchingError(f"method must be 'auto', 'fast' or 'plain', got {method!r}")
        engine = method
    extra = tuple(interventions or ())
    engine = engine_for(
        engine,
        cfg,
        extra,
        batch_size=batch_size,
        shortcuts=shortcuts,
        progress=progress,
        quick_compile=quick_compile,
        mesh=mesh,
    )
    if extra and engine.shortcuts:
        raise PatchingError("shortcuts compare cached runs without the extra interventions: give one or the other")
    metric = as_metric(metric) if pairs is None else pairs.metric  # where a user's metric becomes a `Metric`
    n_pos = clean.shape[-1]
    fixed = dict(layer=layer, pos=pos, head=head, neuron=neuron, key_pos=key_pos, expert=expert)
    grid = patch_grid(cfg, n_pos, site, over, fixed)
    base, source = (corrupted, clean) if direction == "denoising" else (clean, corrupted)

    d_out = cfg.d_vocab if model.unembed is not None else cfg.d_model
    # With pairs, the logits read are the union of every pair's reads.
    reads_of = metric if pairs is None else custom(_declares_reads_only, reads=metric.reads)
    readout = readout_for(reads_of, n_pos, d_out, columns=engine.shortcuts, has_unembed=model.unembed is not None)
    mask = None if pairs is None else pairs.attention_mask

    runs = None
    if engine.needs_cached_runs or engine.shortcuts:
        runs = cached_runs(model, base, source, grid.site, metric, readout, mask)
    keep = _changing_patches(model.cfg, grid, runs, pairs is not None) if engine.shortcuts else None

    if keep is not None and not keep.any():
        values = np.full(keep.shape, np.nan)
    elif pairs is None:
        values = engine.run(model, base, source, grid, metric, readout, runs, keep, extra, as_checkpoint(checkpoint))
    else:
        values = engine.run(
            model,
            base,
            source,
            grid,
            metric,
            readout,
            runs,
            keep,
            extra,
            as_checkpoint(checkpoint),
            attention_mask=mask,
        )

    if keep is not None:
        base_metric = np.asarray(runs.metric)
        values = np.where(keep, values, base_metric if pairs is not None else float(base_metric[0]))
    if readout.restricted and np.isnan(values).any():
        raise PatchingError(
            f"the metric returned NaN: it reads logits outside what metric.reads declares "
            f"(positions {list(readout.positions)}"
            + (f", token ids {list(readout.columns)})" if readout.columns is not None else ")")
            + "; fix metric.reads or drop it to compute every logit"
        )
    name = f"{grid.site} {direction} ({' x '.join(grid.dims)})"
    dims, values = grid.dims, values.reshape(grid.shape + (() if pairs is None else (pairs.n_pairs,)))
    if pairs is not None:
        values = pair_axis_mean(values, per_pair)
        name += f", {'each' if per_pair else 'mean'} of {pairs.n_pairs} pairs"
        dims = ("pair",) + dims if per_pair else dims
    result = LabelledArray(values, dims, None, name)
    strings = _token_strings(clean if pairs is None else clean[0], tokenizer, str_tokens)
    return result if strings is None else result.with_token_labels(strings, POSITION_AXES)


def _declares_reads_only(logits):
    raise AssertionError("only read for its declared reads")  # never called: stands in for a PairMetric's reads


def _one_example(tokens, cfg, what: str):
    tokens = check_tokens(tokens, cfg)
    if tokens.ndim != 1:
        raise PatchingError(
            f"{what} must be one prompt, int [pos]; got shape {tokens.shape} (sweep one example at a time)"
        )
    return tokens


def _changing_patches(cfg, grid: PatchGrid, runs: CachedRuns, pairs: bool = False) -> np.ndarray:
    """Which patches can change anything: where the source and base activations at the
    patched location differ (``runs.site``: both runs' activations, `cached_runs`).
    ``[n_patches]``, or with ``pairs`` ``[n_patches, pair]`` (each pair on its own)."""
    differs = np.asarray(runs.site[0]) != np.asarray(runs.site[1])  # [layer, pair, *site dims]
    differs = np.moveaxis(differs, 1, -1)  # [layer, *site dims, pair]
    if not pairs:
        differs = differs[..., 0]
    dims = ("layer",) + layer_site_dims(cfg)[grid.site]
    index = []
    for dim in dims:
        field = "layer" if dim == "layer" else next((f for f, ds in FIELD_DIMS.items() if dim in ds), None)
        index.append(grid.fields[field] if field in grid.fields else None)
    # Reduce every axis that is patched entirely, then pick each patch's entry.
    reduce_axes = tuple(i for i, ix in enumerate(index) if ix is None)
    differs = differs.any(axis=reduce_axes) if reduce_axes else differs
    return np.asarray(differs[tuple(ix for ix in index if ix is not None)], bool)


def _token_strings(clean, tokenizer, str_tokens) -> Optional[list[str]]:
    """The clean prompt's token strings from ``str_tokens`` or a tokenizer (ours, or any
    with ``decode``), or None."""
    if str_tokens is not None:
        strings = [str(t) for t in str_tokens]
    elif tokenizer is None:
        return None
    else:
        ids = [int(i) for i in np.asarray(clean)]
        strings = (
            list(tokenizer.to_str_tokens(ids))
            if isinstance(tokenizer, Tokenizer)
            else [tokenizer.decode([i]) for i in ids]
        )
    if len(strings) != clean.shape[0]:
        raise PatchingError(f"{len(strings)} token strings for a prompt of {clean.shape[0]} tokens")
    return strings
