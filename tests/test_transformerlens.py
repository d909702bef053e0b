"""jaxinterp against TransformerLens itself (3.9, a test extra) on the same tiny GPT-2.

A TransformerLens-style script (``run_with_cache``, ``cache["resid_pre", 1]``,
``get_act_name``, the split-input hooks) is run on both libraries and must mean the same
thing; per-head input patching (``hook_q_input`` / ``hook_k_input`` / ``hook_v_input``
under ``use_split_qkv_input``) is computed by TransformerLens with forward hooks, one
patched run per cell, and by jaxinterp's `activation_patch` in one sweep.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformer_lens.utils as tl_utils

import jaxinterp as ji
from jaxinterp.causal.patching import activation_patch
from jaxinterp.core.errors import PatchingError
from jaxinterp.core.metrics import logit_diff

CLEAN = [5, 17, 42, 8, 99, 23, 61]
CORRUPT = [5, 17, 30, 8, 71, 23, 61]
ANSWER, WRONG = 12, 40


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import transformers
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights

    # Weights large enough (initializer_range) that one head's input at one position
    # moves the logits measurably; random norm weights so ln1's per-head copy matters.
    c = transformers.GPT2Config(vocab_size=101, n_embd=32, n_layer=2, n_head=4, n_positions=64, initializer_range=0.25)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(c).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.2 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("gpt2") / "model"
    hf.save_pretrained(path)
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer,
        d_model=c.n_embd,
        n_ctx=c.n_positions,
        d_head=c.n_embd // c.n_head,
        n_heads=c.n_head,
        d_mlp=4 * c.n_embd,
        d_vocab=c.vocab_size,
        act_fn="gelu_new",
        normalization_type="LN",
        eps=c.layer_norm_epsilon,
        use_split_qkv_input=True,
        default_prepend_bos=False,
    )
    reference = HookedTransformer(cfg)
    reference.load_and_process_state_dict(
        convert_gpt2_weights(hf, cfg),
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
    )
    reference.eval()
    return reference, ji.load(str(path)).with_split_qkv_input()


def test_a_transformerlens_script_means_the_same(models):
    reference, model = models
    tokens = torch.tensor([CLEAN])
    with torch.no_grad():
        tl_logits, tl_cache = reference.run_with_cache(tokens)
    logits, cache = model.run_with_cache(np.array(CLEAN))
    np.testing.assert_allclose(np.asarray(logits), tl_logits[0].numpy(), atol=1e-4)
    # The same keys, written the TransformerLens way, name the same activations.
    for key in [
        ("resid_pre", 1),
        ("resid_post", 0),
        ("attn_out", 1),
        ("q_input", 1),
        ("k_input", 0),
        ("v_input", 1),
        ("z", 0, "attn"),
        ("post", 1, "mlp"),
        ("pattern", 1),
    ]:
        name = tl_utils.get_act_name(*key)
        assert ji.get_act_name(*key) == name, key
        np.testing.assert_allclose(np.asarray(cache[name]), tl_cache[name][0].numpy(), atol=1e-4, err_msg=name)
    np.testing.assert_allclose(np.asarray(cache["resid_pre", 1]), tl_cache["resid_pre", 1][0].numpy(), atol=1e-4)
    for shorthand in ["k6", "scale4ln1", "attn_logits", "mlp_post", "scale"]:
        assert ji.get_act_name(shorthand) == tl_utils.get_act_name(shorthand), shorthand


def _tl_patch_sweep(reference, hook: str, n_heads: int) -> np.ndarray:
    """``[layer, pos, head]``: TransformerLens's patching of one head's input at one
    position, clean into corrupted: per layer, one hooked run over a batch whose row
    ``(pos, head)`` is the corrupted prompt with that one cell patched."""
    n_pos = len(CLEAN)
    cells = [(pos, head) for pos in range(n_pos) for head in range(n_heads)]
    rows = torch.arange(len(cells))
    pos_idx = torch.tensor([p for p, _ in cells])
    head_idx = torch.tensor([h for _, h in cells])
    with torch.no_grad():
        _, clean_cache = reference.run_with_cache(torch.tensor([CLEAN]))
        out = []
        for layer in range(reference.cfg.n_layers):
            name = tl_utils.get_act_name(hook, layer)

            def patch(x, hook, name=name):
                x[rows, pos_idx, head_idx] = clean_cache[name][0, pos_idx, head_idx]
                return x

            logits = reference.run_with_hooks(torch.tensor([CORRUPT] * len(cells)), fwd_hooks=[(name, patch)])
            out.append((logits[:, -1, ANSWER] - logits[:, -1, WRONG]).numpy().reshape(n_pos, n_heads))
    return np.stack(out)


@pytest.mark.parametrize("site", ["q_input", "k_input", "v_input"])
def test_split_input_patching_equals_transformerlens(models, site):
    reference, model = models
    expected = _tl_patch_sweep(reference, site, reference.cfg.n_heads)
    assert np.ptp(expected) > 1e-3, "the patches must move the metric for the comparison to mean anything"
    got = activation_patch(
        model, np.array(CLEAN), np.array(CORRUPT), logit_diff(ANSWER, WRONG), site, ("layer", "pos", "head")
    )
    assert got.dims == ("layer", "pos", "head")
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-4, rtol=1e-4)


def test_split_inputs_change_nothing_until_edited_and_need_the_plain_engine(models):
    _, model = models
    shared = model.with_split_qkv_input(False)
    np.testing.assert_allclose(np.asarray(model(np.array(CLEAN))), np.asarray(shared(np.array(CLEAN))), atol=1e-5)
    with pytest.raises(ji.errors.SiteError, match="q_input"):
        shared.run_with_cache(np.array(CLEAN), names=["q_input"])
    with pytest.raises(PatchingError, match="split_qkv_input"):
        activation_patch(model, np.array(CLEAN), np.array(CORRUPT), logit_diff(ANSWER, WRONG), "q_input", engine="fast")
    with pytest.raises(ji.errors.ConfigError, match="True or False"):
        model.with_split_qkv_input("yes")
