"""Parity with HuggingFace transformers (the reference we did not write): logits,
every layer's residual stream, and attention patterns, for every family, fp32."""

from __future__ import annotations

import numpy as np
import pytest
from hf_models import FAMILIES, hf_model

import jaxinterp as ji

torch = pytest.importorskip("torch")

TOL = 1e-4
N_POS = 12  # longer than the sliding windows (4) so windows matter


def _tokens(vocab, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, size=(2, N_POS))


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request):
    hf, path = hf_model(request.param)
    return request.param, hf, ji.load(path)


def test_logits_hidden_states_and_patterns_match(pair):
    name, hf, model = pair
    tokens = _tokens(model.cfg.d_vocab)
    with torch.no_grad():
        out = hf(torch.tensor(tokens), output_hidden_states=True, output_attentions=True)
    names = ["resid_pre", "resid_post", "attn.pattern"]
    ours, cache = model.run_with_cache(tokens, names=names)
    ours = np.asarray(ours)
    if name == "bert":
        np.testing.assert_allclose(ours, out.last_hidden_state.numpy(), atol=TOL, rtol=0)
    else:
        assert ours.shape == tuple(out.logits.shape)
        np.testing.assert_allclose(ours, out.logits.numpy(), atol=TOL, rtol=0)
    # hidden_states[i] is the input to layer i; the last one is after the final norm
    # for decoder models (HF applies it), the raw last block output for BERT.
    for layer in range(model.cfg.n_layers):
        np.testing.assert_allclose(
            np.asarray(cache[f"blocks.{layer}.hook_resid_pre"]),
            out.hidden_states[layer].numpy(),
            atol=TOL,
            rtol=0,
            err_msg=f"{name} resid_pre layer {layer}",
        )
        np.testing.assert_allclose(
            np.asarray(cache["attn.pattern"][layer]),
            out.attentions[layer].numpy(),
            atol=TOL,
            rtol=0,
            err_msg=f"{name} attention pattern layer {layer}",
        )
    last = np.asarray(cache["resid_post"][-1])
    if name == "bert":
        np.testing.assert_allclose(last, out.hidden_states[-1].numpy(), atol=TOL, rtol=0)


def test_single_example_equals_batch_row(pair):
    _, _, model = pair
    tokens = _tokens(model.cfg.d_vocab, seed=1)
    np.testing.assert_allclose(np.asarray(model(tokens))[1], np.asarray(model(tokens[1])), atol=1e-5, rtol=0)
