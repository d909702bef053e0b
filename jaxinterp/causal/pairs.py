"""Datasets of clean/corrupted prompt pairs, checked once for every technique.

`activation_patch`, `attribution_patch` and `path_patch` take a batch of pairs: int
``[batch, pos]`` clean and corrupted tokens of equal length, or right-padded to one
length with an ``attention_mask [batch, pos]`` (1: real token, 0: padding after the
prompt), and a metric per pair (`jaxinterp.core.pair_metrics`) that reads each pair at
its own positions. `prompt_pairs` checks all of it on the host and names what is wrong
(`PairBatchError`, `AttentionMaskError`, `ReadPositionError`).

Right padding and causal attention: a real token never attends to the padding after
it, so the activations and logits at real positions equal those of the unpadded
prompt, and a patch at a padded position changes nothing a metric reads there.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int

from ..core.errors import AttentionMaskError, PairBatchError, PromptPairError, ReadPositionError
from ..core.pair_metrics import PairMetric, as_pair_metric
from ..model.transformer import check_tokens

__all__ = ["PromptPairs", "prompt_pairs", "is_batch", "pair_axis_mean"]


@dataclasses.dataclass(frozen=True, eq=False)
class PromptPairs:
    """A checked batch: ``clean`` / ``corrupted`` int ``[pair, pos]``, ``attention_mask``
    int32 ``[pair, pos]`` (None: no padding), ``metric`` one per pair, ``lengths
    [pair]`` the real tokens of each pair."""

    clean: Int[Array, "pair pos"]
    corrupted: Int[Array, "pair pos"]
    attention_mask: Optional[Int[Array, "pair pos"]]
    metric: PairMetric
    lengths: np.ndarray

    @property
    def n_pairs(self) -> int:
        return int(self.clean.shape[0])

    @property
    def n_pos(self) -> int:
        return int(self.clean.shape[1])


def is_batch(clean_tokens, corrupted_tokens, metric, attention_mask=None) -> bool:
    """Whether the inputs are a batch of pairs (``[batch, pos]`` tokens, a mask or a
    `PairMetric`) rather than one pair."""
    return (
        np.ndim(clean_tokens) == 2
        or np.ndim(corrupted_tokens) == 2
        or attention_mask is not None
        or isinstance(metric, PairMetric)
    )


def prompt_pairs(model, clean_tokens, corrupted_tokens, metric, attention_mask=None) -> PromptPairs:
    """Check a batch of pairs against ``model`` and return it as `PromptPairs`.

    ``clean_tokens`` / ``corrupted_tokens``: int ``[batch, pos]`` (a single ``[pos]``
    pair counts as a batch of one). ``attention_mask``: None, or ``[batch, pos]`` of 0/1,
    right-padded (each row's ones first), shared by the clean and corrupted prompt of a
    pair. ``metric``: a `PairMetric`, or one metric for every pair."""
    cfg = model.cfg
    clean, corrupted = check_tokens(clean_tokens, cfg), check_tokens(corrupted_tokens, cfg)
    clean, corrupted = jnp.atleast_2d(clean), jnp.atleast_2d(corrupted)
    if clean.shape[0] != corrupted.shape[0]:
        raise PairBatchError(
            f"clean_tokens hold {clean.shape[0]} prompts but corrupted_tokens {corrupted.shape[0]}: "
            "a batch of pairs needs one corrupted prompt per clean prompt"
        )
    if clean.shape != corrupted.shape:
        raise PromptPairError(
            f"clean_tokens have {clean.shape[1]} positions but corrupted_tokens {corrupted.shape[1]}: pad both to "
            "one length (right padding, with attention_mask) so activations can be swapped position by position"
        )
    n_pairs, n_pos = clean.shape
    mask = None
    lengths = np.full(n_pairs, n_pos)
    if attention_mask is not None:
        m = np.asarray(attention_mask)
        if m.ndim == 1 and n_pairs == 1:
            m = m[None]
        if m.shape != (n_pairs, n_pos):
            raise AttentionMaskError(
                f"attention_mask must have the tokens' shape [batch, pos] = {(n_pairs, n_pos)}, got {m.shape}"
            )
        if not np.isin(m, (0, 1)).all():
            raise AttentionMaskError("attention_mask must hold 0 (padding) and 1 (real token) only")
        lengths = m.sum(axis=1).astype(np.int64)
        right_padded = (m == (np.arange(n_pos)[None, :] < lengths[:, None])).all(axis=1)
        if not right_padded.all():
            bad = int(np.flatnonzero(~right_padded)[0])
            raise AttentionMaskError(
                f"attention_mask row {bad} is not right-padded: each prompt's real tokens (1) must come first and "
                "its padding (0) after them (pad on the right, e.g. tokenizer padding_side='right')"
            )
        if (lengths == 0).any():
            raise AttentionMaskError(f"attention_mask row {int(np.flatnonzero(lengths == 0)[0])} has no real token")
        mask = jnp.asarray(m, jnp.int32)
    try:
        metric = as_pair_metric(metric, n_pairs)
    except PairBatchError as error:
        raise PairBatchError(f"metric: {error}") from None
    check_read_positions(metric, lengths, n_pos)
    return PromptPairs(clean, corrupted, mask, metric, lengths)


def check_read_positions(metric: PairMetric, lengths: np.ndarray, n_pos: int) -> None:
    """Every position a pair's metric reads lies in its prompt: within ``n_pos`` and, with
    padding, before the pair's ``lengths`` (a padded position's logits mean nothing)."""
    pos = metric.read_positions()
    if pos is None:
        return
    outside = (pos < -n_pos) | (pos >= n_pos)
    if outside.any():
        pair = int(np.argwhere(outside)[0][0])
        raise ReadPositionError(
            f"the metric of pair {pair} reads position {int(pos[outside][0])}, outside prompts of {n_pos} "
            f"positions (allowed {-n_pos}..{n_pos - 1})"
        )
    absolute = pos % n_pos
    padded = absolute >= lengths[:, None]
    if padded.any():
        pair = int(np.argwhere(padded)[0][0])
        raise ReadPositionError(
            f"the metric of pair {pair} reads position {int(absolute[padded][0])}, which is padding (that pair has "
            f"{int(lengths[pair])} real tokens): give per-pair positions, e.g. "
            "pair_logit_diff(answer, wrong, pos=attention_mask.sum(1) - 1)"
        )


def pair_axis_mean(values: np.ndarray, per_pair: bool) -> np.ndarray:
    """``values [..., pair]`` averaged over pairs, or with the pair axis moved first."""
    return np.moveaxis(values, -1, 0) if per_pair else values.mean(axis=-1)
