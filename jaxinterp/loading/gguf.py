"""Loading llama.cpp GGUF files: metadata -> `ModelConfig`, tensors -> params.

A GGUF file is turned into what an HF checkpoint would hold -- a config dict with HF key
names and a `TensorSource` with HF tensor names -- so the family converters in
`jaxinterp.loading.families` do the rest, exactly as for safetensors. Three facts of the
format are undone on the way:

- GGUF lists a tensor's dims fastest-first (``[d_model, d_vocab]`` for the embedding);
  ``gguf.quants.dequantize`` already returns the numpy (row-major) shape, which is the
  torch ``[out_features, in_features]`` layout HF uses.
- Quantised blocks (Q4_1, Q8_0, K-quants, ...) are dequantised to float32 by the ``gguf``
  package a chunk of rows at a time, then cast to the requested dtype; F16/BF16/F32
  tensors are converted straight to it (a BF16 file loads as bf16 with no float32 copy).
- For the "llama" architecture, llama.cpp's converter reorders the rows of Q and K within
  each head from HF's rotate-half layout to interleaved pairs (its rotary kernel rotates
  adjacent elements). We invert that permutation so our rotate-half rotary applies.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax.numpy as jnp
import ml_dtypes
import numpy as np

from ..core.errors import CheckpointError, UnsupportedArchitectureError
from ..model import Transformer
from .build import build_model, check_dtype
from .families import family_for
from .gguf_file import GGUFFile, GGUFTensor
from .hf_config import config_from_hf
from .tensors import TensorSource

# GGUF architectures we map, and the HF ``model_type`` whose converter they reuse.
SUPPORTED_ARCHITECTURES = {
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "phi3": "phi3",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3": "gemma3_text",
}
# llama.cpp's converter stores every Gemma norm weight as 1 + w (its kernels multiply by
# the weight); the family converter expects HF's w.
_GEMMA = ("gemma", "gemma2", "gemma3")
# Gemma 2 / 3 sandwich norms; Gemma 1's ffn_norm is Llama's post_attention_layernorm.
_GEMMA_SANDWICH_NAMES = {
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}

# GGUF per-layer tensor names -> HF names (``{i}`` is the layer index).
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",  # Qwen3's per-head QK-norm
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
# Phi-3 keeps its fused projections in GGUF: attn_qkv (q; k; v rows), ffn_up (gate; up rows).
_FUSED_NAMES = {"attn_qkv": "self_attn.qkv_proj", "ffn_up": "mlp.gate_up_proj"}
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
# Tensors that hold rope scaling, read into the config rather than loaded as weights:
# Llama 3.1+'s per-frequency divisors, Phi-3's longrope factors.
ROPE_FREQS = "rope_freqs.weight"
ROPE_TENSORS = (ROPE_FREQS, "rope_factors_long.weight", "rope_factors_short.weight")


def read_gguf(path: str, skip: tuple[str, ...] = ()) -> GGUFFile:
    """The GGUF file at ``path`` opened for reading (metadata parsed, tensors mapped;
    string-array keys in ``skip`` left undecoded); `CheckpointError` naming the path if
    the file is missing, truncated or not GGUF."""
    return GGUFFile(path, skip)


def unpermute_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row order: within each head, llama.cpp stores the rotary pairs
    interleaved (``x0, x_half, x1, x_half+1, ...``); HF (and we) keep the two halves
    contiguous. ``w``: ``[n_heads * d_head, ...]`` (a weight or a bias)."""
    d_head = w.shape[0] // n_heads
    return w.reshape(n_heads, d_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_config_from_gguf(
    meta: dict[str, Any], tensor_shapes: dict[str, tuple[int, ...]], path: str, rope: Any = None
) -> dict[str, Any]:
    """An HF-style ``config.json`` dict built from GGUF metadata.

    ``tensor_shapes``: GGUF tensor name -> shape in GGUF order (fastest dim first); used
    for what the metadata may omit (vocabulary size, tied unembedding, QKV bias).
    ``rope``: the values (lists) of the file's `ROPE_TENSORS`, by name."""
    rope = rope or {}
    if ("rope_factors_long.weight" in rope) != ("rope_factors_short.weight" in rope):
        raise CheckpointError(f"{path}: has only one of rope_factors_long / rope_factors_short (longrope needs both)")
    tensor_names = set(tensor_shapes)
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"{path}: unsupported GGUF architecture {arch!r}; supported: {', '.join(sorted(SUPPORTED_ARCHITECTURES))}"
        )

    def get(key, default=None, required=True):
        full = f"{arch}.{key}"
        if full in meta:
            return meta[full]
        if required and default is None:
            raise CheckpointError(f"{path}: GGUF metadata lacks {full!r}")
        return default

    d_model, n_heads = get("embedding_length"), get("attention.head_count")
    d_head = get("attention.key_length", d_model // n_heads)
    if "token_embd.weight" not in tensor_shapes:
        raise CheckpointError(f"{path}: GGUF file has no token_embd.weight tensor")
    n_vocab = meta.get(f"{arch}.vocab_size") or int(tensor_shapes["token_embd.weight"][-1])
    hf: dict[str, Any] = {
        "model_type": SUPPORTED_ARCHITECTURES[arch],
        "architectures": [f"gguf:{arch}"],
        "hidden_size": d_model,
        "num_hidden_layers": get("block_count"),
        "num_attention_heads": n_heads,
        "num_key_value_heads": get("attention.head_count_kv", n_heads),
        "head_dim": d_head,
        "intermediate_size": get("feed_forward_length"),
        "max_position_embeddings": get("context_length", 2048),
        "rms_norm_eps": get("attention.layer_norm_rms_epsilon"),
        "rope_theta": get("rope.freq_base", 10000.0),
        "partial_rotary_factor": get("rope.dimension_count", d_head) / d_head,
        "vocab_size": n_vocab,
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "attention_bias": "blk.0.attn_q.bias" in tensor_names,
        "hidden_act": "silu",
    }
    if arch in _GEMMA:
        hf.update(_gemma_config(arch, hf, get))
    window = get("attention.sliding_window", 0, required=False)
    if window and arch in _GEMMA:
        hf["sliding_window"] = int(window)  # on the local layers, which _gemma_config lists
    elif window:  # Phi-3; Mistral-style llama files that record their window
        hf["sliding_window"] = int(window)
        if arch == "llama":
            hf["model_type"] = "mistral"  # the llama converter with Mistral's window on every layer
    scaling = get("rope.scaling.type", "none", required=False)
    if ROPE_FREQS in rope:
        # Llama 3.1+: llama.cpp stores the rope scaling as one divisor per frequency.
        if scaling not in ("none", "llama3"):
            raise UnsupportedArchitectureError(f"{path}: rope_freqs together with rope scaling {scaling!r}")
        hf["rope_scaling"] = {"rope_type": "freq_factors", "factors": rope[ROPE_FREQS]}
    elif "rope_factors_long.weight" in rope or "rope_factors_short.weight" in rope:
        # Phi-3 longrope: both factor sets as tensors, the original context and the
        # attention factor as metadata (llama.cpp's converter writes all four).
        hf["rope_scaling"] = {
            "rope_type": "longrope",
            "long_factor": rope["rope_factors_long.weight"],
            "short_factor": rope["rope_factors_short.weight"],
            "original_max_position_embeddings": int(get("rope.scaling.original_context_length")),
        }
        attn_factor = get("rope.scaling.attn_factor", required=False)
        if attn_factor is not None:
            hf["rope_scaling"]["attention_factor"] = float(attn_factor)
    elif scaling == "linear":
        hf["rope_scaling"] = {"rope_type": "linear", "factor": float(get("rope.scaling.factor"))}
    elif scaling != "none":
        raise UnsupportedArchitectureError(f"{path}: rope scaling {scaling!r} from GGUF is not supported (only linear)")
    return hf


def _gemma_config(arch: str, hf: dict[str, Any], get: Callable) -> dict[str, Any]:
    """What llama.cpp keeps implicit for Gemma: the activation, the query scale (1/sqrt of
    the head size; of d_model / heads for the 27B models, which llama.cpp recognises by
    their layer count), Gemma 2's soft-caps, and which layers are local (every other
    one in Gemma 2; five of every six in Gemma 3, whose local rope base is 10000)."""
    n_layers, d_head = hf["num_hidden_layers"], hf["head_dim"]
    is_27b = (arch, n_layers) in (("gemma2", 46), ("gemma3", 62))
    out: dict[str, Any] = {"hidden_activation": "gelu_pytorch_tanh"}
    if arch == "gemma":
        return out
    out["query_pre_attn_scalar"] = hf["hidden_size"] // hf["num_attention_heads"] if is_27b else d_head
    if arch == "gemma2":
        out["attn_logit_softcapping"] = get("attn_logit_softcapping", required=False)
        out["final_logit_softcapping"] = get("final_logit_softcapping", required=False)
        out["layer_types"] = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)]
    else:
        out["layer_types"] = ["sliding_attention" if i % 6 < 5 else "full_attention" for i in range(n_layers)]
        out["rope_local_base_freq"] = 10000.0
    return out


