"""QK/OV circuits against the model's own activations (attention scores and per-head
outputs, GQA included), full circuits, skip-trigrams, composition and copying scores
against dense numpy references."""

from __future__ import annotations

import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp import circuits as C
from jaxinterp.toy import random_model

CFG = ji.ModelConfig(
    d_model=16, n_layers=3, n_heads=4, n_kv_heads=2, d_head=4, d_vocab=23, n_ctx=8, attn_only=True, family="test-gqa"
)


@pytest.fixture(scope="module")
def model():
    return random_model(CFG, seed=0, std=0.3)


def _np(x):
    return np.asarray(x, np.float64)


def test_qk_and_ov_circuits_reproduce_scores_and_head_outputs(model):
    tokens = np.random.default_rng(0).integers(0, CFG.d_vocab, 8)
    _, cache = model.run_with_cache(tokens, names=["ln1.normalized", "attn.attn_scores", "attn.pattern", "attn.result"])
    x = _np(cache["ln1.normalized"])  # [layer, pos, d_model]: what the heads read
    qk, ov = C.qk_circuit(model), C.ov_circuit(model)
    assert qk.shape == ov.shape == (3, 4, 16, 16)
    for layer in range(3):
        for head in range(4):
            scores = x[layer] @ _np(qk[layer, head].AB) @ x[layer].T * CFG.scale
            causal = np.tril(np.ones((8, 8), bool))
            np.testing.assert_allclose(scores[causal], _np(cache["attn.attn_scores"][layer, head])[causal], atol=1e-4)
            out = _np(cache["attn.pattern"][layer, head]) @ x[layer] @ _np(ov[layer, head].AB)
            np.testing.assert_allclose(out, _np(cache["attn.result"][layer, :, head]), atol=1e-4)


def test_full_circuits_match_dense_products(model):
    W_E, W_U = _np(model.embed.W_E), _np(model.unembed.W_U)
    A = model.blocks.attn
    layer, head = 2, 3
    kv = head // 2  # GQA: 4 query heads share 2 key/value heads
    W_QK = _np(A.W_Q[layer, head]) @ _np(A.W_K[layer, kv]).T
    W_OV = _np(A.W_V[layer, kv]) @ _np(A.W_O[layer, head])
    full_qk, full_ov = C.full_qk_circuit(model), C.full_ov_circuit(model)
    assert full_qk.shape == (3, 4, 23, 23)
    np.testing.assert_allclose(_np(full_qk[layer, head].AB), W_E @ W_QK @ W_E.T, atol=1e-4)
    np.testing.assert_allclose(_np(full_ov[layer, head].AB), W_E @ W_OV @ W_U, atol=1e-4)
    # Selecting heads up front gives the same matrices with fewer of them.
    sub = C.full_ov_circuit(model, layers=[layer], heads=[1, head])
    assert sub.shape == (1, 2, 23, 23)
    np.testing.assert_allclose(_np(sub[0, 1].AB), W_E @ W_OV @ W_U, atol=1e-4)
    # Gemma-style embedding scale is part of what a token writes.
    scaled = random_model(CFG.replace(embed_scale=4.0), seed=0, std=0.3)
    np.testing.assert_allclose(_np(C.full_ov_circuit(scaled)[layer, head].AB), 4.0 * W_E @ W_OV @ W_U, atol=1e-3)


def test_skip_trigrams_are_the_top_entries(model):
    layer, head = 1, 2
    full_ov = _np(C.full_ov_circuit(model)[layer, head].AB)
    full_qk = _np(C.full_qk_circuit(model)[layer, head].AB)
    trigrams = C.skip_trigrams(model, layer, head, k=6, destinations_per_pair=2, chunk_size=5)
    assert len(trigrams) == 12
    top = np.sort(full_ov.ravel())[::-1][:6]
    np.testing.assert_allclose([t.ov_score for t in trigrams[::2]], top, rtol=1e-4)
    for t in trigrams:
        assert full_ov[t.source, t.out] == pytest.approx(t.ov_score, rel=1e-4)
        assert full_qk[t.destination, t.source] == pytest.approx(t.qk_score, rel=1e-4, abs=1e-5)
    for first, second in zip(trigrams[::2], trigrams[1::2]):  # the two best destinations per source
        best = np.argsort(-full_qk[:, first.source])[:2]
        assert [first.destination, second.destination] == list(best)

    class Tok:
        def decode(self, ids):
            return f"t{ids[0]}"

    t = C.skip_trigrams(model, layer, head, k=1, tokenizer=Tok())[0]
    assert t.text == f"'t{t.source}' ... 't{t.destination}' -> 't{t.out}'"
    with pytest.raises(ValueError, match="out of range"):
        C.skip_trigrams(model, 3, 0)


def test_composition_scores_match_dense(model):
    A = model.blocks.attn
    per_head = lambda W, h: _np(W[h // 2]) if W.shape[0] == 2 else _np(W[h])
    QK = [[per_head(A.W_Q[l], h) @ per_head(A.W_K[l], h).T for h in range(4)] for l in range(3)]
    OV = [[per_head(A.W_V[l], h) @ _np(A.W_O[l, h]) for h in range(4)] for l in range(3)]
    score = lambda X, Y: np.linalg.norm(X @ Y) / (np.linalg.norm(X) * np.linalg.norm(Y))
    comp = C.all_composition_scores(model)
    assert comp.dims == ("mode", "layer_a", "head_a", "layer_b", "head_b") and comp.shape == (3, 3, 4, 3, 4)
    got = np.asarray(comp)
    for la in range(3):
        for lb in range(3):
            for ha in range(4):
                for hb in range(4):
                    expect = [
                        score(OV[la][ha], QK[lb][hb]),
                        score(OV[la][ha], QK[lb][hb].T),
                        score(OV[la][ha], OV[lb][hb]),
                    ]
                    if lb <= la:
                        expect = [0.0, 0.0, 0.0]
                    np.testing.assert_allclose(got[:, la, ha, lb, hb], expect, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="'Q', 'K' or 'V'"):
        C.composition_scores(model, "X")


def test_copying_scores_match_dense_eigenvalues_and_detect_copying(model):
    full_ov = _np(C.full_ov_circuit(model).AB)
    eig = np.linalg.eigvals(full_ov)
    expect = eig.sum(-1).real / np.abs(eig).sum(-1)
    scores = C.copying_scores(model)
    assert scores.dims == ("layer", "head")
    np.testing.assert_allclose(np.asarray(scores), expect, rtol=1e-3, atol=1e-4)
    # A head whose OV circuit maps each token's embedding onto its own unembedding
    # (W_U = W_E^T, W_V W_O = I on its subspace) copies: score 1; negated, -1.
    import equinox as eqx

    d_head = CFG.d_head
    eye = np.eye(CFG.d_model, d_head, dtype=np.float32)
    W_V = np.broadcast_to(eye, model.blocks.attn.W_V.shape).copy()
    W_O = np.broadcast_to(eye.T, model.blocks.attn.W_O.shape).copy()
    W_O[:, 1] *= -1  # head 1 of every layer: anti-copying
    copier = eqx.tree_at(
        lambda m: (m.blocks.attn.W_V, m.blocks.attn.W_O, m.unembed.W_U), model, (W_V, W_O, model.embed.W_E.T)
    )
    s = np.asarray(C.copying_scores(copier))
    np.testing.assert_allclose(s[:, [0, 2, 3]], 1.0, atol=1e-4)
    np.testing.assert_allclose(s[:, 1], -1.0, atol=1e-4)
