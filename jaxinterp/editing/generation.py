"""KV-cached generation with interventions: one compiled program per shape.

A prefill runs the (left-padded) prompts through `Transformer.extend` into a fixed-size
`KVCache`; a `lax.scan` then decodes one token per step, attending over the cache, so a
step costs one token's forward pass (plus attention over the cache's slots) instead of
the whole sequence's. Every step runs the model's own staged forward, so interventions
apply at every site of every new token, and the logits equal re-running the full
sequence (tests/test_generation.py checks both, for every family)::

    out = generate(model, [prompt_a, prompt_b], 20)                     # greedy
    out = generate(model, tokens, 20, temperature=0.8, top_p=0.9, key=jax.random.key(0))
    out = generate(model, tokens, 20, interventions=[ji.Add("resid_pre", 4 * v, layer=6)],
                   apply_to="generated", cache=["resid_post"])
    out.tokens      # [batch, n_new] (pad after a stop token)
    out.cache["resid_post"]   # [layer, batch, n_new, d_model] at the generated tokens

Positions are those of each row's real tokens (a left-padded row starts at 0, as HF's
``position_ids`` from the attention mask), and intervention locations name them.
"""

from __future__ import annotations

from typing import Literal, Optional, Sequence, Union

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from ..core.errors import JaxinterpError
from ..core.readout import ALL, Readout
from ..core.sites import layer_site_dims, top_level_site_dims
from ..model import Transformer, check_tokens
from ..model.cache import ActivationCache
from ..model.interventions import Intervention, Where
from ..model.kv_cache import KVCache

__all__ = ["generate", "Generation", "GenerationError", "left_pad", "sample_logits"]

ApplyTo = Literal["prompt", "generated", "both"]


class GenerationError(JaxinterpError):
    """A generation request that cannot be carried out as asked."""


