"""Helpers shared by the family converters."""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import numpy as np

from ...core.errors import CheckpointError, UnsupportedArchitectureError
from ..tensors import TensorSource


def stack_layers(src: TensorSource, pattern: str, n_layers: int, fn: Callable = lambda a: a) -> np.ndarray:
    """``np.stack([fn(src.take(pattern.format(i))) for i in range(n_layers)])``, written
    layer by layer into one preallocated array (no list of per-layer copies), with a
    `CheckpointError` naming the tensor when one does not fit the config's shapes."""
    return split_layers(src, pattern, n_layers, (fn,))[0]


def split_layers(src: TensorSource, pattern: str, n_layers: int, fns: tuple[Callable, ...]) -> tuple[np.ndarray, ...]:
    """One stacked array per function in ``fns``: ``out[j][i] = fns[j](src.take(pattern.format(i)))``.

    Each layer's tensor is read once and its pieces (e.g. the Q, K and V blocks of a fused
    projection) are written into arrays preallocated on the first layer, so the peak
    memory is the outputs plus one layer's tensor."""
    raw: list[tuple[int, ...]] = []
    outs: list[np.ndarray] = []
    fits = True
    for i in range(n_layers):
        name = pattern.format(i)
        a = src.take(name)
        try:
            pieces = [fn(a) for fn in fns]
        except ValueError as e:  # a reshape to the config's head layout failed
            raise CheckpointError(
                f"checkpoint {src.origin}: tensor {src.prefix + name!r} has shape {a.shape}, which does not fit the config ({e})"
            ) from e
        raw.append(a.shape)
        if not outs:
            outs = [np.empty((n_layers, *np.shape(x)), np.asarray(x).dtype) for x in pieces]
        if fits and all(np.shape(x) == o.shape[1:] for x, o in zip(pieces, outs)):
            for x, o in zip(pieces, outs):
                o[i] = x
        else:  # reported below, naming the layer that differs from the majority
            fits = False
        del a, pieces  # the next layer's tensor is not read while this one is alive
    if len(set(raw)) > 1:  # name the odd one out: the layer whose shape differs from the majority
        common = max(raw, key=raw.count)  # ties go to layer 0
        bad = next(i for i, s in enumerate(raw) if s != common)
        raise CheckpointError(
            f"checkpoint {src.origin}: tensor {src.prefix + pattern.format(bad)!r} has shape {raw[bad]}, "
            f"but the same tensor in the other layers has shape {common}"
        )
    if not fits:
        raise CheckpointError(
            f"checkpoint {src.origin}: tensors {src.prefix + pattern!r} differ in shape across layers"
        )
    return tuple(outs)


def stack_arrays(arrays: Iterable[np.ndarray], n: int, what: str) -> np.ndarray:
    """``np.stack`` of the ``n`` arrays an iterator yields, each written into one
    preallocated array as it comes (the iterator may read them lazily). ``what`` names the
    tensors in the `CheckpointError` raised when their shapes differ."""
    out: Optional[np.ndarray] = None
    for i, a in enumerate(arrays):
        if out is None:
            out = np.empty((n, *a.shape), a.dtype)
        elif a.shape != out.shape[1:]:
            raise CheckpointError(f"{what}: entry {i} has shape {a.shape}, the first has {out.shape[1:]}")
        out[i] = a
    assert out is not None, "stack_arrays needs at least one array"
    return out


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
        name = moe + f"experts.{{e}}.{theirs}.weight"
        # Flat [layer * expert, ...], filled one expert at a time, then viewed as [layer, expert, ...].
        flat = stack_arrays(
            (src.take(name.format(i, e=e)).T for i in range(L) for e in range(E)),
            L * E,
            f"checkpoint {src.origin}: tensors {src.prefix + name.format('*', e='*')!r}",
        )
        p[f"blocks.mlp.{ours}"] = flat.reshape(L, E, *flat.shape[1:])
