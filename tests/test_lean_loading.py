"""Lean loading: tensors are read one at a time, in the target dtype, into preallocated
layer-stacked arrays.

References: the ``safetensors`` and ``gguf`` packages' own readers (``load_file``,
``gguf.quants.dequantize`` of a whole tensor), torch's bf16 weights, and the float32 load
cast afterwards (what loading did before: the values must not change). Memory: every
tensor the family converters receive is checked to be bf16 already, and numpy's
allocations during a load are traced (``tracemalloc``): at most the bf16 model plus a
tensor in flight. Process-level peak memory (RSS) is measured by
``benchmarks/loading_memory.py`` in fresh subprocesses.
"""

from __future__ import annotations

import tracemalloc

import gguf
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hf_models import TINY, hf_model
from safetensors.numpy import save_file

import jaxinterp
from jaxinterp.loading import gguf as gguf_loading
from jaxinterp.loading.tensors import TensorSource, read_safetensors_dir

torch = pytest.importorskip("torch")

# Big enough that Python's own allocations during a load are small next to the weights
# (4.6 MB in bf16), small enough to build in a fraction of a second. No forward pass runs.
MEDIUM = dict(vocab_size=8192, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4)


def float_leaves(model) -> dict[str, jax.Array]:
    flat = jax.tree_util.tree_flatten_with_path(model)[0]
    return {jax.tree_util.keystr(p): x for p, x in flat if isinstance(x, jax.Array) and x.dtype != jnp.int32}


def bits(a) -> np.ndarray:
    """The raw bits of a bf16 array (exact comparison, NaN-safe)."""
    return np.asarray(a).view(np.uint16)


@pytest.fixture(scope="module")
def bf16_llama(tmp_path_factory):
    """(torch model in bf16, its saved directory): an untied Llama with GQA."""
    import transformers as T

    torch.manual_seed(0)
    model = T.LlamaForCausalLM(T.LlamaConfig(**MEDIUM, num_key_value_heads=2)).to(torch.bfloat16).eval()
    path = tmp_path_factory.mktemp("bf16-llama")
    model.save_pretrained(path)
    return model, path


def traced_load(path, dtype):
    """(model, peak bytes numpy and Python allocated during the load). A first untraced
    load imports and caches what any load needs, so the trace sees only this load."""
    jaxinterp.load(str(path), dtype=dtype)
    tracemalloc.start()
    try:
        model = jaxinterp.load(str(path), dtype=dtype)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return model, peak


def test_bf16_checkpoint_loads_as_bf16_bit_exact_without_an_fp32_copy(bf16_llama, monkeypatch):
    hf, path = bf16_llama
    seen = []  # the dtype of every tensor the family converter receives
    take = TensorSource.take
    monkeypatch.setattr(TensorSource, "take", lambda self, name: seen.append((t := take(self, name)).dtype) or t)
    model, peak = traced_load(path, jnp.bfloat16)
    assert seen and set(seen) == {np.dtype(ml_dtypes.bfloat16)}
    leaves = float_leaves(model)
    assert {str(x.dtype) for x in leaves.values()} == {"bfloat16"}
    size = sum(x.nbytes for x in leaves.values())
    # Lean: the host holds at most the bf16 model plus a tensor in flight (the old path
    # upcast every tensor to float32 first: >= 2x).
    assert peak < 1.25 * size, (peak, size)
    state = {k: v for k, v in hf.state_dict().items()}
    H, D, M = MEDIUM["num_attention_heads"], MEDIUM["hidden_size"] // MEDIUM["num_attention_heads"], 128

    def torch_bits(name):
        return state[name].view(torch.int16).numpy().view(np.uint16)

    np.testing.assert_array_equal(bits(model.embed.W_E), torch_bits("model.embed_tokens.weight"))
    np.testing.assert_array_equal(bits(model.unembed.W_U), torch_bits("lm_head.weight").T)
    for layer in range(2):
        q = torch_bits(f"model.layers.{layer}.self_attn.q_proj.weight")  # [head * d_head, d_model]
        np.testing.assert_array_equal(bits(model.blocks.attn.W_Q[layer]), q.reshape(H, D, M).transpose(0, 2, 1))
        down = torch_bits(f"model.layers.{layer}.mlp.down_proj.weight")  # [d_model, d_mlp]
        np.testing.assert_array_equal(bits(model.blocks.mlp.W_out[layer]), down.T)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_fp32_checkpoint_in_a_narrow_dtype_equals_the_fp32_load_cast(dtype):
    """Converting each tensor as it is read gives bit for bit what the old path gave
    (load in float32, cast at the end): the converters only move elements."""
    _, path = hf_model("llama")
    narrow = float_leaves(jaxinterp.load(path, dtype=dtype))
    wide = float_leaves(jaxinterp.load(path))
    assert narrow.keys() == wide.keys()
    for name, x in narrow.items():
        assert x.dtype == dtype, name
        np.testing.assert_array_equal(np.asarray(x), np.asarray(wide[name].astype(dtype)), err_msg=name)