def gguf_tensor_source(reader: GGUFFile, hf: dict[str, Any], path: str, dtype=np.float32) -> TensorSource:
    """The file's tensors under HF names, each read when taken and returned in ``dtype``
    (quantised ones dequantised; see `read_tensor`)."""
    permute = hf["architectures"] == ["gguf:llama"]  # llama.cpp reorders Q/K rows only for its "llama" arch
    heads = {"attn_q": hf["num_attention_heads"], "attn_k": hf["num_key_value_heads"]}
    getters: dict[str, Callable[[], np.ndarray]] = {}
    fused = hf["model_type"] == "phi3"
    gemma = hf["architectures"][0].removeprefix("gguf:") in _GEMMA
    sandwich = hf["model_type"] in ("gemma2", "gemma3_text")
    dtype = np.dtype(dtype)
    for tensor in reader.tensors:
        if tensor.name in ROPE_TENSORS:
            continue  # read into the config (rope scaling), not a weight
        hf_name = _hf_name(tensor.name, fused, sandwich)
        if hf_name is None:
            hf_name = "gguf:" + tensor.name  # kept, so check_all_used reports it as unexpected
        kind = tensor.name.split(".")[2] if tensor.name.startswith("blk.") else None
        n_heads = heads.get(kind) if permute else None

        shift = gemma and tensor.name.endswith("norm.weight")

        def get(tensor=tensor, n_heads=n_heads, shift=shift):
            if shift:  # subtract in float32, then cast (the 1 + w of a bf16 load stays exact)
                w = (read_tensor(reader, tensor, np.float32) - np.float32(1.0)).astype(dtype)
            else:
                w = read_tensor(reader, tensor, dtype)
            return unpermute_rotary(w, n_heads) if n_heads else w

        getters[hf_name] = get
    return TensorSource(getters, path, dtype=dtype)


