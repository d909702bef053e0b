"""Must-show 2 and the lens tools, on tiny HF-loaded models (LayerNorm with biases,
GQA RMSNorm, Gemma 2's output norms and soft-capping):

- the direct logit attributions of all components sum to the logit difference (1e-4);
- the decomposition sums to the final residual, and accumulates to every layer's input;
- a last-layer component's attribution equals the effect of ablating it with the norm
  scales frozen (a causal reference);
- the logit lens matches a numpy norm + unembedding of each layer's residual."""

from __future__ import annotations

import numpy as np
import pytest
from hf_models import hf_model

import jaxinterp as ji
from jaxinterp import lens

pytest.importorskip("torch")

FAMILIES = ["gpt2", "llama", "gemma2"]  # LayerNorm + biases; GQA RMSNorm; output norms, 1+w, soft-capping
TOL = 1e-4
ANSWER, WRONG = 7, 11


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    _, path = hf_model(request.param)
    model = ji.load(path)
    tokens = np.random.default_rng(0).integers(0, model.cfg.d_vocab, size=(2, 10))
    logits, cache = model.run_with_cache(tokens, names=lambda n: True)  # everything, attn.result too
    # (Tests below reuse this cache: every other set of cached names is another compile.)
    return request.param, model, tokens, cache, np.asarray(logits)


def _pre_cap_logits(model, cache):
    """The logits before final soft-capping, from the model's own final-norm output."""
    normalized = np.asarray(cache["ln_final.normalized"], np.float64)
    W_U = np.asarray(model.unembed.W_U, np.float64)
    b_U = 0 if model.unembed.b_U is None else np.asarray(model.unembed.b_U, np.float64)
    return normalized @ W_U + b_U


def test_dla_sums_to_logit_difference(family):
    name, model, tokens, cache, model_logits = family
    logits = _pre_cap_logits(model, cache)
    if model.cfg.final_logit_softcap is None:
        np.testing.assert_allclose(logits, model_logits, atol=TOL)
    for by in ("head", "layer"):
        dla = lens.direct_logit_attribution(model, tokens, ANSWER, WRONG, pos=-1, by=by, cache=cache)
        assert dla.dims == ("component", "batch")
        expect = logits[:, -1, ANSWER] - logits[:, -1, WRONG]
        np.testing.assert_allclose(np.asarray(dla).sum(0), expect, atol=TOL, err_msg=f"{name} by={by}")
    # One answer per prompt, at another position.
    answers, wrongs = np.array([3, 5]), np.array([9, 2])
    dla = lens.direct_logit_attribution(model, tokens, answers, wrongs, pos=4, cache=cache)
    expect = logits[[0, 1], 4, answers] - logits[[0, 1], 4, wrongs]
    np.testing.assert_allclose(np.asarray(dla).sum(0), expect, atol=TOL)
    # Unbatched tokens, no cache, no wrong answer: the sum is the answer's logit itself.
    single = lens.direct_logit_attribution(model, tokens[1], ANSWER)
    assert single.dims == ("component",)
    np.testing.assert_allclose(np.asarray(single).sum(), logits[1, -1, ANSWER], atol=TOL)


def test_decomposition_sums_and_accumulates(family):
    name, model, tokens, cache, model_logits = family
    final = np.asarray(cache["resid_post"][-1])
    for by in ("head", "layer"):
        stack, labels = lens.decompose_resid(model, cache=cache, by=by)
        assert len(labels) == stack.shape[0] and stack.shape[1:] == final.shape
        np.testing.assert_allclose(np.asarray(stack).sum(0), final, atol=TOL, err_msg=f"{name} by={by}")
    if by == "head":
        assert f"L1H{model.cfg.n_heads - 1}" in labels
    acc, acc_labels = lens.accumulated_resid(model, cache=cache)
    assert acc_labels == [f"L{l}_pre" for l in range(model.cfg.n_layers)] + ["final"]
    # Running sums of the per-layer decomposition reach each layer's input and the end.
    stack, labels = lens.decompose_resid(model, cache=cache, by="layer")
    stack = np.asarray(stack)
    for layer in range(model.cfg.n_layers + 1):
        upto = [i for i, lab in enumerate(labels) if not lab.startswith("L") or int(lab[1:].split("_")[0]) < layer]
        np.testing.assert_allclose(
            stack[upto].sum(0), np.asarray(acc[layer]), atol=TOL, err_msg=f"{name} layer {layer}"
        )
    # The last accumulated residual is what the model's final norm reads.
    normed = model.ln_final(acc[-1], lambda n, x: x, "ln_final")
    np.testing.assert_allclose(np.asarray(normed), np.asarray(cache["ln_final.normalized"]), atol=TOL)


