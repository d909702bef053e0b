"""KV-cached generation (`jaxinterp.editing.generation`) against references it does not use:

- the model's plain forward pass over the whole final sequence (by causality, its logits
  at position t are those a full re-computation at step t would see): KV-cached logits
  equal it and greedy tokens are its argmaxes, for GPT-2, Llama (rotary, GQA), Gemma 2
  (soft-caps, a sliding window shorter than the sequence, post-norms) and MoE configs;
- each prompt generated alone (batched left padding changes nothing);
- the closed-form sampling distribution (softmax with temperature, top-k, top-p);
- transformers' own `generate` on a tiny random HF Llama.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hf_models import hf_model

import jaxinterp as ji
from jaxinterp.editing.generation import GenerationError, generate, left_pad, sample_logits
from jaxinterp.toy import random_model

BASE = dict(d_model=16, n_layers=2, n_heads=4, d_head=4, d_vocab=32, n_ctx=32, d_mlp=32)
FAMILIES = {
    "gpt2": dict(act_fn="gelu_new"),
    "llama": dict(positional="rotary", n_kv_heads=2, normalization="rmsnorm", gated_mlp=True, act_fn="silu"),
    "gemma2": dict(
        positional="rotary",
        n_kv_heads=2,
        normalization="rmsnorm",
        norm_weight_offset=1.0,
        gated_mlp=True,
        act_fn="gelu_pytorch_tanh",
        attn_logit_softcap=2.0,
        final_logit_softcap=3.0,
        layer_windows=(3, None),
        post_attn_norm=True,
        post_mlp_norm=True,
        embed_scale=4.0,
    ),
    "moe": dict(
        positional="rotary", n_experts=3, experts_per_token=2, gated_mlp=True, act_fn="silu", normalization="rmsnorm"
    ),
}
PROMPT = np.array([3, 17, 5, 9, 22, 1])
N_NEW = 8


def tiny(name):
    cfg = ji.ModelConfig(**{**BASE, **FAMILIES[name]})
    return random_model(cfg, seed=len(name), std=0.4, norm_std=0.1)


@pytest.fixture(scope="module")
def gemma2():
    return tiny("gemma2")


@pytest.mark.parametrize("name", list(FAMILIES))
def test_kv_cached_equals_full_recompute(name):
    model = tiny(name)
    out = generate(model, PROMPT, N_NEW, return_logits=True)
    seq = np.concatenate([PROMPT, np.asarray(out.tokens)])
    full, _ = model.run(jnp.asarray(seq))
    ref = np.asarray(full)[len(PROMPT) - 1 : -1]
    np.testing.assert_allclose(np.asarray(out.logits), ref, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(np.asarray(out.tokens), ref.argmax(-1))
    top2 = np.sort(ref, -1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0]).min() > 1e-3, "greedy choices must not be near-ties for the check to mean anything"
    assert len(set(np.asarray(out.tokens).tolist())) > 1, "a constant output would not test the positions"


# Three rows padded to PROMPT's length: tests that share a shape and options share one
# compiled program (the sampling options and where interventions apply are traced).
PROMPTS = [PROMPT, PROMPT[2:5], np.array([4, 4, 8, 30, 2, 11])]


def test_batched_left_padded_equals_each_row_alone(gemma2):
    prompts = PROMPTS
    batched = generate(gemma2, prompts, N_NEW, return_logits=True)
    for i, p in enumerate(prompts):
        alone = generate(gemma2, p, N_NEW, return_logits=True)
        np.testing.assert_array_equal(np.asarray(batched.tokens[i]), np.asarray(alone.tokens))
        np.testing.assert_allclose(np.asarray(batched.logits[i]), np.asarray(alone.logits), atol=1e-4, rtol=0)


def test_left_padded_run_with_positions_equals_unpadded(gemma2):
    # The model's plain forward with positions = cumsum(mask) - 1 reads a left-padded row
    # as the unpadded prompt (the reference for padded full re-computation).
    tokens, mask = left_pad([PROMPT[:3], PROMPT], pad_token_id=0)
    padded, _ = gemma2.run(
        jnp.asarray(tokens[0]), attention_mask=jnp.asarray(mask[0]), positions=jnp.asarray(np.cumsum(mask[0]) - 1)
    )
    alone, _ = gemma2.run(jnp.asarray(PROMPT[:3]))
    np.testing.assert_allclose(np.asarray(padded)[-3:], np.asarray(alone), atol=1e-5)


@pytest.mark.parametrize("apply_to", ["both", "prompt", "generated"])
def test_steering_during_generation_equals_full_recompute(gemma2, apply_to):
    direction = np.random.default_rng(0).normal(size=16).astype(np.float32)
    steer = ji.Add("resid_pre", 3.0 * direction, layer=1)
    out = generate(gemma2, PROMPT, N_NEW, interventions=[steer], apply_to=apply_to, return_logits=True)
    plain = generate(gemma2, PROMPT, N_NEW, return_logits=True)
    assert not np.array_equal(np.asarray(out.tokens), np.asarray(plain.tokens)), "the steering must change the text"
    seq = np.concatenate([PROMPT, np.asarray(out.tokens)])
    n = len(PROMPT)
    where = {"both": None, "prompt": np.arange(n), "generated": np.arange(n, len(seq))}[apply_to]
    full, _ = gemma2.run(jnp.asarray(seq), [ji.Add("resid_pre", 3.0 * direction, layer=1, pos=where)])
    ref = np.asarray(full)[n - 1 : -1]
    np.testing.assert_allclose(np.asarray(out.logits), ref, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(np.asarray(out.tokens), ref.argmax(-1))


def test_cache_holds_the_generated_tokens_activations(gemma2):
    out = generate(gemma2, PROMPT, N_NEW, cache=["resid_post", "attn.pattern", "embed"])
    seq = np.concatenate([PROMPT, np.asarray(out.tokens)])
    _, ref = gemma2.run_with_cache(jnp.asarray(seq), names=["resid_post", "attn.pattern", "embed"])
    n = len(PROMPT)
    np.testing.assert_allclose(np.asarray(out.cache["resid_post"]), np.asarray(ref["resid_post"])[:, n:], atol=1e-4)
    np.testing.assert_allclose(np.asarray(out.cache["embed"]), np.asarray(ref["embed"])[n:], atol=1e-5)
    # Pattern rows over the cache's slots, which for an unpadded prompt are the positions.
    np.testing.assert_allclose(
        np.asarray(out.cache["blocks.0.attn.hook_pattern"]), np.asarray(ref["attn.pattern"])[0][:, n:], atol=1e-5
    )


def test_stop_tokens_stop_each_row(gemma2):
    free = np.asarray(generate(gemma2, PROMPTS, N_NEW, return_logits=True).tokens)
    stop = int(free[0, 2])
    pad = 31
    out = np.asarray(generate(gemma2, PROMPTS, N_NEW, stop_tokens=[stop], pad_token_id=pad, return_logits=True).tokens)
    for row, ref in zip(out, free):
        hits = np.flatnonzero(ref == stop)
        end = hits[0] + 1 if hits.size else N_NEW
        np.testing.assert_array_equal(row[:end], ref[:end])
        assert (row[end:] == pad).all()
    assert (out[0, 3:] == pad).all() and np.flatnonzero(free[0] == stop)[0] <= 2


def test_seeded_sampling_is_reproducible_and_seeds_differ(gemma2):
    def draw(seed, **kw):
        return np.asarray(generate(gemma2, PROMPTS, N_NEW, key=jax.random.key(seed), return_logits=True, **kw).tokens)

    a, b, c = draw(0, temperature=1.5, top_p=0.95), draw(0, temperature=1.5, top_p=0.95), draw(1, temperature=1.5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    greedy = generate(gemma2, PROMPTS, N_NEW, return_logits=True)
    np.testing.assert_array_equal(draw(3, temperature=0.7, top_k=1), np.asarray(greedy.tokens))


@pytest.mark.parametrize("top_k, top_p", [(None, None), (3, None), (None, 0.6), (4, 0.8)])
def test_sampling_frequencies_match_the_closed_form(top_k, top_p):
    logits = np.array([2.0, 1.5, 1.0, 0.2, -0.5, -1.0], np.float32)
    temperature = 0.8
    p = np.exp(logits / temperature)
    p /= p.sum()  # sorted descending already
    keep = np.ones(6, bool)
    if top_k is not None:
        keep[top_k:] = False
    if top_p is not None:
        q = np.where(keep, p, 0) / np.where(keep, p, 0).sum()
        keep &= (np.cumsum(q) - q) < top_p
    expected = np.where(keep, p, 0) / np.where(keep, p, 0).sum()
    n = 20000
    draws = jax.jit(sample_logits, static_argnames="sampled")(
        jnp.tile(jnp.asarray(logits), (n, 1)), jax.random.key(0), temperature, top_k, top_p, sampled=True
    )
    freq = np.bincount(np.asarray(draws), minlength=6) / n
    np.testing.assert_allclose(freq, expected, atol=0.015)


def test_greedy_matches_transformers_generate():
    hf, path = hf_model("llama")
    model = ji.load(path)
    prompts = [[5, 17, 3, 42, 8, 61, 7], [12, 90, 33]]
    ours = generate(model, prompts, 20)
    tokens, mask = left_pad(prompts, pad_token_id=0)
    with torch.no_grad():
        ref = hf.generate(
            torch.tensor(tokens), attention_mask=torch.tensor(mask), max_new_tokens=20, do_sample=False, pad_token_id=0
        )[:, tokens.shape[1] :].numpy()
    np.testing.assert_array_equal(np.asarray(ours.tokens), ref)


def test_bad_arguments_are_named(gemma2):
    with pytest.raises(GenerationError, match="apply_to"):
        generate(gemma2, PROMPT, 3, apply_to="all")
    with pytest.raises(GenerationError, match="key="):
        generate(gemma2, PROMPT, 3, temperature=1.0)
    with pytest.raises(GenerationError, match="left-padded"):
        generate(gemma2, np.stack([PROMPT, PROMPT]), 3, attention_mask=np.array([[1] * 6, [1] * 5 + [0]]))
    with pytest.raises(GenerationError, match="pos="):
        generate(gemma2, PROMPT, 3, interventions=[ji.Add("resid_pre", np.zeros(16), pos=2)], apply_to="prompt")
    with pytest.raises(GenerationError, match="stop_tokens"):
        generate(gemma2, PROMPT, 3, stop_tokens=[32])
    with pytest.raises(GenerationError, match="n_ctx"):
        generate(gemma2, PROMPT, 40)
