"""Parity with HuggingFace transformers for the families added as feature flags of the
generic model (Qwen3: per-head QK-norm; OLMo-2: output norms without pre-norms and QK-norm
over the whole projection; Gemma 3: QK-norm, local/global layers with two rope bases, the
global one scaled; Phi-3: fused projections split at load, longrope, a window on every
layer; Llama with YaRN; GPT-J: interleaved partial rotary, one norm for a parallel block;
OPT: learned positions with HF's offset of 2, ReLU, pre- and post-norm; Phi-2 and
StableLM: partial rotate-half rotary, LayerNorm, parallel or sequential blocks; Qwen3-MoE:
QK-norm with top-k experts): logits, every layer's residual stream and every attention
pattern within 1e-4 of HF's own forward pass, fp32, random norm weights, sequences
longer than any sliding window."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hf_models import FAMILIES, NEW_FAMILIES, hf_model

import jaxinterp as ji

torch = pytest.importorskip("torch")

TOL = 1e-4
N_POS = 12  # longer than the sliding windows (4) so windows matter


@functools.lru_cache(maxsize=None)
def _loaded(name: str):
    return ji.load(hf_model(name)[1])


def _run(model, tokens, mask):
    """Every test here runs a model through this one call, ``[2, N_POS]`` tokens with a
    mask and the same sites, so each model compiles once for the whole module."""
    names = ["resid_pre", "attn.pattern"] + (["attn.rot_k"] if model.cfg.positional == "rotary" else [])
    return model.run_with_cache(tokens, names=names, attention_mask=mask)


@pytest.fixture(scope="module", params=NEW_FAMILIES)
def pair(request):
    return request.param, hf_model(request.param)[0], _loaded(request.param)


def test_logits_hidden_states_and_patterns_match(pair):
    name, hf, model = pair
    tokens = np.random.default_rng(0).integers(0, model.cfg.d_vocab, size=(2, N_POS))
    with torch.no_grad():
        out = hf(torch.tensor(tokens), output_hidden_states=True, output_attentions=True)
    logits, cache = _run(model, tokens, np.ones_like(tokens))
    np.testing.assert_allclose(np.asarray(logits), out.logits.numpy(), atol=TOL, rtol=0)
    for layer in range(model.cfg.n_layers):
        np.testing.assert_allclose(
            np.asarray(cache["resid_pre"][layer]),
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
    if name == "gemma3":
        assert cfg.qk_norm == "head" and cfg.norm_weight_offset == 1.0 and cfg.layer_windows == (4, None, 4)
        assert (cfg.rotary_base, cfg.rotary_local_base, cfg.rope_scaling_dict["factor"]) == (10000.0, 100.0, 2.0)
        assert cfg.attn_scale == 16**-0.5
    if name == "phi3":
        assert cfg.rope_scaling_dict["rope_type"] == "longrope" and cfg.layer_windows == (6, 6)
        assert cfg.rope_scaling_dict["original_max_position_embeddings"] == 8 < N_POS  # the long factors run
    if name.startswith("qwen3_moe"):
        assert cfg.is_moe and (cfg.n_experts, cfg.experts_per_token, cfg.d_mlp) == (4, 2, 24) and cfg.qk_norm == "head"
        assert cfg.moe_renormalize == (name == "qwen3_moe")
    if name == "llama_dynamic":  # the context dynamic NTK was made for: factor x max_position_embeddings
        assert cfg.rope_scaling_dict["rope_type"] == "dynamic" and cfg.n_ctx == 16 > N_POS > 8
    if name == "llama_yarn":
        assert cfg.rope_scaling_dict["rope_type"] == "yarn"
    if name == "gptj":
        assert cfg.rotary_interleaved and cfg.rotary_dim == 4 < cfg.d_head and cfg.parallel_attn_mlp
        assert model.unembed.b_U is not None
    if name.startswith("opt"):
        assert cfg.positional == "learned" and cfg.act_fn == "relu" and cfg.post_norm == (name == "opt_post_norm")
    if name in ("phi2", "stablelm_parallel"):
        assert cfg.parallel_attn_mlp and cfg.rotary_dim == cfg.d_head // 2 and not cfg.rotary_interleaved
    if name == "stablelm":
        assert not cfg.parallel_attn_mlp and cfg.rotary_dim == cfg.d_head // 4 and cfg.normalization == "layernorm"
    if name == "olmo2":
        assert cfg.qk_norm == "projection" and not cfg.pre_norm and cfg.post_attn_norm and cfg.post_mlp_norm
        assert model.blocks.ln1 is None and model.blocks.ln2 is None
        assert model.blocks.attn.k_norm.w.shape == (cfg.n_layers, cfg.n_kv_heads * cfg.d_head)


@pytest.mark.parametrize(
    "name, change, message",
    [
        ("llama", {"rope_scaling": {"rope_type": "mrope", "factor": 2.0}}, "rope type 'mrope'.*supported: .*longrope"),
        ("opt", {"word_embed_proj_dim": 16}, "word_embed_proj_dim=16"),
        ("phi2", {"qk_layernorm": True}, "qk_layernorm"),
        ("qwen3_moe", {"mlp_only_layers": [1]}, "mlp_only_layers"),
    ],
)
def test_unsupported_variants_are_named(name, change, message, tmp_path):
    """Variants of the new families that the model cannot express are refused at load,
    naming what is unsupported (before any weight is read)."""
    import json
    import shutil

    path = tmp_path / name
    shutil.copytree(hf_model(name)[1], path)
    config = json.loads((path / "config.json").read_text())
    if "rope_scaling" in change:  # transformers 5 writes rope_parameters, which would win
        config.pop("rope_parameters", None)
    (path / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ji.UnsupportedArchitectureError, match=message):
        ji.load(str(path))


def test_phi3_short_factors_below_the_original_context():
    """Up to original_max_position_embeddings (8) tokens Phi-3 uses the short factors (the
    parity test above, 12 tokens, the long ones): a row of 6 real tokens (right-padded, so
    its positions end at 5) matches HF run on those 6 tokens."""
    hf, _ = hf_model("phi3")
    model = _loaded("phi3")
    tokens = np.random.default_rng(1).integers(0, model.cfg.d_vocab, size=(2, N_POS))
    mask = np.ones_like(tokens)
    mask[0, 6:] = 0
    with torch.no_grad():
        ref = hf(torch.tensor(tokens[:1, :6])).logits.numpy()[0]
    np.testing.assert_allclose(np.asarray(_run(model, tokens, mask)[0])[0, :6], ref, atol=TOL, rtol=0)


# ---------------------------------------------------------------- left padding

SHORT = 5  # the second prompt's length; the first fills all N_POS positions


@pytest.mark.parametrize("name", FAMILIES + NEW_FAMILIES)
def test_left_padded_batch_equals_rows_alone(name):
    """A left-padded row (with its attention mask) gives, at its real tokens, the logits of
    those tokens run alone: here the same tokens as a right-padded row of the same batch,
    whose real tokens see only each other (causal attention) at positions 0.. as alone.
    Positions count real tokens, so learned and rotary positions both line up, and
    sliding windows see the same keys."""
    model = _loaded(name)
    rng = np.random.default_rng(2)
    tokens = np.zeros((2, N_POS), np.int32)
    mask = np.zeros_like(tokens)
    real = rng.integers(1, model.cfg.d_vocab, SHORT)
    tokens[0, N_POS - SHORT :], mask[0, N_POS - SHORT :] = real, 1  # pad id 0 on the left
    tokens[1, :SHORT], mask[1, :SHORT] = real, 1  # alone, then padding the causal mask hides
    logits, cache = _run(model, tokens, mask)
    np.testing.assert_allclose(
        np.asarray(logits)[0, N_POS - SHORT :],
        np.asarray(logits)[1, :SHORT],
        atol=1e-5,
        rtol=0,
        err_msg=f"{name}: left-padded row vs the row alone",
    )
    # Rotary scores depend only on relative positions, so logits alone would not see a
    # shifted rotation; the rotated keys do.
    if model.cfg.positional == "rotary":  # cached [layer, batch, pos, ...]
        rot_k = np.asarray(cache["attn.rot_k"])
        np.testing.assert_allclose(
            rot_k[:, 0, N_POS - SHORT :], rot_k[:, 1, :SHORT], atol=1e-5, rtol=0, err_msg=f"{name}: rot_k"
        )


def test_left_padded_row_equals_the_unpadded_run():
    """The right-padded row of the test above is the prompt alone: against an unpadded run."""
    model = _loaded("llama")
    tokens = np.zeros((2, N_POS), np.int32)
    mask = np.zeros_like(tokens)
    real = np.random.default_rng(2).integers(1, model.cfg.d_vocab, SHORT)
    tokens[0, N_POS - SHORT :], mask[0, N_POS - SHORT :] = real, 1
    np.testing.assert_allclose(
        np.asarray(_run(model, tokens, mask)[0])[0, N_POS - SHORT :],
        np.asarray(model(real)),
        atol=1e-5,
        rtol=0,
    )


def test_hf_left_padding_with_position_ids_matches():
    """A second reference: HF itself on the left-padded batch, given the attention mask
    and position_ids derived from it (as `generate` does), matches our padded batch on
    the real tokens (rotary Llama with GQA, learned-position GPT-2)."""
    for name in ("llama", "gpt2", "qwen3"):
        hf, path = hf_model(name)
        model = _loaded(name)
        mask = np.ones((2, N_POS), np.int32)
        mask[1, : N_POS - SHORT] = 0
        tokens = np.random.default_rng(3).integers(1, model.cfg.d_vocab, (2, N_POS)).astype(np.int32) * mask
        position_ids = np.maximum(np.cumsum(mask, -1) - 1, 0)
        with torch.no_grad():
            ref = hf(
                torch.tensor(tokens).long(),
                attention_mask=torch.tensor(mask).long(),
                position_ids=torch.tensor(position_ids).long(),
            ).logits.numpy()
        ours = np.asarray(_run(model, tokens, mask)[0])
        np.testing.assert_allclose(ours[mask == 1], ref[mask == 1], atol=TOL, rtol=0, err_msg=name)