def test_last_layer_attribution_equals_frozen_scale_ablation(family):
    name, model, tokens, cache, model_logits = family
    cfg = model.cfg
    last = cfg.n_layers - 1
    dla = lens.direct_logit_attribution(model, tokens, ANSWER, WRONG, by="head", cache=cache)
    index = {lab: i for i, lab in enumerate(dla.labels["component"])}

    H = cfg.n_heads

    def logit_diff(b, ablate_head=None, ablate_mlp=False):
        """Logit difference of prompt b with the norms' scales frozen at their clean
        values and one last-layer head or MLP zero-ablated at the last position. The last
        MLP reads the heads' output, so it is frozen too unless it is the one ablated.
        (One intervention structure throughout, switched by masks: one compile.)"""
        at_last = np.arange(tokens.shape[1]) == tokens.shape[1] - 1
        ivs = [ji.Patch("ln_final.scale", cache["ln_final.scale"][b])]
        if cfg.post_attn_norm:
            ivs.append(ji.Patch("ln1_post.scale", cache["ln1_post.scale"][last, b], layer=last))
        heads = np.arange(H) == (-1 if ablate_head is None else ablate_head)
        ivs.append(ji.Ablate("attn.result", layer=last, head=heads, pos=at_last))
        if cfg.has_mlp:
            ivs.append(ji.Patch("mlp_out", cache["mlp_out"][last, b], layer=last))
            ivs.append(ji.Ablate("mlp_out", layer=last, pos=at_last & ablate_mlp))
        _, c = model.run_with_cache(tokens[b], names=["ln_final.normalized"], interventions=ivs)
        lg = _pre_cap_logits(model, c)
        return lg[-1, ANSWER] - lg[-1, WRONG]

    for b in range(tokens.shape[0]):
        clean = logit_diff(b)
        for head in range(H):
            got = np.asarray(dla)[index[f"L{last}H{head}"], b]
            np.testing.assert_allclose(
                clean - logit_diff(b, ablate_head=head), got, atol=TOL, err_msg=f"{name} head {head}"
            )
        if cfg.has_mlp:
            got = np.asarray(dla)[index[f"L{last}_mlp"], b]
            np.testing.assert_allclose(clean - logit_diff(b, ablate_mlp=True), got, atol=TOL)
    heads = lens.head_logit_attribution(model, tokens, ANSWER, WRONG, cache=cache)
    assert heads.dims == ("layer", "head") and heads.shape == (cfg.n_layers, cfg.n_heads)
    np.testing.assert_allclose(np.asarray(heads)[last, 1], np.asarray(dla)[index[f"L{last}H1"]].mean(), atol=1e-6)


def _np_norm(model, x):
    """The final norm in numpy, from the config (the reference for the logit lens)."""
    n = model.ln_final
    x = np.asarray(x, np.float64)
    if n.kind == "layernorm":
        x = x - x.mean(-1, keepdims=True)
    x = x / np.sqrt((x * x).mean(-1, keepdims=True) + n.eps)
    x = x * (np.asarray(n.w, np.float64) + n.weight_offset)
    return x if n.b is None else x + np.asarray(n.b, np.float64)


def test_logit_lens_matches_numpy(family):
    name, model, tokens, cache, model_logits = family
    lensed = lens.logit_lens(model, tokens, pos=-1, cache=cache)
    L = model.cfg.n_layers
    assert lensed.dims == ("layer", "batch", "d_vocab") and lensed.shape[0] == L + 1
    assert lensed.labels["layer"][-1] == "final"
    W_U = np.asarray(model.unembed.W_U, np.float64)
    b_U = 0 if model.unembed.b_U is None else np.asarray(model.unembed.b_U, np.float64)
    cap = model.cfg.final_logit_softcap
    for layer in range(L + 1):
        resid = cache["resid_pre"][layer] if layer < L else cache["resid_post"][-1]
        expect = _np_norm(model, np.asarray(resid)[:, -1]) @ W_U + b_U
        if cap is not None:
            expect = np.tanh(expect / cap) * cap
        np.testing.assert_allclose(np.asarray(lensed)[layer], expect, atol=TOL, err_msg=f"{name} layer {layer}")
    np.testing.assert_allclose(np.asarray(lensed)[-1], model_logits[:, -1], atol=TOL)
    every = lens.logit_lens(model, cache=cache, pos=None)
    assert every.dims == ("layer", "batch", "pos", "d_vocab")
    np.testing.assert_allclose(np.asarray(every)[:, :, -1], np.asarray(lensed), atol=1e-5)


