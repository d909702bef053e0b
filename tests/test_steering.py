"""Steering vectors (ActAdd, CAA, RepE, sweeps) on a tiny model, each checked against an
independent computation: per-prompt unbatched runs, numpy PCA, explicit `Add`s, a loop."""

from __future__ import annotations

import numpy as np
import pytest
from editing_fixtures import LLAMA, tiny_model, word_tokenizer

import jaxinterp as ji
from jaxinterp.core.metrics import logit_diff
from jaxinterp.editing.common import EditingError
from jaxinterp.editing.steering import (
    ab_prompt,
    actadd,
    actadd_vector,
    caa,
    caa_vectors,
    first_components,
    repe_control,
    repe_directions,
    steering_sweep,
)

# Two lengths (5 and 4 tokens): batching pads, and few shapes keep compiles few.
POS = ["I love this cake .", "happy day , good day", "it was good .", "I love it !"]
NEG = ["I hate this cake .", "sad day , bad night", "it was bad .", "I hate it !"]
TARGET = "the tower is in the city of"


@pytest.fixture(scope="module")
def setup():
    return tiny_model(LLAMA), word_tokenizer()


@pytest.fixture(scope="module")
def vectors(setup):
    model, tok = setup
    return caa_vectors(model, tok, POS, NEG, batch_size=3), repe_directions(model, tok, POS, NEG)


@pytest.fixture(scope="module")
def diffs(setup):
    """Per-pair last-token ``resid_pre`` differences from unbatched runs: ``[pair, layer, d_model]``."""
    model, tok = setup
    return np.stack([resid(model, tok, p)[:, -1] - resid(model, tok, n)[:, -1] for p, n in zip(POS, NEG)])


def resid(model, tok, text):
    """``resid_pre`` of one unbatched prompt: ``[layer, pos, d_model]``."""
    return np.asarray(model.run_with_cache(tok.to_tokens(text), names=["resid_pre"])[1]["resid_pre"])


def test_actadd_vector_pads_shorter_prompt_and_adds_over_first_positions(setup):
    model, tok = setup
    v = actadd_vector(model, tok, "I love", "I hate it", layer=1, pad=".")
    # Reference: each prompt alone, the shorter one padded by hand with "."
    ref = resid(model, tok, "I love .")[1] - resid(model, tok, "I hate it")[1]
    np.testing.assert_allclose(np.asarray(v.delta), ref, atol=1e-5)
    tokens = tok.to_tokens(TARGET)
    padded = np.zeros((len(tokens), LLAMA.d_model), np.float32)
    padded[:3] = 2.5 * ref
    expected = model(tokens, [ji.Add("resid_pre", padded, layer=1)])
    np.testing.assert_allclose(np.asarray(model(tokens, [actadd(v, 2.5)])), np.asarray(expected), atol=1e-5)
    assert np.abs(np.asarray(expected) - np.asarray(model(tokens))).max() > 1e-2  # the edit does something


def test_coefficient_zero_is_identity(setup, vectors):
    model, tok = setup
    tokens = tok.to_tokens(TARGET)
    plain = np.asarray(model(tokens))
    v = actadd_vector(model, tok, "I love", "I hate it", layer=1, pad=".")
    vecs, dirs = vectors
    for edit in (actadd(v, 0.0), caa(vecs, 1, 0.0), repe_control(dirs, np.zeros(LLAMA.n_layers))):
        np.testing.assert_allclose(np.asarray(model(tokens, [edit])), plain, atol=1e-6, rtol=0)
    # and a nonzero coefficient is not
    assert np.abs(np.asarray(model(tokens, [caa(vecs, 1, 3.0)])) - plain).max() > 1e-3


def test_caa_vectors_equal_per_prompt_last_token_differences(vectors, diffs):
    # batch_size=3 forces a padded last chunk; rows of two lengths are right-padded
    np.testing.assert_allclose(vectors[0], diffs.mean(0), atol=1e-5)


def test_ab_prompt_format():
    assert ab_prompt("Q?", "yes", "no", "B") == "Q?\n\nChoices:\n(A) yes\n(B) no\n\nAnswer: (B"
    with pytest.raises(EditingError, match="'A' or 'B'"):
        ab_prompt("Q?", "yes", "no", "C")


def test_repe_directions_are_signed_first_principal_components(vectors, diffs):
    dirs = vectors[1]
    for layer in range(LLAMA.n_layers):
        d = diffs[:, layer].astype(np.float64)
        centred = d - d.mean(0)
        _, V = np.linalg.eigh(centred.T @ centred)
        pc = V[:, -1]
        pc = pc if (d @ pc).mean() > 0 else -pc
        np.testing.assert_allclose(dirs[layer], pc, atol=1e-4)
    # the sign rule: flipping the pairs flips every direction
    np.testing.assert_allclose(np.asarray(first_components(-diffs)), -dirs, atol=1e-4)


def test_repe_control_equals_per_layer_adds(setup, vectors):
    model, tok = setup
    dirs = vectors[1]
    coef = np.array([0.0, 2.0, -1.5], np.float32)
    tokens = tok.to_tokens(TARGET)
    expected = model(tokens, [ji.Add("resid_pre", c * d, layer=l) for l, (c, d) in enumerate(zip(coef, dirs))])
    np.testing.assert_allclose(np.asarray(model(tokens, [repe_control(dirs, coef)])), np.asarray(expected), atol=1e-5)
    with pytest.raises(EditingError, match="coefficients must be"):
        repe_control(dirs, np.zeros(2))


def test_sweep_equals_loop(setup, vectors):
    model, tok = setup
    vecs = vectors[0]
    tokens = tok.to_tokens(TARGET)
    metric = logit_diff(tok.to_single_token("Paris"), tok.to_single_token("Rome"))
    coefs = np.array([-2.0, 0.0, 1.0, 4.0], np.float32)
    got = steering_sweep(model, tokens, vecs, metric, coefs)
    assert got.shape == (LLAMA.n_layers, 4)
    for l in range(LLAMA.n_layers):
        for j, c in enumerate(coefs):
            # one program for the loop: layer and coefficient are data
            ref = float(metric(model(tokens, [ji.Add("resid_pre", c * vecs[l], layer=l)])))
            np.testing.assert_allclose(got[l, j], ref, atol=1e-4)
    with pytest.raises(EditingError, match="vectors must be"):
        steering_sweep(model, tokens, vecs[:2], metric, coefs)
