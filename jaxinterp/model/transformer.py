"""`Transformer`: one generic, intervention-native model for every supported family."""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Iterable, Optional, Union

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ..core.config import ModelConfig
from ..core.errors import ConfigError, PromptPairError, SiteError, TokenError
from ..core.readout import ALL, Readout
from ..core.sites import layer_site_dims, parse_site, to_full_name, top_level_site_dims
from .attention import Attention
from .block import Block
from .cache import ActivationCache
from .embed import Embed, PosEmbed, TokenTypeEmbed, Unembed
from .hooks import NO_HOOKS, Hooks, Plan, SiteHooks
from .kv_cache import CachedAttention, KVCache, write
from .mlp import MLP, MoE
from .norms import Norm
from .rotary import rotary_tables

Names = Union[None, str, Iterable[str], Callable[[str], bool]]


class Transformer(eqx.Module):
    """A transformer described by `ModelConfig`, with explicit interventions.

    Call it on int tokens ``[pos]`` or ``[batch, pos]``; it returns logits
    ``[..., pos, d_vocab]`` (or the final hidden state ``[..., pos, d_model]`` for an
    encoder loaded without an LM head). Block parameters are stacked over layers and
    run with `jax.lax.scan`.
    """

    cfg: ModelConfig = eqx.field(static=True)
    embed: Embed
    pos_embed: Optional[PosEmbed]
    token_type_embed: Optional[TokenTypeEmbed]
    embed_ln: Optional[Norm]
    blocks: Block
    ln_final: Optional[Norm]
    unembed: Optional[Unembed]

    # ------------------------------------------------------------------ public API

    def __call__(
        self,
        tokens: Int[Array, "... pos"],
        interventions=None,
        *,
        token_type_ids: Optional[Int[Array, "... pos"]] = None,
        attention_mask: Optional[Int[Array, "... pos"]] = None,
    ) -> Float[Array, "... pos d_vocab"]:
        """Logits for ``tokens`` after applying ``interventions`` (a list, applied in order)."""
        logits, _ = self._run(tokens, interventions, frozenset(), token_type_ids, attention_mask)
        return logits

    def run_with_cache(
        self,
        tokens: Int[Array, "... pos"],
        names: Names = None,
        interventions=None,
        *,
        token_type_ids=None,
        attention_mask=None,
        names_filter: Names = None,
    ) -> tuple[Array, ActivationCache]:
        """Logits and an `ActivationCache` of the requested sites.

        ``names``: None for every site except ``attn.result`` (computed only when asked
        for), a site name, a list of short or full names, or a predicate on short names.
        Per-layer sites come back stacked ``[layer, ...]``.
        ``names_filter``: TransformerLens's spelling, instead of ``names``: a name, a list
        of names, or a predicate on *full* names (``"blocks.3.hook_resid_pre"``); a
        per-layer site is cached (every layer of it) when the predicate accepts it at any layer.
        """
        if names_filter is not None:
            if names is not None:
                raise SiteError("pass names= or its TransformerLens alias names_filter=, not both")
            names = _full_name_filter(names_filter, self.cfg) if callable(names_filter) else names_filter
        return self._run(tokens, interventions, self.resolve_names(names), token_type_ids, attention_mask)

    def resolve_names(self, names: Names) -> frozenset:
        """Short site names to cache for a ``names`` argument of `run_with_cache`."""
        all_names = list(top_level_site_dims(self.cfg)) + list(layer_site_dims(self.cfg))
        if names is None:
            return frozenset(n for n in all_names if n != "attn.result")
        if callable(names):
            return frozenset(n for n in all_names if names(n))
        if isinstance(names, str):
            names = [names]
        return frozenset(parse_site(n, self.cfg).name for n in names)

    def first_layers(self, n_layers: int) -> "Transformer":
        """The same model with only its first ``n_layers`` blocks (then the final norm and
        unembedding): for studying early layers, and for quick runs of code written for
        the full model. ``jaxinterp.load(path, n_layers=n)`` gives the same model without
        reading the later layers' weights (the examples' ``JAXINTERP_QUICK=1`` mode)."""
        cfg = self.cfg.first_layers(n_layers)
        blocks = jax.tree_util.tree_map(lambda a: a[:n_layers], self.blocks)
        return dataclasses.replace(self, cfg=cfg, blocks=blocks)

    def with_split_qkv_input(self, split: bool = True) -> "Transformer":
        """The same model with attention reading one copy of its input per head (the
        sites ``q_input``, ``k_input``, ``v_input``; TransformerLens's
        ``set_use_split_qkv_input``), or, with ``split=False``, one shared input again.
        The numbers are unchanged until a per-head input is edited."""
        if not isinstance(split, bool):
            raise ConfigError(f"split must be True or False, got {split!r}")
        return dataclasses.replace(self, cfg=self.cfg.replace(split_qkv_input=split))

    @staticmethod
    def init(cfg: ModelConfig, key: PRNGKeyArray, dtype=jnp.float32, std: float = 0.02) -> "Transformer":
        """Random weights (normal, ``std``), unit norms, zero biases: toys and tests.

        Deterministic per ``key``, and the same weights whether ``key`` is concrete or
        traced (inside jit / vmap): every weight comes from one `jax.random` draw.
        """
        return _init_model(cfg, key, dtype, std)

    # ------------------------------------------------------ the staged forward pass

    def run(
        self,
        x: Union[Int[Array, " pos"], Float[Array, "pos d_model"]],
        interventions=None,
        *,
        layers: tuple[int, Optional[int]] = (0, None),
        cache: frozenset = frozenset(),
        readout: Optional[Readout] = ALL,
        token_type_ids: Optional[Int[Array, " pos"]] = None,
        attention_mask: Optional[Int[Array, " pos"]] = None,
        positions: Optional[Int[Array, " pos"]] = None,
        checks: bool = True,
    ) -> tuple[Array, dict[str, Array]]:
        """The one forward pass, for one example, un-jitted: every technique runs the
        model through here (inside its own jit / vmap / grad).

        ``x``: int tokens ``[pos]`` (embedded first; ``layers`` must start at 0), or the
        residual stream ``[pos, d_model]`` entering layer ``layers[0]``.
        ``layers = (start, stop)``: run blocks ``start .. stop-1`` (``stop=None``: to the end).
        ``cache``: short site names to record; per-layer sites come back stacked over the
        layers run, ``[stop - start, ...]``.
        ``readout``: after the last layer, the final norm and unembedding at
        ``readout.positions`` / ``readout.columns`` (`ALL`: full ``[pos, d_vocab]``
        logits). ``None``, or a ``stop`` before the last layer: return the residual stream
        ``[pos, d_model]`` instead (the final norm still runs if a cached or intervened
        ``ln_final`` site needs it).
        ``attention_mask [pos]``: 0 marks padding, which no position attends to.
        ``positions [pos]``: absolute positions (rotary angles, learned position
        embeddings, and what interventions' ``pos=`` / ``key_pos=`` name), e.g. for a
        left-padded row ``cumsum(attention_mask) - 1``; None: ``0 .. pos-1``.
        ``checks``: validate inputs that are traced (under jit / vmap) when the program
        runs, with `eqx.error_if`: token ids inside the vocabulary and intervention
        locations inside their axes. Concrete inputs are always checked, before tracing.
        ``checks=False`` drops the run-time checks (they cost well under 2% of a sweep:
        ``benchmarks/validation_overhead.py``); an out-of-range traced index then
        selects nothing and an out-of-vocabulary id is clamped, silently.

        Returns ``(logits or residual, {short name: activation})``.
        """
        out, recorded, _ = self._forward(
            x,
            interventions,
            layers,
            frozenset(cache),
            readout,
            token_type_ids,
            attention_mask,
            positions,
            None,
            checks,
        )
        return out, recorded

    def extend(
        self,
        tokens: Int[Array, " pos"],
        kv_cache: KVCache,
        interventions=None,
        *,
        cache: frozenset = frozenset(),
        readout: Optional[Readout] = ALL,
        attention_mask: Optional[Int[Array, " pos"]] = None,
        positions: Optional[Int[Array, " pos"]] = None,
    ) -> tuple[Array, dict[str, Array], KVCache]:
        """`run` over every layer for ``tokens`` that continue the sequence ``kv_cache``
        holds: prefill (an empty cache, the prompt) and decoding (one token at a time).
        For one example, un-jitted (vmap a batch of caches).

        The tokens' keys and values go into slots ``kv_cache.length ..`` (the cache must
        have room: under jit nothing checks, and `dynamic_update_slice` would clamp) and
        every token attends over the cache's filled slots, causally and within each
        layer's window. ``attention_mask [pos]``: 0 marks padding (given position -1,
        never attended to). ``positions``: absolute positions of the tokens; None:
        continuing after the cache's last real position, counting real tokens only (so a
        left-padded prompt's first real token is position 0, as HF's ``position_ids``).
        Interventions apply to the new tokens; their position locations name absolute
        positions (negative ones count back from the newest token), ``key_pos=`` on
        pattern sites the positions held in the cache's slots. Values of
        interventions must broadcast to the new tokens' activations (``[d_model]``
        vectors do; a ``[pos, d_model]`` value of the whole sequence does not).

        Returns ``(logits, {short name: activation of the new tokens}, the extended cache)``;
        pattern sites come back ``[layer, head, pos, max_len]`` over the cache's slots.
        """
        if not self.cfg.causal:
            raise ConfigError("extend() needs a causal model: a KV cache cannot serve bidirectional attention")
        if not jnp.issubdtype(tokens.dtype, jnp.integer) or tokens.ndim != 1:
            raise TokenError(f"extend() takes int tokens [pos] for one example, got {tokens.dtype} {tokens.shape}")
        real = jnp.ones(tokens.shape, bool) if attention_mask is None else attention_mask.astype(bool)
        if positions is None:
            positions = kv_cache.next_position() + jnp.cumsum(real) - 1
        positions = jnp.where(real, positions, -1).astype(jnp.int32)
        return self._forward(
            tokens, interventions, (0, None), frozenset(cache), readout, None, None, positions, kv_cache
        )

    def _forward(
        self,
        x,
        interventions,
        layers,
        cache: frozenset,
        readout,
        token_type_ids,
        attention_mask,
        positions,
        kv: Optional[KVCache],
        checks: bool = True,
    ):
        """`run` and `extend`: ``(out, recorded, the extended cache or None)``."""
        cfg = self.cfg
        start, stop = layers
        stop = cfg.n_layers if stop is None else stop
        if not 0 <= start <= stop <= cfg.n_layers:
            raise ConfigError(f"layers={layers} must satisfy 0 <= start <= stop <= n_layers={cfg.n_layers}")
        plan = interventions if isinstance(interventions, Plan) else Plan(cfg, interventions, checks)
        if positions is None and kv is None:  # explicit positions may legitimately select nothing
            plan.check_locations(x.shape[0])
        if attention_mask is not None and jnp.shape(attention_mask) != x.shape[:1]:
            raise TokenError(
                f"attention_mask must have one entry per position, shape {x.shape[:1]}, got {jnp.shape(attention_mask)}"
            )
        if jnp.issubdtype(x.dtype, jnp.integer):
            x = check_token_values(x, cfg, plan.checks)
        cache = frozenset(cache)
        # Hooks see positions only when they are explicit (or a KV cache's): interventions'
        # pos= then names absolute positions. A mask alone keeps column indices for them.
        hook_positions = None if positions is None else jnp.asarray(positions, jnp.int32)
        if hook_positions is not None:
            positions = hook_positions
        elif attention_mask is not None:
            # With a mask, positions count the real tokens (0 at a row's first real token), so a
            # left-padded row sees the positions it would have alone (HF: position_ids from the mask).
            positions = mask_positions(attention_mask)
        key_positions = hook_positions
        if kv is not None:
            key_positions = write(kv.positions, positions, kv.length)
        top = Hooks(cfg, plan, cache, None, hook_positions)
        if jnp.issubdtype(x.dtype, jnp.integer):
            if start != 0:
                raise ValueError(
                    f"tokens enter at layer 0; to start at layer {start}, pass that layer's residual stream"
                )
            resid = self._embed(x, top, token_type_ids, positions)
        else:
            resid = x
        key_mask = None if attention_mask is None else attention_mask.astype(bool)
        resid, layer_cache, kv = self._blocks(
            resid, plan, cache, start, stop, key_mask, positions, hook_positions, key_positions, kv
        )
        if stop < cfg.n_layers:
            return resid, {**top.recorded, **layer_cache}, kv
        out = resid
        if readout is not None:
            out = self._readout(resid, top, readout)
        elif self.ln_final is not None and (top.wants("ln_final.scale") or top.wants("ln_final.normalized")):
            self.ln_final(resid, top, "ln_final")
        return out, {**top.recorded, **layer_cache}, kv

    def forward(
        self,
        tokens: Int[Array, " pos"],
        interventions=None,
        cache_names: frozenset = frozenset(),
        *,
        token_type_ids: Optional[Int[Array, " pos"]] = None,
        attention_mask: Optional[Int[Array, " pos"]] = None,
    ) -> tuple[Array, dict[str, Array]]:
        """``run`` over every layer with full logits: ``(logits [pos, d_vocab], cache)``."""
        return self.run(
            tokens, interventions, cache=cache_names, token_type_ids=token_type_ids, attention_mask=attention_mask
        )

    def to_logits(
        self, resid: Float[Array, "... d_model"], columns: Optional[tuple] = None, hooks: SiteHooks = NO_HOOKS
    ) -> Float[Array, "... d_vocab"]:
        """Final norm, unembedding (only vocabulary ``columns``, if given) and soft-cap of
        residual-stream rows of any leading shape (positions, packed tokens, a stack of
        layers). An encoder without an LM head returns the normalised residual."""
        lead = resid.shape[:-1]
        x = resid.reshape(-1, resid.shape[-1])
        if self.ln_final is not None:
            x = self.ln_final(x, hooks, "ln_final")
        if self.unembed is None:
            return x.reshape(lead + (-1,))
        if columns is None:
            logits = self.unembed(x)
        else:
            cols = jnp.asarray(columns)
            logits = x @ self.unembed.W_U[:, cols]
            if self.unembed.b_U is not None:
                logits = logits + self.unembed.b_U[cols]
        if self.cfg.final_logit_softcap is not None:
            cap = self.cfg.final_logit_softcap
            logits = jnp.tanh(logits / cap) * cap
        return logits.reshape(lead + (-1,))

    def _readout(self, resid: Float[Array, "pos d_model"], top: Hooks, readout: Readout) -> Array:
        """Logits at the readout's rows and columns. The final norm runs on every position
        when a cached or intervened ``ln_final`` site needs them, else on the read rows only."""
        rows = None if readout.positions is None else np.asarray(readout.positions)
        if rows is not None and not (top.wants("ln_final.scale") or top.wants("ln_final.normalized")):
            return self.to_logits(resid[rows], readout.columns, top)
        logits = self.to_logits(resid, readout.columns, top)
        return logits if rows is None else logits[rows]

    def _embed(
        self,
        tokens: Int[Array, " pos"],
        hooks: Hooks,
        token_type_ids=None,
        positions: Optional[Int[Array, " pos"]] = None,
    ) -> Float[Array, "pos d_model"]:
        """Embeddings summed into the initial residual stream (sites embed, pos_embed, ...)."""
        resid = hooks("embed", self.embed(tokens))
        if self.pos_embed is not None:
            resid = resid + hooks("pos_embed", self.pos_embed(tokens.shape[0], positions))
        if self.token_type_embed is not None:
            types = jnp.zeros_like(tokens) if token_type_ids is None else token_type_ids
            resid = resid + hooks("token_type_embed", self.token_type_embed(types))
        if self.embed_ln is not None:
            resid = self.embed_ln(resid, NO_HOOKS, "embed_ln")
        return resid

    def _blocks(
        self,
        resid: Float[Array, "pos d_model"],
        plan: Plan,
        cache_names: frozenset,
        start: int,
        stop: int,
        key_mask=None,
        positions=None,
        hook_positions=None,
        key_positions=None,
        kv: Optional[KVCache] = None,
    ) -> tuple[Float[Array, "pos d_model"], dict[str, Array], Optional[KVCache]]:
        """Layers ``start..stop-1`` under `lax.scan`; the scan's outputs are the cache
        (and, given a KV cache, each layer's keys and values with the new tokens written).
        ``positions``: for rotary angles; ``hook_positions`` / ``key_positions``: what
        interventions' locations name (None: column indices)."""
        cfg = self.cfg
        blocks = self.blocks
        if (start, stop) != (0, cfg.n_layers):
            blocks = jax.tree_util.tree_map(lambda a: a[start:stop], blocks)
        rotary = rotary_tables(cfg, resid.shape[0], positions) if cfg.positional == "rotary" else None
        params, static = eqx.partition(blocks, eqx.is_array)
        key_site = "attn.rot_k" if cfg.positional == "rotary" else "attn.k"
        # With a KV cache the layer records the new keys and values (after interventions)
        # through its hooks, to write them into the cache it returns.
        kv_names = frozenset() if kv is None else frozenset({key_site, "attn.v"})

        def layer(resid, xs):
            block_params, index, layer_kv = xs
            hooks = Hooks(cfg, plan, cache_names | kv_names, index, hook_positions, key_positions)
            block = eqx.combine(block_params, static)
            if layer_kv is None:
                return block(resid, hooks, cfg, rotary, key_mask), (hooks.recorded, None)
            k, v = layer_kv
            block = dataclasses.replace(block, attn=CachedAttention(block.attn, k, v, kv.length, key_positions))
            resid = block(resid, hooks, cfg, rotary, key_mask)
            new_kv = (write(k, hooks.recorded[key_site], kv.length), write(v, hooks.recorded["attn.v"], kv.length))
            recorded = {name: x for name, x in hooks.recorded.items() if name in cache_names}
            return resid, (recorded, new_kv)

        layer_kv = None if kv is None else (kv.k, kv.v)
        resid, (recorded, new_kv) = jax.lax.scan(layer, resid, (params, jnp.arange(start, stop), layer_kv))
        if kv is not None:
            kv = KVCache(new_kv[0], new_kv[1], key_positions, kv.length + resid.shape[0])
        return resid, recorded, kv

    # ----------------------------------------------------------------- internals

    def _run(self, tokens, interventions, cache_names, token_type_ids, attention_mask):
        tokens = check_tokens(tokens, self.cfg)
        if attention_mask is not None and jnp.shape(attention_mask) != tokens.shape:
            raise TokenError(
                f"attention_mask must have the shape of the tokens {tokens.shape}, got {jnp.shape(attention_mask)}"
            )
        # Validate eagerly, where the locations are still concrete: a clear error outside jit.
        Plan(self.cfg, interventions).check_locations(tokens.shape[-1])
        # Concrete inputs are checked now, so the compiled program needs no run-time checks
        # (whose host callbacks would also keep it out of JAX's persistent compilation
        # cache); traced ones (a caller's jit) keep them.
        leaves = jax.tree_util.tree_leaves((tokens, interventions, token_type_ids, attention_mask))
        checks = any(isinstance(leaf, jax.core.Tracer) for leaf in leaves)
        logits, cache = _jit_run(
            self, tokens, _as_tuple(interventions), cache_names, token_type_ids, attention_mask, checks
        )
        return logits, ActivationCache(cache, self.cfg, batched=tokens.ndim == 2)


