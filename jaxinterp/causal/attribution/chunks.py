"""Attribution over a dataset of prompt pairs, ``batch_size`` pairs at a time, with
finished chunks optionally checkpointed to a directory and resumed after a crash.

Shared by `attribution_patch` and `edge_attribution_patch`. The pairs (`PromptPairs`)
are cut into chunks of ``k = min(batch_size, n_pairs)`` pairs (``batch_size`` None: one
chunk of every pair). The last chunk is padded to ``k`` by repeating the last pair with
weight 0, so every chunk has one shape and one compiled program runs them all (the
padding costs at most ``k - 1`` pairs' work, whose results are dropped). A chunk returns
its pairs' results; without ``per_pair`` their weighted sum (padding weight 0) is taken
on the host, in float64, and that sum is what a checkpoint saves; the mean over the
dataset is the sum over chunks divided by the number of pairs, i.e. the
pair-count-weighted mean of the chunk means. (The program returns each pair's results
either way, so the mean and ``per_pair`` share one compiled program.)

Chunks run one call each through `jaxinterp.engine.checkpoint.run_checkpointed`: one
log line per chunk (logger ``jaxinterp.checkpoint``) and, with ``progress``, a tqdm bar
with its ETA. With a checkpoint each finished chunk is saved as it finishes and a
resumed run loads it instead of computing it again; the manifest is keyed on the
technique, the model, both prompts, the attention mask, the metric, the direction, the
batch size, ``per_pair`` and the technique's own settings, and any difference raises
`ResumeError` naming it.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ...core.errors import AttentionMaskError, PairBatchError
from ...core.pair_metrics import PairAt, PairMetric
from ...engine.checkpoint import as_checkpoint, run_checkpointed
from ..pairs import PromptPairs, is_batch, prompt_pairs

__all__ = ["run_pairs", "pair_chunks", "dataset_pairs"]


def dataset_pairs(model, clean_tokens, corrupted_tokens, metric, attention_mask, checkpoint) -> Optional[PromptPairs]:
    """The inputs as a checked dataset of pairs (`jaxinterp.causal.pairs.prompt_pairs`),
    or None when they are one pair (``[pos]`` tokens, one metric, no mask).
    ``checkpoint`` needs a dataset: one pair is one forward and backward pass, with
    nothing to resume (give ``[1, pos]`` tokens to save it anyway)."""
    if not is_batch(clean_tokens, corrupted_tokens, metric, attention_mask):
        if checkpoint is not None:
            raise PairBatchError(
                "checkpoint= saves the chunks of a dataset of pairs (clean/corrupted tokens [batch, pos]); these are "
                "one pair ([pos] tokens), one forward and backward pass with nothing to resume: drop checkpoint=, or "
                "give [1, pos] tokens to save the result anyway"
            )
        return None
    pairs = prompt_pairs(model, clean_tokens, corrupted_tokens, metric, attention_mask)
    if pairs.attention_mask is not None and not model.cfg.causal:
        raise AttentionMaskError(
            "attention_mask (padded pairs) needs a causal model: padding would change a bidirectional model's "
            "activations; give equal-length prompts"
        )
    return pairs


def pair_chunks(n_pairs: int, batch_size: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(index, weight)``, each ``[n_chunks, k]``: the pair each slot of each chunk
    holds (the last chunk padded with the last pair) and its weight (1 real, 0 padding)."""
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1
    ):
        raise PairBatchError(
            f"batch_size must be a positive number of pairs (or None: all at once), got {batch_size!r}"
        )
    k = n_pairs if batch_size is None else min(int(batch_size), n_pairs)
    n_chunks = -(-n_pairs // k)
    slots = np.arange(n_chunks * k)
    index = np.minimum(slots, n_pairs - 1).reshape(n_chunks, k).astype(np.int32)
    weight = (slots < n_pairs).reshape(n_chunks, k).astype(np.float32)
    return index, weight


@eqx.filter_jit
def _chunk(one, metric: PairMetric, reads, base, target, index):
    # ``one(base [pos], target [pos], metric)``: one pair's results (a pytree of arrays),
    # each pair with its own metric; ``reads``: the union over pairs, static. Per pair
    # ``[k, ...]`` whether or not the caller wants the mean: one program either way.
    return jax.vmap(lambda b, t, i: one(b, t, PairAt(metric, i, reads)))(base, target, index)


def _weighted_sum(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``sum_i weight[i] x[i]`` on the host, accumulated in float64 (deterministic:
    numpy's pairwise sum, no BLAS), as float32."""
    w = weight.astype(np.float64).reshape((-1,) + (1,) * (x.ndim - 1))
    return (x.astype(np.float64) * w).sum(0).astype(np.float32)


def run_pairs(
    one: Callable,
    model,
    pairs: PromptPairs,
    direction: str,
    *,
    batch_size: Optional[int],
    per_pair: bool,
    checkpoint,
    progress: bool,
    technique: str,
    settings: dict[str, Any],
) -> Any:
    """``one`` (a `jax.tree_util.Partial` of a module-level function, so its compiled
    program is reused across calls: ``one(base [pos], target [pos], metric) -> pytree``)
    over every pair, in chunks of ``batch_size`` pairs. Returns the mean over pairs, or
    with ``per_pair`` each pair's results stacked ``[n_pairs, ...]`` (numpy).

    ``direction``: ``"denoising"`` runs base = corrupted, target = clean; ``"noising"``
    the other way. ``checkpoint``: None, a directory or a `SweepCheckpoint`; keyed on
    ``technique``, ``model``, the pairs, ``direction``, the chunking and ``settings``
    (everything else that decides the values)."""
    clean, corrupted = np.asarray(pairs.clean), np.asarray(pairs.corrupted)
    base, target = (corrupted, clean) if direction == "denoising" else (clean, corrupted)
    index, weight = pair_chunks(pairs.n_pairs, batch_size)
    n_chunks, k = index.shape
    chunks = {"base": base[index], "target": target[index], "index": index, "weight": weight}
    reads = pairs.metric.reads

    def compute(c):
        out = _chunk(one, pairs.metric, reads, c["base"][0], c["target"][0], c["index"][0])
        if per_pair:
            return jax.tree_util.tree_map(lambda x: np.asarray(x)[None], out)
        return jax.tree_util.tree_map(lambda x: _weighted_sum(np.asarray(x), c["weight"][0])[None], out)

    def shape_of(c):  # `compute`'s output shapes, traceable
        out = _chunk(one, pairs.metric, reads, c["base"][0], c["target"][0], c["index"][0])
        return jax.tree_util.tree_map(lambda x: (x if per_pair else x.astype(jnp.float32).sum(0))[None], out)

    store = None
    checkpoint = as_checkpoint(checkpoint)
    if checkpoint is not None:
        keyed = checkpoint.with_inputs(
            technique=technique,
            model=model,
            **{"clean prompts": pairs.clean, "corrupted prompts": pairs.corrupted},
            **{"attention mask": pairs.attention_mask},
            metric=pairs.metric,
            direction=direction,
            **{"batch size": k, "per pair": per_pair},
            **settings,
        )
        store = keyed.open(n_chunks, (pairs.n_pairs, k, pairs.n_pos))
    stacked = run_checkpointed(compute, chunks, store, 1, progress, technique, shape_of)
    if per_pair:
        return jax.tree_util.tree_map(lambda x: x.reshape((n_chunks * k,) + x.shape[2:])[: pairs.n_pairs], stacked)
    return jax.tree_util.tree_map(lambda x: (x.astype(np.float64).sum(0) / pairs.n_pairs).astype(np.float32), stacked)
