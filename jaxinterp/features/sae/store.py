"""Activation stores: deterministic, seeded streams of training batches.

A store is cut into *fills* (a buffer's worth of activation vectors, ``fill_size``
tokens). Fill ``i`` is a pure function of ``(seed, i)``: which contexts it runs and how
its tokens are shuffled. So the data position of a training run is just its step count,
and a resumed run sees exactly the batches an uninterrupted one would.

- `ModelStore`: runs a model over token contexts in jit-compiled batches (the model is
  an argument of the compiled function, never a constant) and reads the activations at
  one or two sites of one layer (input, and a different target for transcoders).
- `ArrayStore`: activations already in memory (tests, synthetic data, re-use).
"""

from __future__ import annotations

import abc
from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .errors import SAEError

__all__ = ["ActivationStore", "ModelStore", "ArrayStore", "model_activations"]


class ActivationStore(abc.ABC):
    """``fill_size`` tokens per fill; `fill` gives ``(inputs [fill_size, d_in], targets
    [fill_size, d_out])`` (targets is inputs for an autoencoder)."""

    fill_size: int
    seed: int

    @abc.abstractmethod
    def fill(self, index: int) -> tuple[Array, Array]:
        """Fill ``index``'s activations, in a fixed (unshuffled) order."""

    def batches(
        self, index: int, batch_size: int
    ) -> tuple[Float[Array, "n batch d_in"], Float[Array, "n batch d_out"]]:
        """Fill ``index`` shuffled with a key folded from ``(seed, index)`` and cut into
        ``fill_size // batch_size`` batches (a remainder is dropped)."""
        n = self.fill_size // batch_size
        if n < 1:
            raise SAEError(f"batch_size={batch_size} is larger than the store's fill of {self.fill_size} tokens")
        x, y = self.fill(index)
        perm = jax.random.permutation(jax.random.fold_in(jax.random.key(self.seed), index), x.shape[0])[
            : n * batch_size
        ]
        shape = lambda a: a[perm].reshape(n, batch_size, a.shape[-1])
        return shape(x), (shape(y) if y is not x else None)


class ArrayStore(ActivationStore):
    """Activations in memory, ``inputs [n, d_in]`` (and ``targets [n, d_out]``), cut into
    fills of ``fill_size`` rows (fill ``i`` uses rows of block ``i mod n_fills``)."""

    def __init__(self, inputs, targets=None, *, fill_size: Optional[int] = None, seed: int = 0):
        self.inputs = jnp.asarray(inputs, jnp.float32)
        if self.inputs.ndim != 2:
            raise SAEError(f"ArrayStore inputs must be [n_tokens, d_in], got shape {self.inputs.shape}")
        self.targets = None if targets is None else jnp.asarray(targets, jnp.float32)
        if self.targets is not None and (self.targets.ndim != 2 or self.targets.shape[0] != self.inputs.shape[0]):
            raise SAEError(
                f"ArrayStore targets must be [n_tokens={self.inputs.shape[0]}, d_out], got {self.targets.shape}"
            )
        self.fill_size = int(fill_size or self.inputs.shape[0])
        if not 0 < self.fill_size <= self.inputs.shape[0]:
            raise SAEError(f"fill_size must be in [1, {self.inputs.shape[0]}], got {fill_size}")
        self.n_fills = self.inputs.shape[0] // self.fill_size
        self.seed = seed

    def fill(self, index):
        start = (index % self.n_fills) * self.fill_size
        x = self.inputs[start : start + self.fill_size]
        return x, (x if self.targets is None else self.targets[start : start + self.fill_size])


@eqx.filter_jit
def model_activations(
    model, tokens: Int[Array, "batch pos"], names: frozenset, layer: int
) -> dict[str, Float[Array, "batch pos d"]]:
    """Activations at short site ``names`` of ``layer`` for a batch of contexts (one
    compiled program per shape; the model is traced, not constant-folded). Runs layers
    ``0..layer`` only: nothing above the site's layer or the unembedding is computed."""

    def one(t):
        _, cache = model.run(t, cache=names, layers=(0, layer + 1), readout=None)
        return {n: cache[n][layer] for n in names}

    return jax.vmap(one)(tokens)


class ModelStore(ActivationStore):
    """Activations of ``model`` at ``site`` (and ``target_site``) of ``layer`` over token
    ``contexts [n_contexts, context_len]``.

    Contexts are put in a seeded order once; fill ``i`` runs block ``i mod n_fills`` of
    ``contexts_per_fill`` contexts, ``model_batch`` contexts per compiled call, and
    drops position 0 when ``skip_first`` (the BOS position: its residual norm is an
    outlier that would dominate the reconstruction loss). ``keep_fills`` keeps computed
    fills in host memory, so later epochs (and a benchmark's repeats) do not rerun the model.
    """

    def __init__(
        self,
        model,
        contexts,
        site: str,
        layer: int,
        *,
        target_site: Optional[str] = None,
        contexts_per_fill: int = 64,
        model_batch: int = 8,
        skip_first: bool = True,
        seed: int = 0,
        keep_fills: bool = False,
    ):
        contexts = np.asarray(contexts)
        if contexts.ndim != 2 or not np.issubdtype(contexts.dtype, np.integer):
            raise SAEError(f"contexts must be int [n_contexts, context_len], got {contexts.dtype} {contexts.shape}")
        if not 0 <= layer < model.cfg.n_layers:
            raise SAEError(f"layer must be in [0, {model.cfg.n_layers}), got {layer}")
        if contexts_per_fill % model_batch:
            raise SAEError(f"contexts_per_fill={contexts_per_fill} must be a multiple of model_batch={model_batch}")
        if contexts.shape[0] < contexts_per_fill:
            raise SAEError(f"{contexts.shape[0]} contexts are fewer than contexts_per_fill={contexts_per_fill}")
        self.model, self.layer, self.seed = model, layer, seed
        self.site = model.resolve_names([site])
        self.input_name = next(iter(self.site))
        self.target_name = self.input_name if target_site is None else next(iter(model.resolve_names([target_site])))
        self.names = frozenset({self.input_name, self.target_name})
        order = np.random.default_rng(seed).permutation(contexts.shape[0])
        self.contexts = contexts[order]
        self.contexts_per_fill, self.model_batch, self.skip_first = contexts_per_fill, model_batch, skip_first
        self.n_fills = contexts.shape[0] // contexts_per_fill
        per_context = contexts.shape[1] - (1 if skip_first else 0)
        self.fill_size = contexts_per_fill * per_context
        self.keep_fills = keep_fills
        self._kept: dict[int, tuple] = {}

    def fill(self, index):
        block = index % self.n_fills
        if block in self._kept:
            return self._kept[block]
        rows = self.contexts[block * self.contexts_per_fill : (block + 1) * self.contexts_per_fill]
        xs, ys = [], []
        for start in range(0, rows.shape[0], self.model_batch):
            acts = model_activations(
                self.model, jnp.asarray(rows[start : start + self.model_batch]), self.names, self.layer
            )
            first = 1 if self.skip_first else 0
            xs.append(acts[self.input_name][:, first:].reshape(-1, acts[self.input_name].shape[-1]))
            ys.append(acts[self.target_name][:, first:].reshape(-1, acts[self.target_name].shape[-1]))
        x = jnp.concatenate(xs).astype(jnp.float32)
        y = x if self.target_name == self.input_name else jnp.concatenate(ys).astype(jnp.float32)
        if self.keep_fills:
            self._kept[block] = (x, y)
        return x, y