def _full_name_filter(predicate: Callable[[str], bool], cfg: ModelConfig) -> list[str]:
    """Short names of the sites whose full name (at any layer) ``predicate`` accepts."""
    names = [s for s in top_level_site_dims(cfg) if predicate(to_full_name(s))]
    for short in layer_site_dims(cfg):
        if any(predicate(to_full_name(short, layer)) for layer in range(cfg.n_layers)):
            names.append(short)
    return names


def _as_tuple(interventions):
    if interventions is None:
        return ()
    if isinstance(interventions, (list, tuple)):
        return tuple(interventions)
    return (interventions,)


@eqx.filter_jit
def _jit_run(model: Transformer, tokens, interventions, cache_names, token_type_ids, attention_mask, checks=True):
    def one(tokens, token_type_ids, attention_mask):
        return model.run(
            tokens,
            interventions,
            cache=cache_names,
            token_type_ids=token_type_ids,
            attention_mask=attention_mask,
            checks=checks,
        )

    if tokens.ndim == 1:
        return one(tokens, token_type_ids, attention_mask)
    axes = (0, None if token_type_ids is None else 0, None if attention_mask is None else 0)
    logits, cache = jax.vmap(one, in_axes=axes)(tokens, token_type_ids, attention_mask)
    per_layer = layer_site_dims(model.cfg)
    # Stacked per-layer sites read [layer, batch, ...], as TransformerLens stacks them.
    cache = {k: (jnp.moveaxis(v, 0, 1) if k in per_layer else v) for k, v in cache.items()}
    return logits, cache


