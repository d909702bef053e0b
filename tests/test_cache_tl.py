"""TransformerLens habits on the cache: a TL-style script keeps its meaning.

References: TransformerLens's own documented `get_act_name` examples (the strings in its
docstring), TransformerLens's cache semantics written out from arrays we index by hand
(``cache["resid_pre", 3]`` is layer 3 of the stack; ``stack_activation`` the first
``layer`` layers; ``hook_mlp_in`` the stream the MLP's norm reads), the existing lens
functions, and the closed form "the components of the residual stream sum to it"."""

from __future__ import annotations

import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.analysis import lens
from jaxinterp.toy import random_model

N_LAYERS = 6  # get_act_name("pattern", 5) must name a real layer
TOL = 1e-5


@pytest.fixture(scope="module")
def run():
    cfg = ji.ModelConfig(d_model=16, n_layers=N_LAYERS, n_heads=2, d_head=8, d_vocab=32, n_ctx=16, d_mlp=32)
    model = random_model(cfg, seed=0, std=0.2, norm_std=0.1)
    tokens = np.random.default_rng(0).integers(0, 32, (2, 7))
    logits, cache = model.run_with_cache(tokens, names=None)
    return model, tokens, logits, cache


@pytest.mark.parametrize(
    "args, full",
    [  # TransformerLens's docstring examples, verbatim
        (("k", 6, "a"), "blocks.6.attn.hook_k"),
        (("pre", 2), "blocks.2.mlp.hook_pre"),
        (("embed",), "hook_embed"),
        (("normalized", 27, "ln2"), "blocks.27.ln2.hook_normalized"),
        (("k6",), "blocks.6.attn.hook_k"),
        (("scale4ln1",), "blocks.4.ln1.hook_scale"),
        (("pre5",), "blocks.5.mlp.hook_pre"),
        (("pattern", 5), "blocks.5.attn.hook_pattern"),
        (("attn", 5), "blocks.5.attn.hook_pattern"),
        (("resid_pre", 3), "blocks.3.hook_resid_pre"),
        (("scale",), "ln_final.hook_scale"),
        (("blocks.1.hook_resid_post",), "blocks.1.hook_resid_post"),
    ],
)
def test_get_act_name_matches_transformerlens(args, full):
    assert ji.get_act_name(*args) == full


def test_tuple_keys_index_one_layer(run):
    model, _, _, cache = run
    stack = np.asarray(cache["resid_pre"])  # [layer, batch, pos, d_model]
    np.testing.assert_array_equal(np.asarray(cache["resid_pre", 3]), stack[3])
    np.testing.assert_array_equal(np.asarray(cache["resid_pre", -1]), stack[N_LAYERS - 1])
    np.testing.assert_array_equal(np.asarray(cache["blocks.5.attn.hook_pattern"]), np.asarray(cache["attn.pattern"])[5])
    np.testing.assert_array_equal(
        np.asarray(cache[ji.get_act_name("pattern", 5)]), np.asarray(cache["attn.pattern"])[5]
    )
    np.testing.assert_array_equal(np.asarray(cache["scale", 2, "ln1"]), np.asarray(cache["ln1.scale"])[2])
    np.testing.assert_array_equal(np.asarray(cache["scale", None]), np.asarray(cache["ln_final.scale"]))
    assert ("resid_pre", 3) in cache and ("rot_q", 1) not in cache  # no rotary in this model
    with pytest.raises(ji.SiteError, match="out of range"):
        cache["resid_pre", N_LAYERS]


def test_stack_activation(run):
    _, _, _, cache = run
    full = np.asarray(cache["attn.z"])
    np.testing.assert_array_equal(np.asarray(cache.stack_activation("z")), full)
    np.testing.assert_array_equal(np.asarray(cache.stack_activation("z", layer=2)), full[:2])
    np.testing.assert_array_equal(np.asarray(cache.stack_activation("scale", sublayer_type="ln2")), cache["ln2.scale"])


