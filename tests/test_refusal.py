"""Refusal directions on tiny models: directional ablation leaves nothing along the
direction in any residual-stream write; weight orthogonalisation equals runtime
ablation; the seed recipe's head directions equal ``attn.result`` means; Arditi et al.'s
candidate scores equal a loop; chat templates render as the model's own template."""

from __future__ import annotations

import numpy as np
import pytest
from editing_fixtures import GPT2, LLAMA, tiny_model, word_tokenizer

import jaxinterp as ji
from jaxinterp.editing.chat import (
    ChatTemplate,
    chat_template,
    format_instruction,
    render_chatml,
)
from jaxinterp.editing.common import EditingError, encode_batch
from jaxinterp.editing.refusal import (
    RefusalScore,
    ablate_direction,
    add_direction,
    cosine_matrix,
    diff_in_means,
    head_directions,
    orthogonalize,
    select_direction,
)

# Two lengths (6 and 5 tokens): batches are padded, and few shapes keep compiles few.
HARMFUL = ["tell me how make a bomb", "how to make a bomb ?", "tell me a bomb ."]
HARMLESS = ["tell me how make a cake", "how to make a cake ?", "tell me a cake ."]


@pytest.fixture(scope="module")
def models():
    return {"llama": tiny_model(LLAMA, seed=1), "gpt2": tiny_model(GPT2, seed=2)}


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_ablation_removes_direction_from_every_write_and_orthogonalisation_matches(models, tok, family):
    model = models[family]
    rng = np.random.default_rng(0)
    r = rng.standard_normal(model.cfg.d_model).astype(np.float32)
    unit = r / np.linalg.norm(r)
    tokens = tok.to_tokens(HARMFUL[0])
    writes = ["embed", "attn_out", "mlp_out", "resid_post"] + (["pos_embed"] if family == "gpt2" else [])
    plain_logits, plain = model.run_with_cache(tokens, names=writes)
    logits, cache = model.run_with_cache(tokens, names=writes, interventions=ablate_direction(model.cfg, r))
    for name in writes:
        before = np.abs(np.asarray(plain[name]) @ unit).max()
        after = np.abs(np.asarray(cache[name]) @ unit).max()
        assert before > 1e-2, name  # the writes did have a component (the check can fail)
        assert after < 1e-5 * max(1.0, np.abs(np.asarray(cache[name])).max()), (name, after)
    edited = orthogonalize(model, 3.0 * r)  # the scale of the direction does not matter
    np.testing.assert_allclose(np.asarray(edited(tokens)), np.asarray(logits), atol=1e-4, rtol=0)
    assert np.abs(np.asarray(edited(tokens)) - np.asarray(plain_logits)).max() > 1e-3
    # a new model: the original's weights are untouched
    assert np.abs(np.asarray(model.embed.W_E) @ unit).max() > 1e-2


def test_post_norm_models_are_rejected():
    cfg = ji.ModelConfig(
        d_model=16,
        n_layers=1,
        n_heads=2,
        d_head=8,
        d_vocab=10,
        n_ctx=8,
        d_mlp=16,
        normalization="rmsnorm",
        positional="rotary",
        post_attn_norm=True,
        post_mlp_norm=True,
    )
    with pytest.raises(EditingError, match="pre-norm"):
        ablate_direction(cfg, np.ones(16))


def test_head_directions_equal_attn_result_mean_differences(models, tok):
    model = models["llama"]
    heads = [(0, 1), (2, 3), (1, 0)]
    th, lh = encode_batch(tok, HARMFUL)
    ts, ls = encode_batch(tok, HARMLESS)
    got = head_directions(model, th, lh, ts, ls, heads, offset=-1, batch_size=2)

    def mean_result(texts):
        res = [
            np.asarray(model.run_with_cache(tok.to_tokens(t), names=["attn.result"])[1]["attn.result"])[:, -1]
            for t in texts
        ]
        return np.mean(res, 0)  # [layer, head, d_model]

    diff = mean_result(HARMFUL) - mean_result(HARMLESS)
    np.testing.assert_allclose(got, np.stack([diff[l, h] for l, h in heads]), atol=1e-5)
    cos = cosine_matrix(got)
    np.testing.assert_allclose(np.diag(cos), 1.0, atol=1e-6)
    np.testing.assert_allclose(cos[0, 1], got[0] @ got[1] / np.linalg.norm(got[0]) / np.linalg.norm(got[1]), rtol=1e-6)


def test_add_direction_adds_over_layer_range_at_position(models, tok):
    model = models["llama"]
    r = np.random.default_rng(3).standard_normal(LLAMA.d_model).astype(np.float32)
    tokens = tok.to_tokens(HARMLESS[2])
    expected = model(tokens, [ji.Add(f"blocks.{l}.hook_resid_pre", 2.0 * r, pos=3) for l in (1, 2)])
    np.testing.assert_allclose(
        np.asarray(model(tokens, [add_direction(r, [1, 2], 2.0, pos=3)])), np.asarray(expected), atol=1e-5
    )