def mask_positions(attention_mask: Int[Array, " pos"]) -> Int[Array, " pos"]:
    """Each token's position among the real tokens of its row (``cumsum(mask) - 1``, 0 on
    leading padding), as HF derives ``position_ids`` from the attention mask. Equal to
    ``arange(pos)`` on the real tokens of a right-padded or unpadded row."""
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32)) - 1, 0)


def check_pair(clean, corrupted, cfg: ModelConfig) -> tuple[Array, Array]:
    """Validate a clean/corrupted prompt pair: valid tokens (`check_tokens`) of the same
    shape, ``[pos]`` or ``[batch, pos]`` (techniques compare runs position by position)."""
    clean, corrupted = check_tokens(clean, cfg), check_tokens(corrupted, cfg)
    if clean.shape != corrupted.shape:
        raise PromptPairError(
            f"the clean and corrupted tokens must have the same shape (techniques swap activations position by "
            f"position; pad or choose same-length prompts), got {clean.shape} and {corrupted.shape}"
        )
    return clean, corrupted


def check_token_values(tokens: Int[Array, "..."], cfg: ModelConfig, checks: bool = True) -> Int[Array, "..."]:
    """``tokens`` after checking every id is in ``0 .. d_vocab-1``: concrete ids raise
    `TokenError` now; traced ones (under jit / vmap) through `eqx.error_if` when the
    program runs (embedding lookups would clamp them silently), unless ``checks=False``."""
    if isinstance(tokens, jax.core.Tracer):
        if not checks:
            return tokens
        outside = (tokens < 0) | (tokens >= cfg.d_vocab)
        return eqx.error_if(
            tokens,
            outside,
            f"token id out of range: the vocabulary has d_vocab={cfg.d_vocab} ids (0..{cfg.d_vocab - 1})",
        )
    arr = np.asarray(tokens)
    bad = (arr < 0) | (arr >= cfg.d_vocab)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise TokenError(
            f"token id {int(arr[where])} at index {where} is out of range: the vocabulary has "
            f"d_vocab={cfg.d_vocab} ids (0..{cfg.d_vocab - 1})"
        )
    return tokens


