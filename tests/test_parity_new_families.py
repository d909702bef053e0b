"""Parity with HuggingFace transformers for the families added as feature flags of the
generic model (Qwen3: per-head QK-norm; OLMo-2: output norms without pre-norms and QK-norm
over the whole projection): logits, every layer's residual stream and every attention
pattern within 1e-4 of HF's own forward pass, fp32, random norm weights, sequences
longer than any sliding window."""

from __future__ import annotations

import numpy as np
import pytest
from hf_models import NEW_FAMILIES, hf_model

import jaxinterp as ji

torch = pytest.importorskip("torch")

TOL = 1e-4
N_POS = 12  # longer than the sliding windows (4) so windows matter


@pytest.fixture(scope="module", params=NEW_FAMILIES)
def pair(request):
    hf, path = hf_model(request.param)
    return request.param, hf, ji.load(path)


def test_logits_hidden_states_and_patterns_match(pair):
    name, hf, model = pair
    tokens = np.random.default_rng(0).integers(0, model.cfg.d_vocab, size=(2, N_POS))
    with torch.no_grad():
        out = hf(torch.tensor(tokens), output_hidden_states=True, output_attentions=True)
    logits, cache = model.run_with_cache(tokens, names=["resid_pre", "resid_post", "attn.pattern"])
    np.testing.assert_allclose(np.asarray(logits), out.logits.numpy(), atol=TOL, rtol=0)
    for layer in range(model.cfg.n_layers):
        np.testing.assert_allclose(
            np.asarray(cache["resid_pre"][layer]), out.hidden_states[layer].numpy(), atol=TOL, rtol=0,
            err_msg=f"{name} resid_pre layer {layer}",
        )
        np.testing.assert_allclose(
            np.asarray(cache["attn.pattern"][layer]), out.attentions[layer].numpy(), atol=TOL, rtol=0,
            err_msg=f"{name} attention pattern layer {layer}",
        )


def test_config_flags(pair):
    """The features the parity rests on are the ones the checkpoint declares (a guard
    against a test model that silently lacks them)."""
    name, hf, model = pair
    cfg = model.cfg
    if name.startswith("qwen3"):
        assert cfg.qk_norm == "head" and cfg.pre_norm and cfg.d_head == hf.config.head_dim
        assert model.blocks.attn.q_norm.w.shape == (cfg.n_layers, cfg.d_head)
    if name == "qwen3_sliding":
        assert cfg.layer_windows == (None, 4)
    if name == "olmo2":
        assert cfg.qk_norm == "projection" and not cfg.pre_norm and cfg.post_attn_norm and cfg.post_mlp_norm
        assert model.blocks.ln1 is None and model.blocks.ln2 is None
        assert model.blocks.attn.k_norm.w.shape == (cfg.n_layers, cfg.n_kv_heads * cfg.d_head)
