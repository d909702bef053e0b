"""Function vectors on a tiny model: the CIE sweep over every head is one compiled
program and equals a loop of single-head patches on unpadded prompts; the function
vector is the sum of the heads' mean ``attn.result``; accuracy with it equals a loop.
ICL task loading and prompt construction."""

from __future__ import annotations

import logging

import jax
import numpy as np
import pytest
from editing_fixtures import LLAMA, tiny_model, word_tokenizer

import jaxinterp as ji
from jaxinterp.editing.common import EditingError
from jaxinterp.editing.function_vectors import (
    accuracy_by_layer,
    causal_indirect_effect,
    encode_prompts,
    first_token_accuracy,
    function_vector,
    mean_head_outputs,
    top_heads,
)
from jaxinterp.editing.icl_tasks import (
    TASKS,
    ICLTask,
    icl_prompt,
    load_pairs,
    sample_prompts,
)

TASK = ICLTask(
    "antonym",
    (
        ("hot", "cold"),
        ("big", "small"),
        ("up", "down"),
        ("happy", "sad"),
        ("good", "bad"),
        ("love", "hate"),
        ("day", "night"),
    ),
)


@pytest.fixture(scope="module")
def setup():
    model, tok = tiny_model(LLAMA, seed=4), word_tokenizer()
    clean, shuffled, answers = sample_prompts(TASK, 3, 2, seed=0)
    return model, tok, encode_prompts(tok, clean, answers), encode_prompts(tok, shuffled, answers), shuffled


def test_cie_sweep_compiles_once_and_equals_loop(setup, caplog):
    model, tok, clean, shuffled, shuffled_texts = setup
    mean_z = mean_head_outputs(model, clean)

    def run(prompts):
        caplog.clear()
        with jax.log_compiles(True), caplog.at_level(logging.WARNING):
            out = causal_indirect_effect(model, prompts, mean_z, per_prompt=True, batch_size=5)
        return out, [
            r.getMessage() for r in caplog.records if "Compiling" in r.getMessage() and "_cie" in r.getMessage()
        ]

    cie, compiled = run(shuffled)
    assert len(compiled) == 1, compiled  # one program for all 12 heads
    # Loop reference: each prompt alone (no padding), one head patched at its last position.
    for i, text in enumerate(shuffled_texts):
        tokens = tok.to_tokens(text)
        answer = int(shuffled.answers[i])
        base = jax.nn.softmax(model(tokens)[-1])[answer]
        for l in range(LLAMA.n_layers):
            for h in range(LLAMA.n_heads):
                patched = model(tokens, [ji.Patch("attn.z", mean_z[l], layer=l, head=h, pos=-1)])
                np.testing.assert_allclose(cie[l, h, i], float(jax.nn.softmax(patched[-1])[answer] - base), atol=2e-5)
    assert np.abs(cie).max() > 1e-4  # patches do something
    # Other prompts of the same shape reuse the compiled program.
    other = encode_prompts(tok, *sample_prompts(TASK, 3, 2, seed=1)[1:])
    if other.tokens.shape == shuffled.tokens.shape:
        _, compiled = run(other)
        assert not compiled


def test_function_vector_is_sum_of_mean_head_results(setup):
    model, _, clean, _, _ = setup
    mean_z = mean_head_outputs(model, clean)
    heads = [(0, 1), (2, 0)]
    results = []
    for i in range(clean.tokens.shape[0]):
        tokens = np.asarray(clean.tokens[i, : int(clean.lengths[i])])
        results.append(np.asarray(model.run_with_cache(tokens, names=["attn.result"])[1]["attn.result"])[:, -1])
    mean_result = np.mean(results, 0)
    np.testing.assert_allclose(function_vector(model, mean_z, heads), mean_result[0, 1] + mean_result[2, 0], atol=1e-5)
    cie = np.array([[0.1, 0.5, np.nan, 0.0]] * 3)
    assert top_heads(cie, 2) == [(0, 1), (1, 1)]


def test_accuracy_with_function_vector_equals_loop(setup):
    model, tok, _, _, _ = setup
    queries = [("hot", "cold"), ("up", "down"), ("day", "night")]
    zs = encode_prompts(tok, [f"Q: {x}\nA:" for x, _ in queries], [" " + y for _, y in queries])
    fv = np.random.default_rng(0).standard_normal(LLAMA.d_model).astype(np.float32) * 3
    by_layer = accuracy_by_layer(model, zs, fv)
    for layer in range(LLAMA.n_layers):
        hits = []
        for i in range(3):
            tokens = np.asarray(zs.tokens[i, : int(zs.lengths[i])])
            logits = model(tokens, [ji.Add("resid_pre", fv, layer=layer, pos=-1)])
            hits.append(int(np.argmax(logits[-1])) == int(zs.answers[i]))
        assert by_layer[layer] == pytest.approx(np.mean(hits))
        assert first_token_accuracy(model, zs, fv, layer) == pytest.approx(np.mean(hits))
    plain = [
        int(np.argmax(model(np.asarray(zs.tokens[i, : int(zs.lengths[i])]))[-1])) == int(zs.answers[i])
        for i in range(3)
    ]
    assert first_token_accuracy(model, zs) == pytest.approx(np.mean(plain))


def test_icl_tasks_and_loader(tmp_path):
    for name in ("antonym", "country_capital", "lowercase_uppercase", "english_french_number"):
        assert len(TASKS[name].pairs) >= 24
    assert icl_prompt([("a", "b")], "c") == "Q: a\nA: b\n\nQ: c\nA:"
    clean, shuffled, _ = sample_prompts(TASKS["antonym"], 5, 4, seed=3)
    for c, s in zip(clean, shuffled):
        blocks_c, blocks_s = c.split("\n\n"), s.split("\n\n")
        assert [b.split("\n")[0] for b in blocks_c] == [b.split("\n")[0] for b in blocks_s]  # same inputs and query
        assert all(x != y for x, y in zip(blocks_c[:-1], blocks_s[:-1]))  # every label moved
    (tmp_path / "p.csv").write_text("input,output\ncat,dog\nsun,moon\n")
    assert load_pairs(str(tmp_path / "p.csv")).pairs == (("cat", "dog"), ("sun", "moon"))
    (tmp_path / "p.jsonl").write_text('{"input": "cat", "output": "dog"}\n\n{"input": "sun", "output": "moon"}\n')
    assert load_pairs(str(tmp_path / "p.jsonl")).pairs == (("cat", "dog"), ("sun", "moon"))
    (tmp_path / "bad.csv").write_text("x,y\ncat,dog\n")
    with pytest.raises(EditingError, match="'input' and 'output' columns"):
        load_pairs(str(tmp_path / "bad.csv"))
    (tmp_path / "bad.jsonl").write_text('{"input": "cat"}\n{"input": "sun", "output": "moon"}\n')
    with pytest.raises(EditingError, match="bad.jsonl:1"):
        load_pairs(str(tmp_path / "bad.jsonl"))
    with pytest.raises(EditingError, match=".csv or .jsonl"):
        (tmp_path / "p.txt").write_text("x")
        load_pairs(str(tmp_path / "p.txt"))