def check_tokens(tokens, cfg: ModelConfig):
    """Validate token ids: integer ``[pos]``/``[batch, pos]``, in the vocabulary, within
    the context. Values are checked when concrete (under jit, `Transformer.run` checks
    them with `eqx.error_if`)."""
    if isinstance(tokens, str):
        raise TokenError("tokens must be int ids, got a string: encode it first (jaxinterp.load_tokenizer)")
    if isinstance(tokens, (bool, int, float, np.number)):
        raise TokenError(
            f"tokens must be an int array [pos] or [batch, pos], got the scalar {tokens!r}: wrap it in a list"
        )
    if not isinstance(tokens, (jax.Array, np.ndarray)):
        try:
            tokens = np.asarray(tokens)
        except (TypeError, ValueError) as e:
            raise TokenError(f"tokens must be an int array [pos] or [batch, pos], got {type(tokens).__name__}") from e
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise TokenError(f"tokens must be integers, got dtype {tokens.dtype}")
    if tokens.ndim not in (1, 2):
        raise TokenError(f"tokens must have shape [pos] or [batch, pos], got {tokens.shape}")
    n_pos = tokens.shape[-1]
    if n_pos > cfg.n_ctx:
        raise TokenError(f"sequence of {n_pos} tokens is longer than the model's context n_ctx={cfg.n_ctx}")
    if n_pos == 0:
        raise TokenError("tokens are empty: need at least one position")
    if not isinstance(tokens, jax.core.Tracer):
        check_token_values(tokens, cfg)
    return jnp.asarray(tokens)