class Generation(eqx.Module):
    """What `generate` returns.

    ``tokens [batch, n_new]`` (``[n_new]`` for one unbatched prompt): the generated ids,
    ``pad_token_id`` after a row's stop token. ``logits [batch, n_new, d_vocab]``: the
    logits each token was chosen from (with ``return_logits=True``; else None).
    ``cache``: the requested sites at the generated tokens' positions, per-layer sites
    ``[layer, batch, n_new, ...]`` (pattern sites ``[layer, batch, head, n_new, slot]``
    over the cache's slots), or None.
    """

    tokens: Int[Array, "*batch n_new"]
    logits: Optional[Float[Array, "*batch n_new d_vocab"]]
    cache: Optional[ActivationCache]


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Prompts of different lengths as ``(tokens, attention_mask)`` ``[batch, pos]``,
    padded on the left (so every row's last prompt token is the last column)."""
    if len(prompts) == 0:
        raise GenerationError("prompts is empty: give at least one prompt")
    lengths = [len(p) for p in prompts]
    if min(lengths) == 0:
        raise GenerationError(f"prompt {lengths.index(0)} is empty: every prompt needs at least one token")
    n = max(lengths)
    tokens = np.full((len(prompts), n), pad_token_id, np.int32)
    mask = np.zeros((len(prompts), n), np.int32)
    for i, p in enumerate(prompts):
        tokens[i, n - len(p) :] = np.asarray(p, np.int32)
        mask[i, n - len(p) :] = 1
    return tokens, mask


def sample_logits(
    logits: Float[Array, "batch d_vocab"],
    key: Optional[PRNGKeyArray],
    temperature=0.0,
    top_k=None,
    top_p=None,
    *,
    sampled: Optional[bool] = None,
) -> Int[Array, " batch"]:
    """The next token of each row: argmax when not ``sampled`` (default: ``temperature
    == 0``), else a draw from ``softmax(logits / temperature)`` restricted to the
    ``top_k`` most likely tokens and then to the smallest set of them whose probability
    reaches ``top_p`` (HF's order; the most likely token always stays). ``temperature``,
    ``top_k`` and ``top_p`` may be traced (None: no restriction)."""
    if sampled is None:
        sampled = temperature != 0
    if not sampled:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    n_vocab = logits.shape[-1]
    logits = logits.astype(jnp.float32) / temperature
    top_k = n_vocab if top_k is None else top_k
    top_p = jnp.inf if top_p is None else top_p
    order = jnp.argsort(-logits, axis=-1)
    ranked = jnp.take_along_axis(logits, order, -1)
    in_top_k = jnp.arange(n_vocab) < top_k
    probs = jax.nn.softmax(jnp.where(in_top_k, ranked, -jnp.inf), axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # probability of the tokens ranked above
    keep_ranked = in_top_k & ((before < top_p) | (jnp.arange(n_vocab) == 0))
    choice = jax.random.categorical(key, jnp.where(keep_ranked, ranked, -jnp.inf), axis=-1)
    return jnp.take_along_axis(order, choice[:, None], -1)[:, 0].astype(jnp.int32)


def generate(
    model: Transformer,
    tokens: Union[Int[Array, "*batch pos"], Sequence[Sequence[int]]],
    n_new: int,
    *,
    interventions: Optional[Sequence[Intervention]] = None,
    apply_to: ApplyTo = "both",
    attention_mask: Optional[Int[Array, "batch pos"]] = None,
    temperature: float = 0.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    key: Optional[PRNGKeyArray] = None,
    stop_tokens: Sequence[int] = (),
    pad_token_id: int = 0,
    cache: Sequence[str] = (),
    return_logits: bool = False,
) -> Generation:
    """Generate ``n_new`` tokens after each prompt with a KV cache, in one compiled call.

    ``tokens``: one prompt ``[pos]``, a batch ``[batch, pos]`` (left-padded, with
    ``attention_mask``; without it every token is real), or a list of prompts of
    different lengths (left-padded here with ``pad_token_id``).
    ``temperature == 0``: greedy; else sampling (``top_k``, ``top_p``) seeded by ``key``.
    ``stop_tokens``: a row that emits one of them emits ``pad_token_id`` afterwards.
    ``interventions`` apply at every step to the tokens of ``apply_to``: the prompt's
    positions, the generated ones, or both (an intervention given its own ``pos=`` needs
    ``apply_to="both"``; its positions are absolute). ``cache``: site names to record
    at the generated tokens. Compiles once per (batch, prompt length, ``n_new``, options).
    """
    cfg = model.cfg
    if isinstance(n_new, bool) or not isinstance(n_new, (int, np.integer)) or n_new < 1:
        raise GenerationError(f"n_new must be a positive int, got {n_new!r}")
    if apply_to not in ("prompt", "generated", "both"):
        raise GenerationError(f"apply_to must be 'prompt', 'generated' or 'both', got {apply_to!r}")
    if temperature < 0:
        raise GenerationError(f"temperature must be >= 0 (0: greedy), got {temperature}")
    if temperature > 0 and key is None:
        raise GenerationError("sampling (temperature > 0) needs key= (a jax.random.key) to be reproducible")
    if top_k is not None and not 1 <= top_k <= cfg.d_vocab:
        raise GenerationError(f"top_k must be in 1..d_vocab={cfg.d_vocab}, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise GenerationError(f"top_p must be in (0, 1], got {top_p}")
    if not cfg.causal or model.unembed is None:
        raise GenerationError("generation needs a causal language model with an unembedding")
    bad = [t for t in list(stop_tokens) + [pad_token_id] if not 0 <= int(t) < cfg.d_vocab]
    if bad:
        raise GenerationError(f"stop_tokens and pad_token_id must be ids in 0..{cfg.d_vocab - 1}, got {bad}")
    interventions = tuple(interventions or ())
    if apply_to != "both":
        given = [iv.site for iv in interventions if iv.where.pos is not None]
        if given:
            raise GenerationError(f"interventions on {given} select pos= already: use apply_to='both' with them")

    unbatched = False
    if isinstance(tokens, (list, tuple)) and len(tokens) and not np.isscalar(tokens[0]):
        if attention_mask is not None:
            raise GenerationError("give attention_mask only with a padded [batch, pos] array of tokens")
        tokens, attention_mask = left_pad(tokens, pad_token_id)
    tokens = check_tokens(tokens, cfg)
    if tokens.ndim == 1:
        unbatched, tokens = True, tokens[None]
        attention_mask = None if attention_mask is None else jnp.asarray(attention_mask)[None]
    if attention_mask is None:
        attention_mask = jnp.ones(tokens.shape, jnp.int32)
    attention_mask = jnp.asarray(attention_mask, jnp.int32)
    if attention_mask.shape != tokens.shape:
        raise GenerationError(f"attention_mask {attention_mask.shape} must have the shape of tokens {tokens.shape}")
    if not isinstance(attention_mask, jax.core.Tracer):
        m = np.asarray(attention_mask)
        if not (m[:, -1] == 1).all():
            raise GenerationError("prompts must be left-padded: the last column of attention_mask must be all 1")
        if (np.diff(m, axis=1) < 0).any():
            raise GenerationError("prompts must be left-padded: attention_mask must be 0s then 1s in each row")
    if tokens.shape[1] + n_new > cfg.n_ctx:
        raise GenerationError(f"{tokens.shape[1]} prompt + {n_new} new tokens exceed the context n_ctx={cfg.n_ctx}")
    names = model.resolve_names(list(cache)) if cache else frozenset()
    key = jax.random.key(0) if key is None else key
    stops = np.zeros(cfg.d_vocab, bool)
    stops[np.asarray(list(stop_tokens), int)] = True
    # Only what changes the program is static; the rest is traced, so other values
    # (temperature, stop tokens, where interventions apply) reuse the compiled program.
    sampling = dict(
        temperature=jnp.float32(max(temperature, 1e-30)),
        top_k=jnp.int32(top_k or cfg.d_vocab),
        top_p=jnp.float32(np.inf if top_p is None else top_p),
        stops=jnp.asarray(stops),
        pad=jnp.int32(pad_token_id),
        to_prompt=jnp.asarray(apply_to != "generated"),
        to_generated=jnp.asarray(apply_to != "prompt"),
    )
    options = _Options(int(n_new), temperature > 0, names, bool(return_logits))
    out_tokens, logits, recorded = _generate(model, tokens, attention_mask, interventions, key, sampling, options)
    data = _arrange_cache(recorded, cfg) if names else None
    if unbatched:
        out_tokens = out_tokens[0]
        logits = None if logits is None else logits[0]
        if data is not None:
            data = {k: (v[:, 0] if k in layer_site_dims(cfg) else v[0]) for k, v in data.items()}
    return Generation(out_tokens, logits, None if data is None else ActivationCache(data, cfg, batched=not unbatched))


class _Options(eqx.Module):
    """The static choices of one compiled generation program."""

    n_new: int = eqx.field(static=True)
    sampled: bool = eqx.field(static=True)
    names: frozenset = eqx.field(static=True)
    return_logits: bool = eqx.field(static=True)


def restrict(
    interventions: tuple,
    to_prompt: Bool[Array, ""],
    to_generated: Bool[Array, ""],
    n_prompt: Int[Array, ""],
    max_len: int,
) -> tuple:
    """``interventions`` limited to the prompt's positions (``< n_prompt``) if
    ``to_prompt``, and the generated ones if ``to_generated``: a bool mask over absolute
    positions as their ``pos``. Those that select ``pos`` already are left as they are."""
    is_prompt = jnp.arange(max_len) < n_prompt
    mask = (is_prompt & to_prompt) | (~is_prompt & to_generated)
    out = []
    for iv in interventions:
        w = iv.where
        if w.pos is None:
            where = Where(layer=w.layer, pos=mask, head=w.head, neuron=w.neuron, key_pos=w.key_pos, expert=w.expert)
            iv = eqx.tree_at(lambda i: i.where, iv, where)
        out.append(iv)
    return tuple(out)


@eqx.filter_jit
def _generate(model: Transformer, tokens, attention_mask, interventions, key, sampling: dict, opt: _Options):
    n_batch, n_prompt = tokens.shape
    max_len = n_prompt + opt.n_new
    real_prompt = attention_mask.sum(-1)
    empty = KVCache.empty(model.cfg, max_len, model.embed.W_E.dtype)

    def extend(tokens, mask, kv, n_real, readout, names):
        ivs = restrict(interventions, sampling["to_prompt"], sampling["to_generated"], n_real, max_len)
        return model.extend(tokens, kv, ivs, cache=names, readout=readout, attention_mask=mask)

    prefill = jax.vmap(lambda t, m, n: extend(t, m, empty, n, Readout.at([-1], n_prompt), frozenset()))
    logits, _, kv = prefill(tokens, attention_mask, real_prompt)
    decode = jax.vmap(lambda t, kv, n: extend(t, None, kv, n, ALL, opt.names))

    def choose(logits, step, done):
        new = sample_logits(
            logits,
            jax.random.fold_in(key, step),
            sampling["temperature"],
            sampling["top_k"],
            sampling["top_p"],
            sampled=opt.sampled,
        )
        new = jnp.where(done, sampling["pad"], new)
        return new, done | sampling["stops"][new]

    first, done = choose(logits[:, 0], 0, jnp.zeros(n_batch, bool))

    def step(carry, i):
        prev, done, kv = carry
        logits, recorded, kv = decode(prev[:, None], kv, real_prompt)
        new, done = choose(logits[:, 0], i, done)
        return (new, done, kv), (new, logits[:, 0] if opt.return_logits else None, recorded)

    # Each step feeds the previous token; with a cache requested, one more step feeds the
    # last token so that every generated token's activations are recorded.
    n_steps = opt.n_new if opt.names else opt.n_new - 1
    _, (rest, step_logits, recorded) = jax.lax.scan(step, (first, done, kv), jnp.arange(1, n_steps + 1))
    out = jnp.concatenate([first[:, None], jnp.moveaxis(rest, 0, 1)], axis=1)[:, : opt.n_new]
    all_logits = None
    if opt.return_logits:
        all_logits = jnp.concatenate([logits, jnp.moveaxis(step_logits, 0, 1)], axis=1)[:, : opt.n_new]
    return out, all_logits, recorded


def _arrange_cache(recorded: dict, cfg) -> dict:
    """Per-step activations ``[step, batch, (layer,) ...]`` with a length-1 position axis
    -> ``[layer, batch, ...]`` with that axis over the steps (``[batch, ...]`` at top level)."""
    per_layer, top = layer_site_dims(cfg), top_level_site_dims(cfg)
    out = {}
    for name, x in recorded.items():
        dims = per_layer[name] if name in per_layer else top[name]
        lead = 3 if name in per_layer else 2  # step, batch, (layer)
        axis = lead + next(i for i, d in enumerate(dims) if d in ("pos", "query_pos"))
        x = jnp.moveaxis(jnp.squeeze(x, axis), 0, axis - 1)  # steps where the position axis was
        out[name] = jnp.moveaxis(x, 1, 0) if name in per_layer else x  # [layer, batch, ...]
    return out