def test_token_ranks():
    logits = np.random.default_rng(0).normal(size=(3, 4, 50))
    ranks = lens.token_ranks(logits, np.array([1, 2, 3, 4]))
    for i in range(3):
        for j in range(4):
            assert ranks[i, j] == list(np.argsort(-logits[i, j])).index(j + 1)


def test_post_norm_models_are_refused():
    _, path = hf_model("bert")
    model = ji.load(path)
    with pytest.raises(ValueError, match="post-norm"):
        lens.decompose_resid(model, np.arange(5))
    with pytest.raises(ValueError, match="no unembedding"):
        lens.logit_lens(model, np.arange(5))


def test_bad_arguments_are_explained(family):
    name, model, tokens, cache, _ = family
    with pytest.raises(ValueError, match="pass tokens or a cache"):
        lens.logit_lens(model)
    with pytest.raises(ValueError, match="'layer' or 'head'"):
        lens.decompose_resid(model, cache=cache, by="neuron")
    with pytest.raises(KeyError, match="not cached"):
        lens.accumulated_resid(model, cache=ji.ActivationCache({"embed": cache["embed"]}, model.cfg, batched=True))


# ------------------------------------------------------- must-show 5: SmolLM2 on IOI

IOI = [
    ("When Mary and John went to the store, John gave a drink to", " Mary", " John"),
    ("When John and Mary went to the store, Mary gave a drink to", " John", " Mary"),
    ("When Tom and James went to the park, James gave a ball to", " Tom", " James"),
    ("When James and Tom went to the park, Tom gave a ball to", " James", " Tom"),
]


def test_smollm2_ioi_name_movers_and_late_answer(smollm2, smollm2_tokenizer):
    model, tok = smollm2, smollm2_tokenizer
    tokens = np.array([tok.encode(p) for p, _, _ in IOI])
    answers = np.array([tok.to_single_token(a) for _, a, _ in IOI])
    wrongs = np.array([tok.to_single_token(w) for _, _, w in IOI])
    names = ["embed", "attn_out", "mlp_out", "ln_final.scale", "attn.result", "attn.pattern", "resid_pre", "resid_post"]
    logits, cache = model.run_with_cache(tokens, names=names)
    rows = np.arange(len(IOI))
    diff = np.asarray(logits)[rows, -1, answers] - np.asarray(logits)[rows, -1, wrongs]
    assert (diff > 1).all()  # the model does the task

    dla = lens.direct_logit_attribution(model, tokens, answers, wrongs, cache=cache)
    np.testing.assert_allclose(np.asarray(dla).sum(0), diff, atol=TOL)
    heads = np.asarray(lens.head_logit_attribution(model, tokens, answers, wrongs, cache=cache))
    L, H = heads.shape
    top = [divmod(int(i), H) for i in np.argsort(-heads.ravel())[:3]]
    assert all(layer >= 2 * L // 3 for layer, _ in top), top  # all in the last third
    # Name-mover-like: one of them attends from the last token mostly to the indirect
    # object (the answer's earlier occurrence), not to the subject.
    pattern = np.asarray(cache["attn.pattern"])[:, :, :, -1]  # [layer, batch, head, key]
    io_pos = [list(tokens[b]).index(answers[b]) for b in rows]
    s_pos = [[i for i, t in enumerate(tokens[b]) if t == wrongs[b]] for b in rows]
    to_io = np.array([[pattern[l, b, h, io_pos[b]] for b in rows] for l, h in top])  # [head, batch]
    to_s = np.array([[pattern[l, b, h, s_pos[b]].max() for b in rows] for l, h in top])
    assert ((to_io > 0.4) & (to_io > 2 * to_s)).all(axis=1).any(), (top, to_io, to_s)

    # Logit lens: the answer is top-1 at the output, and at no earlier layer.
    lensed = np.asarray(lens.logit_lens(model, cache=cache))  # [layer, batch, d_vocab]
    ranks = lens.token_ranks(lensed, answers[None, :])
    assert (ranks[-1] == 0).all() and (ranks[:-1] > 0).all()
    assert (ranks[: L // 2] > 100).all()  # far from the top in the first half of the model