def _init_model(cfg: ModelConfig, key, dtype, std) -> Transformer:
    L, H, K, D, M, F = cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_model, cfg.d_mlp
    # One draw for every weight, sliced into place: the same weights for a key whether
    # it is concrete or traced (under jit / vmap / eval_shape), and one threefry program
    # per model size rather than one per weight shape (seconds of compiling on CPU).
    shapes: list[tuple[int, ...]] = []

    def normal(*shape):
        shapes.append(shape)
        return _Pending(len(shapes) - 1)

    def zeros(*shape):
        return jnp.zeros(shape, dtype)

    def norm(*lead):
        w = jnp.full(lead + (M,), 1.0 - cfg.norm_weight_offset, dtype)
        return Norm(
            w, zeros(*lead, M) if cfg.norm_bias else None, cfg.normalization, cfg.norm_eps, cfg.norm_weight_offset
        )

    def qk_norm(n_heads):  # RMSNorm over d_head, or over the whole projection (n_heads * d_head)
        width = D if cfg.qk_norm == "head" else n_heads * D
        return Norm(
            jnp.full((L, width), 1.0 - cfg.norm_weight_offset, dtype),
            None,
            "rmsnorm",
            cfg.norm_eps,
            cfg.norm_weight_offset,
        )

    attn = Attention(
        W_Q=normal(L, H, M, D),
        W_K=normal(L, K, M, D),
        W_V=normal(L, K, M, D),
        W_O=normal(L, H, D, M),
        b_Q=zeros(L, H, D) if cfg.qkv_bias else None,
        b_K=zeros(L, K, D) if cfg.qkv_bias else None,
        b_V=zeros(L, K, D) if cfg.qkv_bias else None,
        b_O=zeros(L, M) if cfg.o_bias else None,
        q_norm=qk_norm(H) if cfg.qk_norm != "none" else None,
        k_norm=qk_norm(K) if cfg.qk_norm != "none" else None,
    )
    mlp: Optional[Union[MLP, MoE]] = None
    if cfg.is_moe:
        E = cfg.n_experts
        mlp = MoE(
            W_router=normal(L, M, E), W_in=normal(L, E, M, F), W_gate=normal(L, E, M, F), W_out=normal(L, E, F, M)
        )
    elif cfg.has_mlp:
        mlp = MLP(
            W_in=normal(L, M, F),
            b_in=zeros(L, F) if cfg.mlp_bias else None,
            W_gate=normal(L, M, F) if cfg.gated_mlp else None,
            b_gate=zeros(L, F) if cfg.gated_mlp and cfg.mlp_bias else None,
            W_out=normal(L, F, M),
            b_out=zeros(L, M) if cfg.mlp_bias else None,
        )
    blocks = Block(
        ln1=norm(L) if cfg.pre_norm else None,
        attn=attn,
        ln1_post=norm(L) if cfg.post_attn_norm else None,
        ln2=norm(L) if cfg.has_mlp and cfg.pre_norm else None,
        mlp=mlp,
        ln2_post=norm(L) if cfg.post_mlp_norm else None,
        window=jnp.asarray(cfg.windows, jnp.int32),
    )
    model = Transformer(
        cfg=cfg,
        embed=Embed(normal(cfg.d_vocab, M), cfg.embed_scale),
        pos_embed=PosEmbed(normal(cfg.n_ctx, M)) if cfg.positional == "learned" else None,
        token_type_embed=TokenTypeEmbed(normal(cfg.n_token_types, M)) if cfg.n_token_types else None,
        embed_ln=norm() if cfg.embed_norm else None,
        blocks=blocks,
        ln_final=None if cfg.post_norm else norm(),
        unembed=Unembed(normal(M, cfg.d_vocab), zeros(cfg.d_vocab) if cfg.unembed_bias else None)
        if cfg.has_unembed
        else None,
    )

    values = _draw_normals(key, tuple(shapes), float(std), jnp.dtype(dtype))
    return jax.tree_util.tree_map(
        lambda leaf: values[leaf.index] if isinstance(leaf, _Pending) else leaf,
        model,
        is_leaf=lambda leaf: isinstance(leaf, _Pending),
    )


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _draw_normals(key, shapes: tuple, std: float, dtype) -> list:
    """``std * N(0, 1)`` arrays of ``shapes`` from one draw (one compiled program)."""
    sizes = [int(np.prod(shape)) for shape in shapes]
    draws = std * jax.random.normal(key, (sum(sizes),), jnp.float32)
    offsets = np.cumsum([0] + sizes)
    return [draws[o : o + n].reshape(shape).astype(dtype) for o, n, shape in zip(offsets, sizes, shapes)]


class _Pending:
    """A weight `_init_model` has not drawn yet: the index of its shape."""

    def __init__(self, index: int):
        self.index = index
