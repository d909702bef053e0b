"""Steering vectors and greedy generation against HuggingFace transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hf_models import hf_model

import jaxinterp as ji
from jaxinterp.editing.greedy import greedy_generate
from jaxinterp.editing.steering import steering_vector


class WordTokenizer:
    """Maps each whitespace-separated word to a fixed id (enough to drive the API)."""

    def to_tokens(self, text):
        return np.array([1 + (sum(map(ord, w)) % 90) for w in text.split()])


@pytest.fixture(scope="module")
def llama():
    hf, path = hf_model("llama")
    return hf, ji.load(path)


def test_greedy_generate_matches_hf_generate(llama):
    hf, model = llama
    prompt = np.array([5, 17, 3, 42, 8])
    with torch.no_grad():
        ref = hf.generate(torch.tensor(prompt)[None], max_new_tokens=6, do_sample=False, pad_token_id=0)[
            0, len(prompt) :
        ].numpy()
    np.testing.assert_array_equal(greedy_generate(model, prompt, 6), ref)


def test_generation_applies_interventions_every_step(llama):
    _, model = llama
    prompt = np.array([5, 17, 3, 42, 8])
    # A huge push along one token's unembedding direction makes it the argmax at every step.
    direction = np.asarray(model.unembed.W_U[:, 33])
    steer = [ji.Add("resid_post", 1e3 * direction / np.linalg.norm(direction), layer=model.cfg.n_layers - 1)]
    np.testing.assert_array_equal(greedy_generate(model, prompt, 4, steer), [33, 33, 33, 33])


def test_steering_vector_is_mean_difference_of_hf_hidden_states(llama):
    hf, model = llama
    tok = WordTokenizer()
    pos, neg = ["good great fine day", "nice happy"], ["bad awful sad day", "grim cold"]
    layer = 1

    def mean(texts):
        acts = []
        for t in texts:
            with torch.no_grad():
                hs = hf(torch.tensor(tok.to_tokens(t))[None], output_hidden_states=True).hidden_states[layer][0].numpy()
            acts.append(hs[1:].mean(0))  # positions after the first, as documented
        return np.mean(acts, 0)

    np.testing.assert_allclose(steering_vector(model, tok, pos, neg, layer), mean(pos) - mean(neg), atol=1e-5)


def test_steering_vector_rejects_one_token_prompts(llama):
    _, model = llama
    with pytest.raises(ValueError, match="at least 2 tokens"):
        steering_vector(model, WordTokenizer(), ["good day"], ["bad"], 0)