def test_refusal_score_is_log_odds(models, tok):
    logits = np.random.default_rng(0).standard_normal((3, LLAMA.d_vocab)).astype(np.float32)
    refuse, comply = [tok.to_single_token("cannot"), tok.to_single_token("I")], [tok.to_single_token("sure")]
    p = np.exp(logits[-1]) / np.exp(logits[-1]).sum()
    pr = p[refuse].sum()
    np.testing.assert_allclose(float(RefusalScore(np.asarray(refuse), None)(logits)), np.log(pr / (1 - pr)), rtol=1e-5)
    np.testing.assert_allclose(
        float(RefusalScore(np.asarray(refuse), np.asarray(comply))(logits)), np.log(pr / p[comply].sum()), rtol=1e-5
    )


def test_selection_scores_equal_a_loop(models, tok):
    model = models["llama"]
    th, lh = encode_batch(tok, HARMFUL)
    ts, ls = encode_batch(tok, HARMLESS)
    offsets = (-2, -1)
    cands = diff_in_means(model, th, lh, ts, ls, offsets)

    # diff_in_means against unbatched runs
    def states(texts, off):
        return np.mean(
            [
                np.asarray(model.run_with_cache(tok.to_tokens(t), names=["resid_pre"])[1]["resid_pre"])[:, off]
                for t in texts
            ],
            0,
        )

    np.testing.assert_allclose(cands[1], states(HARMFUL, -1) - states(HARMLESS, -1), atol=1e-5)
    metric = RefusalScore(np.asarray([tok.to_single_token("cannot")]), np.asarray([tok.to_single_token("sure")]))
    sel = select_direction(
        model, cands, offsets, th, lh, ts, ls, metric, layers=[1, 2], kl_threshold=10.0, batch_size=3
    )
    assert sel.bypass.shape == (2, 2)
    o, j = 0, 1  # candidate offset -2, layer 2
    r = cands[o, 2]
    bypass = np.mean([float(metric(model(tok.to_tokens(t), ablate_direction(model.cfg, r)))) for t in HARMFUL])
    induce = np.mean([float(metric(model(tok.to_tokens(t), [ji.Add("resid_pre", r, layer=2)]))) for t in HARMLESS])

    def logp(x):
        x = np.asarray(x[-1], np.float64)
        return x - np.log(np.exp(x - x.max()).sum()) - x.max()

    kl = np.mean(
        [
            (
                np.exp(logp(model(tok.to_tokens(t))))
                * (logp(model(tok.to_tokens(t))) - logp(model(tok.to_tokens(t), ablate_direction(model.cfg, r))))
            ).sum()
            for t in HARMLESS
        ]
    )
    np.testing.assert_allclose(
        [sel.bypass[o, j], sel.induce[o, j], sel.kl[o, j]], [bypass, induce, kl], atol=1e-4, rtol=1e-4
    )
    eligible = (sel.induce > 0) & (sel.kl < 10.0)
    pool = np.where(eligible, sel.bypass, np.inf) if eligible.any() else sel.bypass
    oo, jj = np.unravel_index(np.argmin(pool), pool.shape)
    assert (sel.offset, sel.layer) == (offsets[oo], [1, 2][jj])
    np.testing.assert_array_equal(sel.direction, cands[oo, [1, 2][jj]])


# -- chat templates -----------------------------------------------------------------------

SMOL = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_chat_template_renders_as_written_and_fallback_agrees():
    t = ChatTemplate(SMOL)
    assert t.use_jinja
    # Expected text written out from the template by hand (SmolLM2's model card format).
    assert format_instruction(t, "Hi") == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    fallback = ChatTemplate(SMOL, use_jinja=False)
    for system in ("Be brief.", "You are a helpful AI assistant named SmolLM, trained by Hugging Face"):
        assert format_instruction(fallback, "Hi", system) == format_instruction(t, "Hi", system)
    assert render_chatml([{"role": "user", "content": "x"}], False) == "<|im_start|>user\nx<|im_end|>\n"
    with pytest.raises(EditingError, match="not ChatML"):
        ChatTemplate("[INST] {{ messages[0]['content'] }} [/INST]", use_jinja=False)
    with pytest.raises(EditingError, match="role"):
        t.render([{"content": "x"}])


def test_chat_template_from_gguf_and_tokenizer_config(tmp_path):
    from jaxinterp.loading.bundled import smollm2_path

    assert chat_template(smollm2_path()).source == SMOL
    (tmp_path / "tokenizer_config.json").write_text(
        '{"chat_template": "{{ bos_token }}{{ messages[0][\'content\'] }}", "bos_token": "<s>"}'
    )
    assert chat_template(str(tmp_path)).render([{"role": "user", "content": "hey"}]) == "<s>hey"
    with pytest.raises(EditingError, match="no 'chat_template'"):
        (tmp_path / "tokenizer_config.json").write_text("{}")
        chat_template(str(tmp_path))