def test_safetensors_reader_matches_the_safetensors_package(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "f32": rng.normal(size=(3, 5)).astype(np.float32),
        "f16": rng.normal(size=(7,)).astype(np.float16),
        "i64": rng.integers(0, 100, size=(2, 2, 2)),
        "scalar": np.array(2.5, np.float32),
    }
    save_file(tensors, str(tmp_path / "model.safetensors"))
    bf16 = torch.randn(4, 6, dtype=torch.bfloat16)  # numpy cannot write bf16: torch does
    from safetensors.torch import save_file as save_torch

    save_torch({"bf16": bf16}, str(tmp_path / "extra.safetensors"))
    src = read_safetensors_dir(str(tmp_path))
    for name, ref in tensors.items():
        got = src.take(name)
        assert got.dtype == ref.dtype and got.shape == ref.shape, name
        np.testing.assert_array_equal(got, ref)
    got = src.take("bf16")
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(bits(got), bf16.view(torch.int16).numpy().view(np.uint16))
    # With a target dtype: floats converted, integers left alone.
    src = read_safetensors_dir(str(tmp_path), dtype=ml_dtypes.bfloat16)
    assert src.take("f32").dtype == ml_dtypes.bfloat16 and src.take("i64").dtype == np.int64
    np.testing.assert_array_equal(bits(src.take("f32")), bits(tensors["f32"].astype(ml_dtypes.bfloat16)))


def write_qwen2_gguf(path, types: dict[str, gguf.GGMLQuantizationType]) -> dict[str, np.ndarray]:
    """A tiny random Qwen2 GGUF (F32 unless ``types`` names another type for a tensor);
    returns the float32 tensors as written (GGUF names, numpy order)."""
    rng = np.random.default_rng(1)
    d, L, H, K, F, V = TINY["hidden_size"], 2, 4, 2, 64, 96
    dh = d // H
    shapes = {"token_embd.weight": (V, d), "output.weight": (V, d), "output_norm.weight": (d,)}
    for i in range(L):
        b = f"blk.{i}."
        shapes.update({b + "attn_q.weight": (H * dh, d), b + "attn_k.weight": (K * dh, d)})
        shapes.update({b + "attn_v.weight": (K * dh, d), b + "attn_output.weight": (d, H * dh)})
        shapes.update({b + "attn_q.bias": (H * dh,), b + "attn_k.bias": (K * dh,), b + "attn_v.bias": (K * dh,)})
        shapes.update({b + "ffn_gate.weight": (F, d), b + "ffn_up.weight": (F, d), b + "ffn_down.weight": (d, F)})
        shapes.update({b + "attn_norm.weight": (d,), b + "ffn_norm.weight": (d,)})
    w = gguf.GGUFWriter(str(path), "qwen2")
    for add, value in (
        (w.add_block_count, L),
        (w.add_context_length, 64),
        (w.add_embedding_length, d),
        (w.add_feed_forward_length, F),
        (w.add_head_count, H),
        (w.add_head_count_kv, K),
        (w.add_rope_freq_base, 1e4),
        (w.add_layer_norm_rms_eps, 1e-6),
        (w.add_vocab_size, V),
    ):
        add(value)
    written = {}
    for name, shape in shapes.items():
        a = rng.normal(0, 0.5, shape).astype(np.float32)
        kind = types.get(name, gguf.GGMLQuantizationType.F32)
        if kind == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, a)
        else:
            q = gguf.quants.quantize(a, kind)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=kind)
        written[name] = a
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return written


def test_gguf_chunked_dequantisation_and_bf16_tensors(tmp_path, monkeypatch):
    """Q8_0 tensors dequantised a few rows at a time equal ``gguf.quants.dequantize`` of
    the whole tensor; BF16 tensors load as bf16 with the file's bits; the lean bf16 load
    equals the float32 load cast."""
    Q8, BF16 = gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.BF16
    path = tmp_path / "qwen2.gguf"
    write_qwen2_gguf(path, {"token_embd.weight": Q8, "blk.1.ffn_up.weight": Q8, "output.weight": BF16})
    reader = gguf.GGUFReader(str(path))  # the gguf package's own reader: the reference
    ref = {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in reader.tensors}
    monkeypatch.setattr(gguf_loading, "DEQUANTIZE_CHUNK", 2 * TINY["hidden_size"])  # 2 rows a chunk
    wide = jaxinterp.load(str(path))
    np.testing.assert_array_equal(np.asarray(wide.embed.W_E), ref["token_embd.weight"])
    np.testing.assert_array_equal(np.asarray(wide.blocks.mlp.W_in[1]), ref["blk.1.ffn_up.weight"].T)
    np.testing.assert_array_equal(np.asarray(wide.unembed.W_U), ref["output.weight"].T)
    narrow = jaxinterp.load(str(path), dtype=jnp.bfloat16)
    np.testing.assert_array_equal(bits(narrow.unembed.W_U), bits(ref["output.weight"].T.astype(ml_dtypes.bfloat16)))
    wide_leaves = float_leaves(wide)
    for name, x in float_leaves(narrow).items():
        assert x.dtype == jnp.bfloat16, name
        np.testing.assert_array_equal(bits(x), bits(wide_leaves[name].astype(jnp.bfloat16)), err_msg=name)
