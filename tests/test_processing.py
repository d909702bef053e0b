"""Weight processing keeps what the model computes, on tiny HF-loaded models of every
family (logits equal within 1e-4, or up to a per-position constant for centring the
unembedding), refuses clearly where it would not, and really does change the weights
(norms become identity, means become zero, factors become orthogonal)."""

from __future__ import annotations

import numpy as np
import pytest
from hf_models import FAMILIES, hf_model

import jaxinterp as ji
from jaxinterp import processing as P

pytest.importorskip("torch")

TOL = 1e-4


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    _, path = hf_model(request.param)
    model = ji.load(path)
    tokens = np.random.default_rng(0).integers(0, model.cfg.d_vocab, size=(2, 12))
    return request.param, model, tokens, np.asarray(model(tokens))


def _assert_same_outputs(model, tokens, ref, up_to_constant=False):
    out = np.asarray(model(tokens))
    diff = out - ref
    if up_to_constant:
        shift = diff.mean(-1, keepdims=True)
        diff = diff - shift
    np.testing.assert_allclose(diff, 0.0, atol=TOL)


def _is_identity_norm(norm):
    w = np.asarray(norm.w) + norm.weight_offset
    ok = np.allclose(w, 1.0)
    return ok and (norm.b is None or np.allclose(np.asarray(norm.b), 0.0))


def test_fold_layer_norm(family):
    name, model, tokens, ref = family
    if model.cfg.post_norm:
        with pytest.raises(P.ProcessingError, match="post-norm"):
            P.fold_layer_norm(model)
        return
    assert not _is_identity_norm(model.blocks.ln1)  # the fixture's norms are random
    folded = P.fold_layer_norm(model)
    _assert_same_outputs(folded, tokens, ref)
    assert _is_identity_norm(folded.blocks.ln1) and _is_identity_norm(folded.ln_final)
    if folded.blocks.ln2 is not None:
        assert _is_identity_norm(folded.blocks.ln2)
    if model.cfg.normalization == "layernorm":  # reading weights are centred too
        np.testing.assert_allclose(np.asarray(folded.blocks.attn.W_Q).mean(-2), 0.0, atol=1e-6)
        np.testing.assert_allclose(np.asarray(folded.unembed.W_U).mean(0), 0.0, atol=1e-6)
    # The model passed in is untouched (pure function).
    np.testing.assert_allclose(np.asarray(model(tokens)), ref, atol=0)


def test_center_writing_weights(family):
    name, model, tokens, ref = family
    if model.cfg.normalization != "layernorm":
        with pytest.raises(P.ProcessingError, match="LayerNorm"):
            P.center_writing_weights(model)
        return
    centered = P.center_writing_weights(model)
    _assert_same_outputs(centered, tokens, ref)
    for W in (centered.embed.W_E, centered.blocks.attn.W_O, centered.blocks.mlp.W_out):
        np.testing.assert_allclose(np.asarray(W).mean(-1), 0.0, atol=1e-6)
    assert not np.allclose(np.asarray(model.blocks.attn.W_O).mean(-1), 0.0, atol=1e-6)


def test_center_unembed(family):
    name, model, tokens, ref = family
    if model.unembed is None:
        with pytest.raises(P.ProcessingError, match="no unembedding"):
            P.center_unembed(model)
        return
    if model.cfg.final_logit_softcap is not None:
        with pytest.raises(P.ProcessingError, match="soft-capping"):
            P.center_unembed(model)
        return
    centered = P.center_unembed(model)
    out = np.asarray(centered(tokens))
    np.testing.assert_allclose(out.mean(-1), 0.0, atol=1e-5)  # logits now have zero mean
    _assert_same_outputs(centered, tokens, ref, up_to_constant=True)
    assert np.abs(out - ref).max() > 1e-3  # ... and did change by that constant


def test_fold_value_biases(family):
    name, model, tokens, ref = family
    folded = P.fold_value_biases(model)
    _assert_same_outputs(folded, tokens, ref)
    if model.blocks.attn.b_V is not None:
        assert np.abs(np.asarray(model.blocks.attn.b_V)).max() > 0
        np.testing.assert_allclose(np.asarray(folded.blocks.attn.b_V), 0.0)
        assert folded.cfg.o_bias


def test_refactor_factored_attn_matrices(family):
    name, model, tokens, ref = family
    cfg = model.cfg
    if cfg.n_kv_heads != cfg.n_heads:
        with pytest.raises(P.ProcessingError, match="grouped-query"):
            P.refactor_factored_attn_matrices(model)
        return
    if cfg.positional == "rotary":
        with pytest.raises(P.ProcessingError, match="qk=False"):
            P.refactor_factored_attn_matrices(model)
        refactored = P.refactor_factored_attn_matrices(model, qk=False)
    else:
        refactored = P.refactor_factored_attn_matrices(model)
        W_Q, W_K = np.asarray(refactored.blocks.attn.W_Q), np.asarray(refactored.blocks.attn.W_K)
        b_Q, b_K = np.asarray(refactored.blocks.attn.b_Q), np.asarray(refactored.blocks.attn.b_K)
        q_norms = (W_Q**2).sum(-2) + b_Q**2
        np.testing.assert_allclose(q_norms, (W_K**2).sum(-2) + b_K**2, rtol=1e-4)  # matching column norms
    _assert_same_outputs(refactored, tokens, ref)
    W_O = np.asarray(refactored.blocks.attn.W_O)
    eye = np.broadcast_to(np.eye(cfg.d_head), W_O.shape[:-2] + (cfg.d_head, cfg.d_head))
    np.testing.assert_allclose(W_O @ np.swapaxes(W_O, -1, -2), eye, atol=1e-5)  # W_O is now an isometry


def test_process_weights_combines_what_applies(family):
    name, model, tokens, ref = family
    processed = P.process_weights(model)
    _assert_same_outputs(processed, tokens, ref, up_to_constant=model.unembed is not None)


def test_folding_creates_missing_biases_and_updates_config():
    # GPT-2 has a LayerNorm bias but no unembedding bias: folding ln_final must create b_U.
    _, path = hf_model("gpt2")
    model = ji.load(path)
    assert model.unembed.b_U is None and not model.cfg.unembed_bias
    folded = P.fold_layer_norm(model)
    assert folded.unembed.b_U is not None and folded.cfg.unembed_bias
    # The config now describes the folded weights: a freshly built skeleton matches them.
    from jaxinterp.loading import expected_params

    assert expected_params(folded.cfg)["unembed.b_U"] == (model.cfg.d_vocab,)


def test_smollm2_processing_keeps_logits(smollm2, smollm2_tokenizer):
    # A real pretrained model (Llama family, GQA, RMSNorm, tied embeddings).
    model = smollm2
    tokens = np.array(
        [
            smollm2_tokenizer.encode("The quick brown fox jumps over the lazy dog")[:8],
            smollm2_tokenizer.encode("When Mary and John went to the store, John")[:8],
        ]
    )
    ref = np.asarray(model(tokens))
    folded = P.fold_layer_norm(model)
    assert _is_identity_norm(folded.blocks.ln1) and _is_identity_norm(folded.ln_final)
    _assert_same_outputs(folded, tokens, ref)
    _assert_same_outputs(P.process_weights(model), tokens, ref, up_to_constant=True)
    with pytest.raises(P.ProcessingError, match="rmsnorm"):
        P.center_writing_weights(model)
    with pytest.raises(P.ProcessingError, match="grouped-query"):
        P.refactor_factored_attn_matrices(model)
