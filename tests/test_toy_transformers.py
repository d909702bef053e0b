"""Toy language models: the 0-layer model learns a bigram table known in closed form,
seeds trained together equal seeds trained alone, toys regenerate bit for bit, the shipped
toys load with their recorded configs and reproduce their recorded held-out losses, and
corpora read from a file, a folder or strings."""

from __future__ import annotations

import filecmp
import json
import os

import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.toy import shipped
from jaxinterp.toy.bigram import bigram_counts, bigram_entropy, bigram_kl, model_next_token_logprobs
from jaxinterp.toy.corpus import CorpusError, read_corpus, split_heldout
from jaxinterp.toy.lm import ToyLMError, bigram_config, encode_corpus, train_lms, unstack
from jaxinterp.toy.make import ToySpec, heldout_loss, make_toys

# A cyclic pattern whose successors are known: 0 -> {1, 2}, 1 -> {0, 3}, 2 -> 1, 3 -> 0.
PATTERN = [0, 1, 0, 2, 1, 3]
REPEATS = 400
P_TRUE = np.array([[0, 0.5, 0.5, 0], [0.5, 0, 0, 0.5], [0, 1, 0, 0], [1, 0, 0, 0]])


@pytest.fixture(scope="module")
def bigram_run():
    tokens = np.asarray(PATTERN * REPEATS, np.int32)
    run = train_lms(
        bigram_config(4, d_model=8), tokens, seeds=[0, 1], steps=400, batch_size=8, seq_len=32, learning_rate=3e-2
    )
    return tokens, run


def test_bigram_counts_and_entropy_closed_form(bigram_run):
    tokens, _ = bigram_run
    counts = bigram_counts(tokens, 4)
    expected = np.zeros((4, 4))
    for a, b in zip(PATTERN, PATTERN[1:] + PATTERN[:1]):
        expected[a, b] += REPEATS
    expected[3, 0] -= 1  # the last token has no successor
    np.testing.assert_array_equal(counts, expected)
    np.testing.assert_allclose(counts / counts.sum(1, keepdims=True), P_TRUE, atol=1e-12)
    # H(next | current): tokens 0 and 1 (2/3 of positions) have two equally likely successors
    np.testing.assert_allclose(bigram_entropy(counts), (2 / 3) * np.log(2), rtol=1e-3)


def test_zero_layer_model_learns_the_bigram_distribution(bigram_run):
    tokens, run = bigram_run
    counts = bigram_counts(tokens, 4)
    for seed in range(2):
        logp = model_next_token_logprobs(unstack(run.models, seed))
        kl = bigram_kl(counts, logp)
        # direct: sum_c f(c) sum_n P(n|c) log(P(n|c) / Q(n|c)) with the closed-form P
        f = np.bincount(tokens[:-1], minlength=4) / (len(tokens) - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            direct = np.nansum(f[:, None] * P_TRUE * (np.log(P_TRUE) - logp))
        np.testing.assert_allclose(kl, direct, rtol=1e-3, atol=1e-6)
        assert kl < 0.05, kl
        # the training loss is H(next | current) + KL (on windows of the same stream)
        assert abs(float(np.asarray(run.losses)[seed, -50:].mean()) - (bigram_entropy(counts) + kl)) < 0.03
    # seeds trained together equal a seed trained alone (the vmapped program is per-seed)
    alone = train_lms(
        bigram_config(4, d_model=8), tokens, seeds=[1], steps=400, batch_size=8, seq_len=32, learning_rate=3e-2
    )
    np.testing.assert_allclose(unstack(alone.models, 0).embed.W_E, unstack(run.models, 1).embed.W_E, atol=1e-5)
    assert not np.allclose(unstack(run.models, 0).embed.W_E, unstack(run.models, 1).embed.W_E)


def test_make_toys_is_bit_for_bit(tmp_path):
    texts = ["keep it in mind, and keep them at bay. " * 30, "the cat sat on the mat. " * 40]
    specs = {"bigram-0l": ToySpec(lambda v: bigram_config(v, d_model=8), steps=20, batch_size=4, seq_len=16)}
    for d in ("a", "b"):
        make_toys(str(tmp_path / d), texts, vocab_size=280, specs=specs)
    files = sorted(os.listdir(tmp_path / "a" / "bigram-0l"))
    assert files == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "training.json"]
    for f in files:
        assert filecmp.cmp(tmp_path / "a" / "bigram-0l" / f, tmp_path / "b" / "bigram-0l" / f, shallow=False), f
    model, tok = shipped.load(str(tmp_path / "a" / "bigram-0l"))
    assert model.cfg == bigram_config(tok.vocab_size, d_model=8)
    assert tok.decode(tok.encode("keep it in mind")) == "keep it in mind"


@pytest.fixture(scope="module")
def shakespeare_heldout():
    from jaxinterp.toy.corpus import shakespeare_texts

    return split_heldout(shakespeare_texts(), 0.05)[1]


@pytest.mark.parametrize("name", shipped.SHIPPED)
def test_shipped_toys_load_and_match_their_records(name, shakespeare_heldout):
    folder = os.path.join(shipped.WEIGHTS_DIR, name)
    model, tok = shipped.load(name)
    with open(os.path.join(folder, "config.json")) as f:
        assert model.cfg == ji.ModelConfig(**json.load(f))
    assert tok.vocab_size == model.cfg.d_vocab == 1024
    assert isinstance(ji.load_tokenizer(folder), ji.Tokenizer)
    info = shipped.toy_info(name)
    # the weights reproduce the held-out loss recorded when they were made
    held = encode_corpus(tok, shakespeare_heldout)
    assert len(held) == info["heldout_tokens"]
    np.testing.assert_allclose(heldout_loss(model, held, info["seq_len"]), info["heldout_loss"], atol=1e-3)
    assert info["heldout_loss"] < np.log(1024) - 2.0  # far better than a uniform guess


def test_corpus_sources(tmp_path):
    (tmp_path / "b.txt").write_text("second\r\nline")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "skip.md").write_text("not text")
    assert read_corpus(str(tmp_path)) == ["first", "second\nline"]
    assert read_corpus(str(tmp_path / "a.txt")) == ["first"]
    assert read_corpus(iter(["x", "y"])) == ["x", "y"]
    train, held = split_heldout(["l1\nl2\nl3\nl4\n"], 0.3)
    assert train == ["l1\nl2\n"] and held == ["l3\nl4\n"]
    with pytest.raises(CorpusError, match="neither a file nor a folder"):
        read_corpus(str(tmp_path / "missing"))
    with pytest.raises(CorpusError, match="must yield strings"):
        read_corpus([b"bytes"])
    with pytest.raises(ToyLMError, match="token ids must be in"):
        train_lms(bigram_config(4), np.arange(100, dtype=np.int32), seeds=[0])
