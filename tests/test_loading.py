"""Loading paths other than a plain single-file HF directory: sharded safetensors, hub ids
resolved offline from an HF cache, GGUF files (llama and qwen2, quantised), bf16, pickle
opt-in; and one test per bad input, asserting the error type and that the message names
the problem. References: transformers' own loads of the same files."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest
from hf_models import TINY, hf_model
from safetensors.numpy import load_file, save_file

import jaxinterp
from jaxinterp.loading import CheckpointError, UnsupportedArchitectureError
from jaxinterp.loading.tokenizer import TokenizerError, load_tokenizer

torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")

TOL = 1e-4
TOKENS = np.random.default_rng(0).integers(0, TINY["vocab_size"], size=(2, 10))


def hf_logits(model, tokens=TOKENS) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.numpy()


@pytest.fixture(scope="module")
def llama():
    """(torch model, saved dir) of the tiny random Llama (GQA, llama3 rope scaling)."""
    return hf_model("llama")


@pytest.fixture
def llama_copy(llama, tmp_path):
    """A private copy of the tiny Llama's directory, for a test to damage."""
    path = tmp_path / "model"
    shutil.copytree(llama[1], path)
    return path


def edit_tensors(path, fn) -> None:
    file = os.path.join(path, "model.safetensors")
    tensors = load_file(file)
    fn(tensors)
    save_file(tensors, file)


# -- loading paths ------------------------------------------------------------------------


def test_sharded_safetensors_match_transformers(llama, tmp_path):
    hf, _ = llama
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # really sharded
    model = jaxinterp.load(str(tmp_path))
    np.testing.assert_allclose(np.asarray(model(TOKENS)), hf_logits(hf), atol=TOL, rtol=0)


def test_hub_id_resolves_offline_from_the_hf_cache(llama, minilm_path, tmp_path, monkeypatch):
    """A hub id is looked up in ``models--{org}--{name}/snapshots/<refs/main>``. huggingface_hub
    2.4 reads HF_HUB_CACHE into ``constants`` once, at import, so an env var set now would
    be ignored: point the constant at the cache we lay out instead."""
    import huggingface_hub.constants

    rev = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--jaxinterp-test--tiny-llama"
    snapshot = repo / "snapshots" / rev
    shutil.copytree(llama[1], snapshot)
    shutil.copy(os.path.join(minilm_path, "tokenizer.json"), snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    model = jaxinterp.load("jaxinterp-test/tiny-llama")
    np.testing.assert_allclose(np.asarray(model(TOKENS)), hf_logits(llama[0]), atol=TOL, rtol=0)
    tok = load_tokenizer("jaxinterp-test/tiny-llama")
    assert tok.encode("hello world") == load_tokenizer(minilm_path).encode("hello world")
    with pytest.raises(CheckpointError, match="jaxinterp-test/absent.*not in the HF cache"):
        jaxinterp.load("jaxinterp-test/absent")


def test_bf16_load_is_close_to_fp32(llama):
    _, path = llama
    fp32 = np.asarray(jaxinterp.load(path)(TOKENS))
    model = jaxinterp.load(path, dtype=jnp.bfloat16)
    assert model.embed.W_E.dtype == jnp.bfloat16 and model.blocks.attn.W_Q.dtype == jnp.bfloat16
    bf16 = np.asarray(model(TOKENS)).astype(np.float32)
    # bf16 keeps 8 significant bits (relative rounding 2^-9 per op); through a 2-layer
    # model the logits stay within a few percent of the fp32 logits' range.
    scale = np.abs(fp32).max()
    assert 0 < np.abs(bf16 - fp32).max() <= 0.05 * scale


def test_pickled_weights_refused_by_default_and_loaded_on_opt_in(llama, llama_copy):
    hf, _ = llama
    torch.save(hf.state_dict(), llama_copy / "pytorch_model.bin")
    os.remove(llama_copy / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"only pickled weights \(pytorch_model.bin\).*allow_pickle=True"):
        jaxinterp.load(str(llama_copy))
    model = jaxinterp.load(str(llama_copy), allow_pickle=True)
    np.testing.assert_allclose(np.asarray(model(TOKENS)), hf_logits(hf), atol=TOL, rtol=0)


# -- GGUF -----------------------------------------------------------------------------------

_GGUF_LAYER = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.qkv_proj": "attn_qkv",  # Phi-3's fused projections
    "mlp.gate_up_proj": "ffn_up",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
# Gemma 2 / 3: the sandwich norms under llama.cpp's names.
_GGUF_GEMMA_SANDWICH = {
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}
_GGUF_GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def llama3_rope_freqs(c) -> np.ndarray:
    """llama.cpp's ``rope_freqs`` tensor for a Llama-3.1 rope scaling, as its converter
    computes it: one divisor per rotary frequency (1 for short wavelengths, ``factor``
    for long ones, interpolated between)."""
    p = c.rope_parameters
    d_head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    freqs = 1.0 / (p["rope_theta"] ** (np.arange(0, d_head, 2, dtype=np.float64) / d_head))
    old, low, high, factor = (
        p["original_max_position_embeddings"],
        p["low_freq_factor"],
        p["high_freq_factor"],
        p["factor"],
    )
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, np.float32)