def test_mlp_in_and_attn_in_are_the_streams_they_copy(run):
    """TL's hook_mlp_in is resid_mid (what ln2 reads); hook_attn_in is resid_pre per head.
    The MLP's own computation is the reference: ln2 of mlp_in gives the cached
    ln2.normalized."""
    model, _, _, cache = run
    mlp_in = cache["blocks.2.hook_mlp_in"]
    np.testing.assert_array_equal(np.asarray(mlp_in), np.asarray(cache["resid_mid"])[2])
    ln2 = model.blocks.ln2
    w, b = np.asarray(ln2.w)[2], np.asarray(ln2.b)[2]
    x = np.asarray(mlp_in, np.float64)
    centred = x - x.mean(-1, keepdims=True)
    normed = centred / np.sqrt((centred**2).mean(-1, keepdims=True) + model.cfg.norm_eps) * w + b
    np.testing.assert_allclose(normed, np.asarray(cache["ln2.normalized"])[2], atol=TOL)
    attn_in = np.asarray(cache["attn_in", 1])  # [batch, pos, head, d_model]
    assert attn_in.shape == (2, 7, 2, 16)
    for h in range(2):
        np.testing.assert_array_equal(attn_in[:, :, h], np.asarray(cache["resid_pre"])[1])
    with pytest.raises(ji.SiteError, match="ln2.normalized"):  # not an intervention site
        model(np.zeros(3, np.int32), [ji.Add("blocks.0.hook_mlp_in", np.zeros(16))])


def test_accumulated_and_decomposed_resid(run):
    model, _, _, cache = run
    acc, labels = cache.accumulated_resid(return_labels=True)
    assert labels == [f"{i}_pre" for i in range(N_LAYERS)] + ["final_post"]
    ref, _ = lens.accumulated_resid(model, cache=cache)
    np.testing.assert_array_equal(np.asarray(acc), np.asarray(ref))
    mids, mid_labels = cache.accumulated_resid(layer=2, incl_mid=True, return_labels=True)
    assert mid_labels == ["0_pre", "0_mid", "1_pre", "1_mid", "2_pre"]
    np.testing.assert_array_equal(np.asarray(mids[3]), np.asarray(cache["resid_mid", 1]))

    parts, names = cache.decompose_resid(return_labels=True)
    assert names[:2] == ["embed", "pos_embed"] and names[2:4] == ["0_attn_out", "0_mlp_out"]
    np.testing.assert_allclose(np.asarray(parts).sum(0), np.asarray(cache["resid_post", -1]), atol=TOL)
    ref_parts, _ = lens.decompose_resid(model, cache=cache)
    np.testing.assert_array_equal(np.asarray(parts), np.asarray(ref_parts))
    # The stream entering layer 3 (TL's layer=3) and the MLP's input there (mlp_input).
    upto3 = cache.decompose_resid(layer=3)
    np.testing.assert_allclose(np.asarray(upto3).sum(0), np.asarray(cache["resid_pre", 3]), atol=TOL)
    mlp3 = cache.decompose_resid(layer=3, mlp_input=True)
    np.testing.assert_allclose(np.asarray(mlp3).sum(0), np.asarray(cache["mlp_in", 3]), atol=TOL)
    assert len(cache.decompose_resid(mode="attn", incl_embeds=False)) == N_LAYERS


def test_names_filter_is_names_on_full_names(run):
    model, tokens, logits, cache = run
    # TL's predicate sees full names: this one keeps only layer 3's resid_pre.
    logits_f, small = model.run_with_cache(tokens, names_filter=lambda n: n == "blocks.3.hook_resid_pre")
    assert set(small.keys()) == {"resid_pre"}
    # Another compiled program: equal up to float reassociation.
    np.testing.assert_allclose(np.asarray(small["resid_pre", 3]), np.asarray(cache["resid_pre", 3]), atol=TOL)
    np.testing.assert_allclose(np.asarray(logits_f), np.asarray(logits), atol=TOL)
    _, listed = model.run_with_cache(tokens, names_filter=[ji.get_act_name("pattern", 5), "hook_embed"])
    assert set(listed.keys()) == {"attn.pattern", "embed"}
    with pytest.raises(ji.SiteError, match="not both"):
        model.run_with_cache(tokens, names=["embed"], names_filter=["embed"])


def test_bad_cache_keys_are_named(run):
    _, _, _, cache = run
    with pytest.raises(ji.SiteError, match="tuples"):
        cache[("resid_pre", 1, "a", "b")]
    with pytest.raises(ji.SiteError, match="layer must be"):
        cache.accumulated_resid(layer=N_LAYERS + 1)
    with pytest.raises(ji.SiteError, match="mode"):
        cache.decompose_resid(mode="heads")
