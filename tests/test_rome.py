"""ROME on a tiny model: the closed-form update stores k* -> v* exactly and leaves keys
orthogonal to k* in the C^-1 metric unchanged (checked in float64 numpy and through the
model's own forward pass); key, covariance and n-gram entropy against direct
computations; the whole edit raises the target's probability."""

from __future__ import annotations

import math

import numpy as np
import pytest
from editing_fixtures import GPT2, LLAMA, tiny_model, word_tokenizer

import jaxinterp as ji
from jaxinterp.editing.common import EditingError
from jaxinterp.editing.rome import (
    EditRequest,
    apply_rome,
    compute_key,
    fact_probs,
    key_covariance,
    ngram_entropy,
    rank_one_update,
    rome,
)

REQUEST = EditRequest("{} is located in the city of", "the Eiffel tower", " Rome")
PREFIXES = ("", "note : ", "a friend said that ")


@pytest.fixture(scope="module")
def setup():
    return tiny_model(LLAMA, seed=5), word_tokenizer()


def test_rank_one_update_closed_form():
    rng = np.random.default_rng(0)
    d_mlp, d_model = 12, 7
    W = rng.standard_normal((d_mlp, d_model))
    A = rng.standard_normal((d_mlp, 3 * d_mlp))
    C = A @ A.T / (3 * d_mlp)
    k, v, b = rng.standard_normal(d_mlp), rng.standard_normal(d_model), rng.standard_normal(d_model)
    new = np.asarray(rank_one_update(W, C, k, v, b), np.float64)
    np.testing.assert_allclose(k @ new + b, v, atol=1e-4)
    # Keys orthogonal to k* in the C^-1 metric: project random keys onto that complement.
    c_inv_k = np.linalg.solve(C, k)
    others = rng.standard_normal((5, d_mlp))
    others -= np.outer(others @ c_inv_k, k) / (k @ c_inv_k)
    np.testing.assert_allclose(others @ c_inv_k, 0, atol=1e-10)
    np.testing.assert_allclose(others @ new, others @ W, atol=1e-4)
    # The update is rank one.
    assert np.linalg.matrix_rank(new - W, tol=1e-4) == 1


@pytest.mark.parametrize("cfg", [LLAMA, GPT2], ids=["llama", "gpt2-bias"])
def test_apply_rome_through_the_forward_pass(cfg):
    model = tiny_model(cfg, seed=6)
    rng = np.random.default_rng(1)
    layer, pos = 1, 2
    k = np.abs(rng.standard_normal(cfg.d_mlp)).astype(np.float32)
    v = rng.standard_normal(cfg.d_model).astype(np.float32)
    A = rng.standard_normal((cfg.d_mlp, 2 * cfg.d_mlp)).astype(np.float32)
    C = A @ A.T / A.shape[1]
    edited = apply_rome(model, layer, k, v, C)
    tokens = np.arange(1, 6)
    # Writing k* into mlp.post makes the edited layer output exactly v* (b_out included).
    _, cache = edited.run_with_cache(
        tokens, names=["mlp_out"], interventions=[ji.Patch("mlp.post", k, layer=layer, pos=pos)]
    )
    np.testing.assert_allclose(np.asarray(cache["mlp_out"][layer, pos]), v, atol=1e-3, rtol=1e-4)
    # Other layers' weights untouched; the original model is unchanged.
    for l in range(cfg.n_layers):
        same = np.array_equal(np.asarray(edited.blocks.mlp.W_out[l]), np.asarray(model.blocks.mlp.W_out[l]))
        assert same == (l != layer)
    with pytest.raises(EditingError, match="layer must be"):
        apply_rome(model, cfg.n_layers, k, v, C)


def test_key_and_covariance_equal_direct_runs(setup):
    model, tok = setup
    layer = 1
    key = compute_key(model, tok, REQUEST, layer, PREFIXES)
    ref = []
    for p in PREFIXES:
        tokens = tok.to_tokens(p + REQUEST.text())
        n_subject = len(tok.encode(p + "the Eiffel tower"))
        ref.append(np.asarray(model.run_with_cache(tokens, names=["mlp.post"])[1]["mlp.post"])[layer, n_subject - 1])
    np.testing.assert_allclose(key, np.mean(ref, 0), atol=1e-5)
    windows = np.random.default_rng(2).integers(0, LLAMA.d_vocab, (4, 9)).astype(np.int32)
    posts = np.concatenate(
        [np.asarray(model.run_with_cache(w, names=["mlp.post"])[1]["mlp.post"])[layer] for w in windows]
    )
    np.testing.assert_allclose(
        key_covariance(model, windows, layer, batch_size=2), posts.T @ posts / posts.shape[0], atol=1e-5, rtol=1e-4
    )


def test_rome_edit_makes_target_likely(setup):
    """With one context, k* is the prompt's own key, so the edited model must give exactly
    the probabilities of the unedited model with v* patched in. (The prompt ends at the
    subject: a random tiny model's attention carries little from earlier positions.)"""
    model, tok = setup
    request = EditRequest("I read that {}", "the Eiffel tower", " Rome")
    windows = np.random.default_rng(3).integers(0, LLAMA.d_vocab, (8, 16)).astype(np.int32)
    C = key_covariance(model, windows, 1)
    prompt = request.text()
    before = fact_probs(model, tok, [prompt], [request.target])[0]
    edit = rome(model, tok, request, C, layer=1, prefixes=("",), steps=15)
    after = fact_probs(edit.model, tok, [prompt], [request.target])[0]
    assert edit.value.nll[-1] < edit.value.nll[0] - 0.5
    assert after > max(0.2, 5 * before), (before, after)
    tokens = tok.to_tokens(prompt)
    patched = model(tokens, [ji.Patch("mlp_out", edit.value.value, layer=1, pos=len(tokens) - 1)])
    np.testing.assert_allclose(
        after,
        np.exp(np.asarray(patched[-1]) - np.logaddexp.reduce(np.asarray(patched[-1], np.float64)))[
            tok.to_single_token("Rome")
        ],
        rtol=1e-2,
    )
    with pytest.raises(EditingError, match="exactly one"):
        rome(model, tok, EditRequest("no subject slot", "x", " y"), C, layer=1)


def test_ngram_entropy_by_hand():
    # words a b a b a b: bigrams ab x3, ba x2; trigrams aba x2, bab x2
    h2 = -(0.6 * math.log2(0.6) + 0.4 * math.log2(0.4))
    assert ngram_entropy("a b a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2)
    assert ngram_entropy("the the the the") == 0.0