def write_gguf(model, path, arch: str, quantize: bool = True, window: int = 0) -> None:
    """Write an HF model as llama.cpp's converter would: GGUF names, Q/K rows in
    llama.cpp's interleaved rotary order (for "llama"), Q8_0 where rows allow it (unless
    ``quantize`` is False), a Llama-3.1 rope scaling as the ``rope_freqs`` tensor, and a
    sliding ``window`` in the metadata when given. Gemma: every norm weight stored as
    ``1 + w``, Gemma 2's soft-caps and every Gemma 2 / 3 window in the metadata."""
    c = model.config
    w = gguf.GGUFWriter(str(path), arch)
    gemma = arch.startswith("gemma")
    window = window or (getattr(c, "sliding_window", 0) if arch in ("gemma2", "gemma3") else 0)
    if window:
        w.add_sliding_window(window)
    if arch == "gemma2":
        w.add_float32("gemma2.attn_logit_softcapping", c.attn_logit_softcapping)
        w.add_float32("gemma2.final_logit_softcapping", c.final_logit_softcapping)
    rope = c.rope_parameters.get("full_attention", c.rope_parameters)  # Gemma 3: one per layer type
    if rope.get("rope_type") == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_rope_freqs(c))
    if rope.get("rope_type") == "longrope":  # Phi-3, as llama.cpp's converter writes it
        old = c.original_max_position_embeddings
        w.add_tensor("rope_factors_long.weight", np.asarray(rope["long_factor"], np.float32))
        w.add_tensor("rope_factors_short.weight", np.asarray(rope["short_factor"], np.float32))
        w.add_uint32("phi3.rope.scaling.original_context_length", old)
        scale = c.max_position_embeddings / old
        w.add_float32("phi3.rope.scaling.attn_factor", math.sqrt(1 + math.log(scale) / math.log(old)))
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(rope["rope_theta"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    if arch == "phi3":  # transformers' default Phi-3 pad id (32000) is outside the tiny vocabulary
        w.add_pad_token_id(0)
    d_head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    w.add_rope_dimension_count(d_head)
    w.add_key_length(d_head)
    w.add_value_length(d_head)
    for name, t in model.state_dict().items():
        a = t.numpy().astype(np.float32)
        if name.startswith("model.layers."):
            _, _, layer, *rest = name.split(".")
            module = ".".join(rest[:-1])
            names = {**_GGUF_LAYER, **_GGUF_GEMMA_SANDWICH} if arch in ("gemma2", "gemma3") else _GGUF_LAYER
            gname = f"blk.{layer}.{names[module]}.{rest[-1]}"
            if arch == "llama" and module in ("self_attn.q_proj", "self_attn.k_proj"):
                n = c.num_attention_heads if module == "self_attn.q_proj" else c.num_key_value_heads
                a = a.reshape(n, 2, a.shape[0] // n // 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)
        else:
            gname = _GGUF_GLOBAL[name]
        if gemma and name.endswith("norm.weight"):
            a = a + 1.0
        if gemma and name == "lm_head.weight":
            continue  # tied: llama.cpp writes only the embedding
        if quantize and a.ndim == 2 and a.shape[1] % 32 == 0:
            q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(gname, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(gname, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def gguf_models(tmp_path_factory):
    """{arch: (original torch model, GGUF path)} for a tiny Llama (GQA), Qwen2 (QKV bias), Phi-3
    (fused qkv and gate_up, no rope scaling) and
    Qwen3 (QK-norm; head_dim 128, Qwen3's default, which is what transformers' GGUF reader
    assumes: it does not read key_length)."""
    import transformers as T

    torch.manual_seed(0)
    llama = T.LlamaForCausalLM(T.LlamaConfig(**TINY, num_key_value_heads=2)).eval()
    qwen3 = T.Qwen3ForCausalLM(T.Qwen3Config(**TINY, num_key_value_heads=2, head_dim=128)).eval()
    with torch.no_grad():  # QK-norm weights away from 1, so a dropped or swapped norm shows
        for name, p in qwen3.named_parameters():
            if "_norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    phi3 = T.Phi3ForCausalLM(
        T.Phi3Config(**TINY, num_key_value_heads=2, pad_token_id=0, bos_token_id=0, eos_token_id=0)
    ).eval()
    # Gemma 2 / 3 with the settings transformers' GGUF reader assumes (it reads neither the
    # query scale nor the soft-caps from the file): head_dim = query_pre_attn_scalar = 256,
    # Gemma 2's default caps; six Gemma 3 layers, so one is global.
    gemma = dict(TINY, num_key_value_heads=2, head_dim=256, query_pre_attn_scalar=256, sliding_window=4)
    gemma2 = T.Gemma2ForCausalLM(T.Gemma2Config(**gemma, initializer_range=0.05)).eval()
    gemma3 = T.Gemma3ForCausalLM(T.Gemma3TextConfig(**{**gemma, "num_hidden_layers": 6}, initializer_range=0.05)).eval()
    for m in (gemma2, gemma3):
        with torch.no_grad():  # norm weights away from 0 (1 + w), so the GGUF shift matters
            for name, p in m.named_parameters():
                if "norm" in name:
                    p.add_(0.3 * torch.randn_like(p))
    out = {}
    for arch, model in (
        ("llama", llama),
        ("qwen2", hf_model("qwen2")[0]),
        ("qwen3", qwen3),
        ("phi3", phi3),
        ("gemma2", gemma2),
        ("gemma3", gemma3),
    ):
        path = tmp_path_factory.mktemp(f"gguf-{arch}") / "tiny.gguf"
        write_gguf(model, path, arch)
        out[arch] = (model, path)
    return out


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3"])
def test_quantised_gguf_matches_transformers_gguf_load(gguf_models, arch):
    from transformers import AutoModelForCausalLM

    original, path = gguf_models[arch]
    ref = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    ours = jaxinterp.load(str(path))
    expected = hf_logits(ref)
    np.testing.assert_allclose(np.asarray(ours(TOKENS)), expected, atol=TOL, rtol=0)
    # Q8_0 really was dequantised: the GGUF model differs from the original a little.
    assert 1e-4 < np.abs(expected - hf_logits(original)).max() < 0.1


def test_gemma_gguf_matches_the_hf_model(tmp_path):
    """Gemma 1 (transformers cannot read its GGUF files): a tiny f32 file written as
    llama.cpp's converter does (norms stored as 1 + w, tied unembedding) loads as the HF
    model it was written from."""
    original, _ = hf_model("gemma")
    path = tmp_path / "tiny.gguf"
    write_gguf(original, path, "gemma", quantize=False)
    ours = jaxinterp.load(str(path))
    assert ours.cfg.family == "gemma" and ours.cfg.norm_weight_offset == 1.0
    np.testing.assert_allclose(np.asarray(ours(TOKENS)), hf_logits(original), atol=TOL, rtol=0)


@pytest.mark.parametrize("name", ["llama", "mistral"])
def test_gguf_rope_freqs_and_sliding_window_match_the_hf_model(name, tmp_path):
    """Llama 3.1-style rope scaling stored as llama.cpp's ``rope_freqs`` tensor, and a
    Mistral window in the metadata (both under GGUF's "llama" architecture, f32 tensors):
    the loaded model equals the HF original (which computes its llama3 rope / window
    itself). Without the tensor / the window the logits move, so both matter here."""
    import transformers as T

    torch.manual_seed(1)
    big = dict(TINY, num_key_value_heads=2, initializer_range=0.3)  # weights that make rope and window matter
    if name == "llama":
        rope = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0)
        original = T.LlamaForCausalLM(
            T.LlamaConfig(**big, rope_scaling={**rope, "original_max_position_embeddings": 8})
        ).eval()
    else:
        original = T.MistralForCausalLM(T.MistralConfig(**big, sliding_window=4, head_dim=8)).eval()
    path = tmp_path / "tiny.gguf"
    window = original.config.sliding_window if name == "mistral" else 0
    write_gguf(original, path, "llama", quantize=False, window=window or 0)
    ours = jaxinterp.load(str(path))
    expected = hf_logits(original)
    np.testing.assert_allclose(np.asarray(ours(TOKENS)), expected, atol=TOL, rtol=0)
    if name == "llama":
        assert ours.cfg.rope_scaling_dict["rope_type"] == "freq_factors"
        plain = dataclasses.replace(ours, cfg=ours.cfg.replace(rope_scaling=None))
    else:  # the windows are data of the blocks
        assert ours.cfg.layer_windows == (window,) * ours.cfg.n_layers and TOKENS.shape[1] > window
        plain = eqx.tree_at(lambda m: m.blocks.window, ours, jnp.full_like(ours.blocks.window, 1 << 20))
    moved = np.abs(np.asarray(plain(TOKENS)) - expected).max()
    assert moved > 100 * TOL, moved


def test_first_layers_load_matches_a_truncated_transformers_model(llama_copy, gguf_models):
    """``load(path, n_layers=1)`` is the HF model cut after its first block (checked against
    transformers with its later layers dropped), equals ``load(path).first_layers(1)``,
    and never reads the later layers: a checkpoint whose layer 1 is gone still loads."""
    import copy

    from jaxinterp.core.errors import ConfigError

    torch_model = copy.deepcopy(hf_model("llama")[0])  # the model llama_copy was saved from
    assert torch_model.config.num_hidden_layers == 2
    torch_model.model.layers = torch_model.model.layers[:1]
    torch_model.config.num_hidden_layers = 1
    first = jaxinterp.load(str(llama_copy), n_layers=1)
    assert first.cfg.n_layers == 1
    np.testing.assert_allclose(np.asarray(first(TOKENS)), hf_logits(torch_model), atol=TOL, rtol=0)
    np.testing.assert_array_equal(np.asarray(first(TOKENS)), np.asarray(jaxinterp.load(str(llama_copy)).first_layers(1)(TOKENS)))
    edit_tensors(llama_copy, lambda t: [t.pop(k) for k in list(t) if k.startswith("model.layers.1.")])
    np.testing.assert_array_equal(np.asarray(jaxinterp.load(str(llama_copy), n_layers=1)(TOKENS)), np.asarray(first(TOKENS)))
    # GGUF, with per-layer attention windows (Gemma 3's six layers: five sliding, one global).
    _, path = gguf_models["gemma3"]
    whole = jaxinterp.load(str(path))
    part = jaxinterp.load(str(path), n_layers=3)
    assert part.cfg == whole.first_layers(3).cfg and part.cfg.layer_windows == whole.cfg.layer_windows[:3]
    np.testing.assert_array_equal(np.asarray(part(TOKENS)), np.asarray(whole.first_layers(3)(TOKENS)))
    for bad in (0, 7):
        with pytest.raises(ConfigError, match=r"n_layers must be an int in 1\.\.6, got"):
            jaxinterp.load(str(path), n_layers=bad)
    for bad in (2.5, True):
        with pytest.raises(ConfigError, match=r"n_layers must be an int \(the number of blocks to load\) or None"):
            jaxinterp.load(str(path), n_layers=bad)


def test_first_layers_load_still_reports_unexpected_tensors_in_the_layers_it_reads(llama_copy):
    edit_tensors(llama_copy, lambda t: t.update({"model.layers.0.mlp.extra_proj.weight": np.zeros((2, 2), np.float32)}))
    with pytest.raises(CheckpointError, match="unexpected tensor.*model.layers.0.mlp.extra_proj.weight"):
        jaxinterp.load(str(llama_copy), n_layers=1)


# -- bad inputs: one test each ------------------------------------------------------------------


def test_missing_tensor(llama_copy):
    edit_tensors(llama_copy, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match="missing tensor 'model.layers.1.mlp.up_proj.weight'"):
        jaxinterp.load(str(llama_copy))


def test_unexpected_tensor(llama_copy):
    edit_tensors(llama_copy, lambda t: t.update({"model.layers.0.mlp.extra_proj.weight": np.zeros((2, 2), np.float32)}))
    with pytest.raises(CheckpointError, match="unexpected tensor.*model.layers.0.mlp.extra_proj.weight"):
        jaxinterp.load(str(llama_copy))


def test_mis_shaped_tensor(llama_copy):
    edit_tensors(
        llama_copy, lambda t: t.update({"model.layers.1.self_attn.q_proj.weight": np.zeros((30, 32), np.float32)})
    )
    with pytest.raises(CheckpointError, match=r"'model.layers.1.self_attn.q_proj.weight' has shape \(30, 32\)"):
        jaxinterp.load(str(llama_copy))


def test_corrupt_safetensors(llama_copy):
    (llama_copy / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header at all")
    with pytest.raises(CheckpointError, match="corrupt safetensors file .*model.safetensors"):
        jaxinterp.load(str(llama_copy))


def test_corrupt_config_json(llama_copy):
    (llama_copy / "config.json").write_text('{"model_type": "llama", "hidden_size": 32,')
    with pytest.raises(CheckpointError, match="corrupt config.json"):
        jaxinterp.load(str(llama_copy))


def test_unsupported_model_type(llama_copy):
    cfg = json.loads((llama_copy / "config.json").read_text())
    (llama_copy / "config.json").write_text(json.dumps({**cfg, "model_type": "t5"}))
    with pytest.raises(UnsupportedArchitectureError, match="model_type='t5'.*supported: .*llama"):
        jaxinterp.load(str(llama_copy))


def test_corrupt_gguf(gguf_models, tmp_path):
    _, good = gguf_models["llama"]
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(CheckpointError, match="truncated.gguf is not a readable GGUF file"):
        jaxinterp.load(str(truncated))
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"this is not GGUF" * 64)
    with pytest.raises(CheckpointError, match="garbage.gguf is not a readable GGUF file"):
        jaxinterp.load(str(garbage))


def test_unsupported_gguf_architecture(tmp_path):
    path = tmp_path / "falcon.gguf"
    w = gguf.GGUFWriter(str(path), "falcon")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedArchitectureError, match="unsupported GGUF architecture 'falcon'"):
        jaxinterp.load(str(path))


def test_phi3_gguf_longrope_matches_the_hf_model(tmp_path):
    """Phi-3 with longrope from GGUF (the factors as ``rope_factors_long`` / ``_short``
    tensors, the original context and attention factor as metadata): equal to the HF
    model it was written from, 10 tokens past an original context of 8 (the long
    factors); without the factors the logits move. One of the two tensors alone is refused."""
    original, _ = hf_model("phi3")
    path = tmp_path / "phi3.gguf"
    write_gguf(original, path, "phi3", quantize=False, window=original.config.sliding_window)
    ours = jaxinterp.load(str(path))
    assert ours.cfg.rope_scaling_dict["rope_type"] == "longrope" and TOKENS.shape[1] > 8
    expected = hf_logits(original)
    np.testing.assert_allclose(np.asarray(ours(TOKENS)), expected, atol=TOL, rtol=0)
    plain = dataclasses.replace(ours, cfg=ours.cfg.replace(rope_scaling=None))
    assert np.abs(np.asarray(plain(TOKENS)) - expected).max() > 10 * TOL  # (small tiny-model weights)

    half = tmp_path / "half.gguf"
    w = gguf.GGUFWriter(str(half), "phi3")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.add_tensor("rope_factors_long.weight", np.ones(4, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(CheckpointError, match="rope_factors_long / rope_factors_short"):
        jaxinterp.load(str(half))


def test_tokenizer_from_a_directory_without_tokenizer_files(llama):
    with pytest.raises(TokenizerError, match="has no tokenizer.json"):
        load_tokenizer(llama[1])