# Quantised tensors are dequantised this many elements at a time (gguf's dequantizers
# make several float32 temporaries of their input's size; a 49k x 576 embedding would
# otherwise add ~0.4 GB to the peak).
DEQUANTIZE_CHUNK = 1 << 20


def read_tensor(reader: GGUFFile, tensor: GGUFTensor, dtype) -> np.ndarray:
    """``tensor`` as a fresh numpy array (row-major shape) in the floating ``dtype``.

    Float tensors (F32, F16, BF16) are converted straight to ``dtype`` (BF16 read as
    ``ml_dtypes.bfloat16``, so a bf16 file loads as bf16 with no float32 copy); quantised
    ones are dequantised by ``gguf.quants.dequantize`` (float32) a chunk of rows at a
    time into the ``dtype`` result. The tensor's pages of the mapped file are released
    afterwards (`GGUFFile.release`)."""
    from gguf.quants import dequantize

    shape = tuple(reversed(tensor.shape))
    kind = tensor.tensor_type.name
    if kind == "BF16":  # stored as raw 2-byte rows; the bits are bfloat16's
        out = np.array(tensor.data.view(ml_dtypes.bfloat16).reshape(shape), dtype)
    elif tensor.data.dtype != np.uint8:  # a typed view (F32, F16, ...)
        out = np.array(tensor.data, dtype)
    else:
        rows = tensor.data.reshape(-1, tensor.data.shape[-1])
        out = np.empty((rows.shape[0], shape[-1] if shape else 1), dtype)
        step = max(1, DEQUANTIZE_CHUNK // max(1, out.shape[1]))
        for r in range(0, rows.shape[0], step):
            out[r : r + step] = dequantize(rows[r : r + step], tensor.tensor_type)
        out = out.reshape(shape)
    reader.release(tensor)
    return out


def _hf_name(name: str, fused: bool = False, sandwich: bool = False) -> str | None:
    parts = name.split(".")
    layer_names = {**_LAYER_NAMES, **_FUSED_NAMES} if fused else _LAYER_NAMES
    if sandwich:
        layer_names = {**layer_names, **_GEMMA_SANDWICH_NAMES}
    if parts[0] == "blk" and len(parts) == 4 and parts[2] in layer_names:
        return f"model.layers.{parts[1]}.{layer_names[parts[2]]}.{parts[3]}"
    if len(parts) == 2 and parts[0] in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[parts[0]]}.{parts[1]}"
    return None


def load_gguf(path: str, dtype=jnp.float32, n_layers: Optional[int] = None, **placement) -> Transformer:
    """Load a llama.cpp GGUF file (architectures "llama", "qwen2", "qwen3", "phi3",
    "gemma", "gemma2", "gemma3") as a `Transformer`.

    Every tensor is read once, converted to ``dtype`` (quantised ones dequantised a chunk
    at a time) and written into the model's layer-stacked arrays, so the peak memory of
    a load stays near the model's size in ``dtype``. The tokenizer stored in
    the same file is loaded by ``jaxinterp.load_tokenizer(path)``. ``placement``:
    ``mesh=`` / ``rules=`` of `build_model` (weights placed on their shardings).

    Raises `CheckpointError` (naming the path) for a missing, truncated or corrupt file,
    and `UnsupportedArchitectureError` for an architecture other than those above.
    """
    path = str(path)
    dtype = check_dtype(dtype)
    reader = read_gguf(path, skip=("tokenizer.ggml.tokens", "tokenizer.ggml.merges"))
    meta = reader.metadata
    shapes = {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors}
    rope = {
        t.name: [float(f) for f in read_tensor(reader, t, np.float32).reshape(-1)]
        for t in reader.tensors
        if t.name in ROPE_TENSORS
    }
    hf = hf_config_from_gguf(meta, shapes, path, rope)
    family = family_for(hf["model_type"])
    cfg = config_from_hf(hf, family, hf["model_type"])
    if n_layers is not None:
        cfg = cfg.first_layers(n_layers)
    src = gguf_tensor_source(reader, hf, path, dtype)
    params = family.convert(src, cfg)
    src.check_all_used(from_layer=n_layers)
    return build_model(cfg, params, dtype, origin=path, consume=True, **placement)
