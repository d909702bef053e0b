"""The embedding-space view against numpy references: vocabulary projections (through
the final norm's linear part), value vectors, head OV outputs, and neuron top
activations over a token stream vs a loop over every window."""

from __future__ import annotations

import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp import embedding_space as E
from jaxinterp.toy import random_model

CFG = ji.ModelConfig(
    d_model=16,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    d_head=4,
    d_vocab=37,
    n_ctx=16,
    d_mlp=24,
    act_fn="gelu_new",
    family="test",
)


@pytest.fixture(scope="module", params=["layernorm", "rmsnorm"])
def model(request):
    cfg = CFG.replace(normalization=request.param, gated_mlp=request.param == "rmsnorm")
    return random_model(cfg, seed=0, std=0.3, norm_std=0.3)  # random final-norm weights (and LN bias)


def _np_scores(model, vectors):
    v = np.asarray(vectors, np.float64)
    if model.cfg.normalization == "layernorm":
        v = v - v.mean(-1, keepdims=True)
    return v * np.asarray(model.ln_final.w, np.float64) @ np.asarray(model.unembed.W_U, np.float64)


class FakeTokenizer:
    def decode(self, ids):
        return "".join(f"<{i}>" for i in ids)


def test_project_to_vocab_matches_numpy(model):
    vecs = np.random.default_rng(2).normal(size=(3, 5, 16)).astype(np.float32)
    top = E.project_to_vocab(model, vecs, k=4, tokenizer=FakeTokenizer(), chunk_size=4)
    scores = _np_scores(model, vecs)
    assert top.ids.shape == top.scores.shape == (3, 5, 4)
    np.testing.assert_array_equal(top.ids, np.argsort(-scores, -1)[..., :4])
    np.testing.assert_allclose(top.scores, np.sort(scores, -1)[..., ::-1][..., :4], rtol=1e-4, atol=1e-5)
    assert top.strings[1][2][0] == f"<{top.ids[1, 2, 0]}>"
    bottom = E.project_to_vocab(model, vecs[0], k=3, largest=False)
    np.testing.assert_array_equal(bottom.ids, np.argsort(scores[0], -1)[..., :3])
    raw = E.project_to_vocab(model, vecs[0], k=3, apply_final_norm=False)
    plain = vecs[0].astype(np.float64) @ np.asarray(model.unembed.W_U, np.float64)
    np.testing.assert_array_equal(raw.ids, np.argsort(-plain, -1)[..., :3])
    with pytest.raises(ValueError, match="d_model=16"):
        E.project_to_vocab(model, np.zeros((2, 15)))


def test_value_vectors_and_head_ov_outputs_match_numpy(model):
    W_out = np.asarray(model.blocks.mlp.W_out[1])
    top = E.value_vector_top_tokens(model, 1, k=5, chunk_size=7)  # 24 neurons in chunks of 7
    np.testing.assert_array_equal(top.ids, np.argsort(-_np_scores(model, W_out), -1)[:, :5])
    some = E.value_vector_top_tokens(model, 1, neurons=[3, 17], k=5)
    np.testing.assert_array_equal(some.ids, top.ids[[3, 17]])

    A = model.blocks.attn
    layer, head, sources = 1, 3, [0, 5, 36]
    written = (
        np.asarray(model.embed.W_E)[sources] @ np.asarray(A.W_V[layer, head // 2]) @ np.asarray(A.W_O[layer, head])
    )
    ov = E.head_ov_top_tokens(model, layer, head, sources, k=6)
    np.testing.assert_array_equal(ov.ids, np.argsort(-_np_scores(model, written), -1)[:, :6])
    # Residual vectors as sources (what a deep head actually reads).
    reads = np.random.default_rng(5).normal(size=(2, 16)).astype(np.float32)
    written = reads @ np.asarray(A.W_V[layer, head // 2]) @ np.asarray(A.W_O[layer, head])
    ov = E.head_ov_top_tokens(model, layer, head, reads, k=6)
    np.testing.assert_array_equal(ov.ids, np.argsort(-_np_scores(model, written), -1)[:, :6])
    with pytest.raises(ValueError, match="out of range"):
        E.head_ov_top_tokens(model, 2, 0, sources)


def test_neuron_top_activations_match_a_loop():
    model = random_model(CFG.replace(gated_mlp=True), seed=4, std=0.3)
    seq_len, k, layer = 6, 5, 1
    stream = np.random.default_rng(3).integers(0, CFG.d_vocab, size=45)  # 8 windows, the last ragged
    neurons = np.array([0, 7, 23])
    for bos, largest in ((None, True), (1, True), (None, False)):
        got = E.neuron_top_activations(
            model, stream, layer, neurons, k=k, seq_len=seq_len, batch_size=3, bos=bos, largest=largest
        )
        acts = []  # naive: run every window alone, collect the activation at each stream position
        for start in range(0, len(stream), seq_len):
            window = stream[start : start + seq_len]
            n = len(window)  # the last window is short: pad it (causal: padding after it changes nothing)
            toks = np.concatenate([([] if bos is None else [bos]), window, np.zeros(seq_len - n, int)]).astype(int)
            _, cache = model.run_with_cache(toks, names=["mlp.post"])
            post = np.asarray(cache["mlp.post"][layer])
            acts.append((post if bos is None else post[1:])[:n])
        acts = np.concatenate(acts)[:, neurons]  # [stream, neuron]
        order = np.argsort(-acts if largest else acts, axis=0)[:k].T  # [neuron, k]
        np.testing.assert_array_equal(got.positions, order)
        np.testing.assert_allclose(got.values, np.take_along_axis(acts.T, order, 1), rtol=1e-5, atol=1e-6)
        assert (got.values.min() > 0) == largest  # gated activations take both signs
    contexts = E.activation_contexts(stream, got.positions[:1, :2], FakeTokenizer(), before=2, after=1)
    p = int(got.positions[0, 0])
    assert contexts[0][0] == "".join(
        f"<{t}>" for t in stream[max(0, p - 2) : p]
    ) + f"[[<{stream[p]}>]]" + f"<{stream[p + 1]}>" * (p + 1 < len(stream))
    with pytest.raises(ValueError, match="exceeds the model's context"):
        E.neuron_top_activations(model, stream, layer, seq_len=16, bos=1)
