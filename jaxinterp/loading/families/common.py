"""Helpers shared by the family converters."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ...core.errors import CheckpointError, UnsupportedArchitectureError
from ..tensors import TensorSource


def stack_layers(src: TensorSource, pattern: str, n_layers: int, fn: Callable = lambda a: a) -> np.ndarray:
    """``np.stack([fn(src.take(pattern.format(i))) for i in range(n_layers)])``, with a
    `CheckpointError` naming the tensor when one does not fit the config's shapes."""
    raw, out = [], []
    for i in range(n_layers):
        name = pattern.format(i)
        a = src.take(name)
        try:
            out.append(fn(a))
        except ValueError as e:  # a reshape to the config's head layout failed
            raise CheckpointError(
                f"checkpoint {src.origin}: tensor {src.prefix + name!r} has shape {a.shape}, which does not fit the config ({e})"
            ) from e
        raw.append(a.shape)
    if len(set(raw)) > 1:  # name the odd one out: the layer whose shape differs from the majority
        common = max(raw, key=raw.count)  # ties go to layer 0
        bad = next(i for i, s in enumerate(raw) if s != common)
        raise CheckpointError(
            f"checkpoint {src.origin}: tensor {src.prefix + pattern.format(bad)!r} has shape {raw[bad]}, "
            f"but the same tensor in the other layers has shape {common}"
        )
    return np.stack(out)


def heads_in(w: np.ndarray, n_heads: int) -> np.ndarray:
    """torch Linear weight ``[n_heads*d_head, d_model]`` -> ``[head, d_model, d_head]``."""
    out, d_model = w.shape
    return w.reshape(n_heads, out // n_heads, d_model).transpose(0, 2, 1)


def heads_out(w: np.ndarray, n_heads: int) -> np.ndarray:
    """torch Linear weight ``[d_model, n_heads*d_head]`` -> ``[head, d_head, d_model]``."""
    d_model, inner = w.shape
    return w.T.reshape(n_heads, inner // n_heads, d_model)


# Rope types the model computes (jaxinterp.model.rotary); "su" is Phi-3's old name for longrope.
# "freq_factors": explicit per-frequency divisors (llama.cpp's rope_freqs tensor, from GGUF).
SUPPORTED_ROPE = ("default", "linear", "llama3", "yarn", "longrope", "su", "dynamic", "freq_factors")


def rope_settings(hf: dict) -> tuple[float, tuple | None, float]:
    """(theta, scaling, partial_rotary_factor) from either transformers-5 style
    ``rope_parameters`` or older top-level ``rope_theta`` / ``rope_scaling`` keys."""
    params = dict(hf.get("rope_parameters") or {})
    theta = params.get("rope_theta", hf.get("rope_theta", hf.get("rotary_emb_base", 10000.0)))
    partial = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", hf.get("rotary_pct", 1.0)))
    scaling = dict(hf.get("rope_scaling") or {})
    scaling.update({k: v for k, v in params.items() if k not in ("rope_theta", "partial_rotary_factor")})
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind not in SUPPORTED_ROPE:
        raise UnsupportedArchitectureError(
            f"rope type {kind!r} is not supported (supported: {', '.join(SUPPORTED_ROPE)})"
        )
    pairs = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in scaling.items()))
    return float(theta), (None if kind == "default" else pairs), float(partial)


def windows_from_layer_types(hf: dict, n_layers: int, window) -> tuple | None:
    """Per-layer windows from ``layer_types`` (``sliding_attention``/``full_attention``)."""
    types = hf.get("layer_types")
    if types is None or window is None:
        return None
    return tuple(int(window) if t == "sliding_attention" else None for t in types[:n_layers])


def convert_experts(src: TensorSource, cfg, p: dict, moe: str, names: tuple[str, str, str]) -> None:
    """Mixture-of-experts weights into ``p``: the router ``blocks.mlp.W_router``
    ``[layer, d_model, expert]`` and the experts' ``W_gate``/``W_in``/``W_out``
    ``[layer, expert, ...]``. ``moe``: the per-layer prefix with ``{}`` for the layer
    (``"model.layers.{}.mlp."``); ``names``: the checkpoint's gate, up and down
    projection names under ``experts.{e}.``."""
    L, E = cfg.n_layers, cfg.n_experts
    p["blocks.mlp.W_router"] = stack_layers(src, moe + "gate.weight", L, np.transpose)
    for ours, theirs in zip(("W_gate", "W_in", "W_out"), names):
        p[f"blocks.mlp.{ours}"] = np.stack(
            [
                np.stack([src.take((moe + f"experts.{e}.{theirs}.weight").format(i)).T for e in range(E)])
                for i in range(L)
            ]
        )
