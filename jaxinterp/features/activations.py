"""Activations of a labelled prompt set at one site, one vector per prompt, cached to disk.

Prompts are sorted by token length and run in batches padded to a multiple of
``pad_multiple`` (few distinct shapes, so few compiles), with an attention mask; padding
goes on the right, so with causal attention no real token ever sees it. From each
prompt one position is read (``"last"``, ``"first"``, an index, one index per prompt,
e.g. `last_entity_positions`) or the mean over its real tokens. Every layer of a
per-layer site comes out of the same pass: ``resid_post`` gives ``[layer, n, d_model]``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Optional, Sequence, Union

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int

import jaxinterp as ji
from jaxinterp.errors import JaxinterpError
from jaxinterp.sites import is_top_level

__all__ = ["Activations", "ActivationsError", "collect_activations", "last_entity_positions"]

Position = Union[str, int, Sequence[int]]


class ActivationsError(JaxinterpError):
    """A bad argument to `collect_activations`."""


@dataclasses.dataclass(frozen=True)
class Activations:
    """One activation vector per prompt.

    Attributes:
        acts: ``[layer, n, *site feature shape]`` for a per-layer short site name (e.g.
            ``[layer, n, d_model]`` for ``resid_post``), ``[n, ...]`` for a top-level site
            or a full per-layer name (``blocks.3.hook_resid_post``). float32, prompt order.
        token_ids: ``[n]`` the token id at the position read (-1 for ``"mean"``): the
            "word type" of a control task.
        lengths: ``[n]`` number of tokens of each prompt.
    """

    acts: np.ndarray
    token_ids: np.ndarray
    lengths: np.ndarray


def last_entity_positions(tokenizer, prompts: Sequence[str], entities: Sequence[str], prepend_bos=None) -> list[int]:
    """For each prompt, the index of the last token of the last occurrence of its entity
    string (tokenising the prompt up to the entity's end). `ActivationsError` if an entity
    does not occur in its prompt."""
    if len(prompts) != len(entities):
        raise ActivationsError(f"{len(prompts)} prompts but {len(entities)} entities")
    out = []
    for i, (p, e) in enumerate(zip(prompts, entities)):
        at = p.rfind(e)
        if not e or at < 0:
            raise ActivationsError(f"entity {e!r} does not occur in prompt {i}: {p!r}")
        out.append(len(tokenizer.encode(p[: at + len(e)], prepend_bos)) - 1)
    return out


def _fingerprint(model) -> str:
    """A cheap, stable hash of a model: its config and the first values of every weight."""
    h = hashlib.sha256(repr(model.cfg).encode())
    for leaf in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array)):
        a = np.asarray(leaf).reshape(-1)
        h.update(str(leaf.shape).encode())
        h.update(np.ascontiguousarray(a[:256]).tobytes())
        h.update(np.ascontiguousarray(a[-256:]).tobytes())
    return h.hexdigest()


@eqx.filter_jit
def _batch_acts(
    model,
    tokens: Int[Array, "batch pos"],
    mask: Int[Array, "batch pos"],
    index: Int[Array, " batch"],
    site: str,
    mean: bool,
    interventions,
):
    """``[batch, (layer,) ...]``: the site's activation at ``index`` (or the masked mean)."""

    def one(toks, m, i):
        _, cache = model.forward(toks, interventions, frozenset({site}), attention_mask=m)
        a = cache[site].astype(jnp.float32)
        axis = 0 if is_top_level(site) else 1  # the position axis
        if mean:
            w = m.astype(jnp.float32) / m.sum()
            return jnp.tensordot(w, a, axes=([0], [axis]))
        return jnp.take(a, i, axis=axis)

    return jax.vmap(one)(tokens, mask, index)


def collect_activations(
    model,
    tokenizer,
    prompts: Sequence[str],
    site: str = "resid_post",
    position: Position = "last",
    *,
    batch_size: int = 32,
    pad_multiple: int = 16,
    prepend_bos: Optional[bool] = None,
    cache_dir: Optional[str] = None,
    interventions: Sequence = (),
) -> Activations:
    """Run every prompt once and keep one vector per prompt at ``site``.

    Args:
        model: a `jaxinterp.Transformer`; tokenizer: its `jaxinterp.Tokenizer`.
        prompts: the texts.
        site: a short per-layer name (every layer: ``"resid_post"``, ``"mlp.post"``), a
            full name (one layer: ``"blocks.5.hook_resid_post"``) or a top-level one
            (``"embed"``). The site's first axis (after the layer) must be positions.
        position: ``"last"`` / ``"first"`` real token, ``"mean"`` over real tokens, an int
            (negative counts back from the last real token), or one int per prompt.
        batch_size: prompts per forward pass; pad_multiple: padded lengths are
            multiples of it (fewer distinct shapes, fewer compiles).
        cache_dir: if given, the result is stored there as ``acts-<hash>.npz``, keyed by
            a hash of the model, prompts, site, position and BOS setting, and read back
            on the next call with the same key (not with ``interventions``).
        interventions: applied in every run (e.g. a steering `jaxinterp.Add`); they see
            the padded batch, so position fields index padded positions.
    """
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ActivationsError("prompts must be a non-empty list of strings")
    parsed = ji.parse_site(site, model.cfg)
    if batch_size < 1 or pad_multiple < 1:
        raise ActivationsError(f"batch_size and pad_multiple must be positive, got {batch_size}, {pad_multiple}")
    per_prompt = not isinstance(position, (str, int))
    if isinstance(position, str) and position not in ("last", "first", "mean"):
        raise ActivationsError(
            f"position must be 'last', 'first', 'mean', an int or one int per prompt, got {position!r}"
        )
    if per_prompt and len(position) != len(prompts):
        raise ActivationsError(f"position gives {len(position)} indices for {len(prompts)} prompts")

    path = None
    interventions = list(interventions)
    if cache_dir is not None and not interventions:
        key = hashlib.sha256(
            json.dumps(
                {
                    "model": _fingerprint(model),
                    "prompts": list(prompts),
                    "site": site,
                    "position": position if not per_prompt else [int(p) for p in position],
                    "bos": prepend_bos,
                }
            ).encode()
        ).hexdigest()[:24]
        path = os.path.join(cache_dir, f"acts-{key}.npz")
        if os.path.isfile(path):
            with np.load(path) as f:
                return Activations(f["acts"], f["token_ids"], f["lengths"])

    encoded = [tokenizer.encode(p, prepend_bos) for p in prompts]
    lengths = np.asarray([len(e) for e in encoded])
    if lengths.min() == 0:
        raise ActivationsError(f"prompt {int(np.argmin(lengths))} encodes to no tokens")
    if lengths.max() > model.cfg.n_ctx:
        raise ActivationsError(
            f"prompt {int(np.argmax(lengths))} has {lengths.max()} tokens, more than n_ctx={model.cfg.n_ctx}"
        )
    index = _positions(position, lengths, per_prompt)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    order = np.argsort(lengths, kind="stable")
    chunks, out_order = [], []
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = int(np.ceil(lengths[rows].max() / pad_multiple) * pad_multiple)
        width = min(width, model.cfg.n_ctx)
        # A short last batch is padded with copies of its first row: one shape per width.
        full = np.concatenate([rows, np.full(batch_size - len(rows), rows[0])])
        tokens = np.full((batch_size, width), pad_id, np.int32)
        mask = np.zeros((batch_size, width), np.int32)
        for j, r in enumerate(full):
            tokens[j, : lengths[r]] = encoded[r]
            mask[j, : lengths[r]] = 1
        a = _batch_acts(
            model,
            jnp.asarray(tokens),
            jnp.asarray(mask),
            jnp.asarray(index[full]),
            parsed.name,
            position == "mean",
            interventions,
        )
        chunks.append(np.asarray(a)[: len(rows)])
        out_order.append(rows)
    acts = np.empty((len(prompts),) + chunks[0].shape[1:], np.float32)
    acts[np.concatenate(out_order)] = np.concatenate(chunks)
    if not is_top_level(parsed.name):
        acts = np.moveaxis(acts, 1, 0)  # [layer, n, ...]
        if parsed.layer is not None:
            acts = acts[parsed.layer]
    token_ids = np.full(len(prompts), -1, np.int64)
    if position != "mean":
        token_ids = np.asarray([encoded[i][index[i]] for i in range(len(prompts))])
    result = Activations(np.ascontiguousarray(acts), token_ids, lengths)
    if path is not None:
        os.makedirs(cache_dir, exist_ok=True)
        np.savez(path, acts=result.acts, token_ids=result.token_ids, lengths=result.lengths)
    return result


def _positions(position, lengths, per_prompt) -> np.ndarray:
    if position == "last" or position == "mean":
        return lengths - 1
    if position == "first":
        return np.zeros_like(lengths)
    idx = np.asarray(position if per_prompt else [position] * len(lengths), np.int64)
    idx = np.where(idx < 0, idx + lengths, idx)
    bad = (idx < 0) | (idx >= lengths)
    if bad.any():
        i = int(np.argmax(bad))
        raise ActivationsError(
            f"position {np.asarray(position).reshape(-1)[i if per_prompt else 0]} is outside prompt {i} of {lengths[i]} tokens"
        )
    return idx
