"""SAE files: jaxinterp's own (which is the SAELens layout plus a ``jaxinterp`` section),
SAELens directories, and Gemma Scope ``params.npz``.

SAELens layout (a directory): ``cfg.json`` + ``sae_weights.safetensors`` with ``W_enc
[d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``, ``b_dec [d_in]`` and, for
JumpReLU, ``threshold [d_sae]``. ``cfg.json`` names the ``architecture`` (``standard``
= ReLU, ``topk``, ``batchtopk``, ``jumprelu``), ``d_in``, ``d_sae``,
``apply_b_dec_to_input``, ``normalize_activations``, ``k`` (TopK variants; older files:
``activation_fn_kwargs.k``) and the hook, either at top level (``hook_name``,
``hook_layer``; SAELens < 6) or under ``metadata`` (SAELens 6). Transcoders add
``d_out`` and ``hook_name_out``.

Gemma Scope (``params.npz``): ``W_enc [d_model, d_sae]``, ``W_dec [d_sae, d_model]``,
``b_enc``, ``b_dec``, ``threshold``: a JumpReLU SAE without the pre-encoder bias
subtraction; the site and layer are not in the file, so they are arguments.

Every problem with a file raises `SAEFileError` naming the file and what was expected.
"""

from __future__ import annotations

import json
import os
import re
from typing import Optional

import jax.numpy as jnp
import numpy as np

from .config import SAEConfig
from .errors import SAEError
from .modules import SAE, from_arrays

__all__ = ["SAEFileError", "save_sae", "load_sae", "load_saelens", "load_gemma_scope"]

WEIGHTS = "sae_weights.safetensors"
CONFIG = "cfg.json"
_ARCH_TO_KIND = {"standard": "relu", "relu": "relu", "topk": "topk", "batchtopk": "batchtopk", "jumprelu": "jumprelu"}
_KIND_TO_ARCH = {"relu": "standard", "topk": "topk", "batchtopk": "batchtopk", "jumprelu": "jumprelu"}


class SAEFileError(SAEError):
    """A missing, corrupt or inconsistent SAE file."""


def save_sae(sae: SAE, path: str) -> None:
    """Write ``sae`` to directory ``path`` (``cfg.json`` + ``sae_weights.safetensors``),
    readable by `load_sae` and, for its SAELens fields, by SAELens. Files are written
    under temporary names and renamed into place."""
    from safetensors.numpy import save_file

    if not isinstance(sae, SAE):
        raise SAEError(f"save_sae needs an SAE, got {type(sae).__name__}")
    os.makedirs(path, exist_ok=True)
    c = sae.cfg
    cfg = {
        "architecture": _KIND_TO_ARCH[sae.kind],
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "dtype": "float32",
        "apply_b_dec_to_input": c.apply_b_dec_to_input,
        "normalize_activations": "none",
        "hook_name": _tl_name(c.site, c.layer),
        "hook_layer": c.layer,
        **({"k": sae.hyperparameters()["k"]} if "k" in sae.hyperparameters() else {}),
        **({"d_out": c.out_dim, "hook_name_out": _tl_name(c.target, c.layer)} if c.is_transcoder else {}),
        "jaxinterp": {"kind": sae.kind, "config": c.to_dict(), "hyperparameters": sae.hyperparameters()},
    }
    arrays = {k: np.asarray(v, np.float32) for k, v in sae.arrays().items()}
    tmp_w, tmp_c = os.path.join(path, WEIGHTS + ".tmp"), os.path.join(path, CONFIG + ".tmp")
    save_file(arrays, tmp_w)
    with open(tmp_c, "w") as f:
        json.dump(cfg, f, indent=1)
    os.replace(tmp_w, os.path.join(path, WEIGHTS))
    os.replace(tmp_c, os.path.join(path, CONFIG))


def load_sae(path: str) -> SAE:
    """Load a directory written by `save_sae` or by SAELens (see `load_saelens`)."""
    return load_saelens(path)


def _tl_name(short: str, layer: int) -> str:
    parts = short.split(".")
    parts[-1] = "hook_" + parts[-1]
    return f"blocks.{layer}." + ".".join(parts)


_HOOK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def _parse_hook(name, where: str) -> tuple[str, int]:
    m = _HOOK.match(name) if isinstance(name, str) else None
    if m is None:
        raise SAEFileError(f"{where}: hook name {name!r} is not of the form 'blocks.<layer>.<hook>'")
    parts = m.group(2).split(".")
    parts[-1] = parts[-1].removeprefix("hook_")
    return ".".join(parts), int(m.group(1))


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise SAEFileError(f"{path} not found: an SAELens SAE directory holds {CONFIG} and {WEIGHTS}")
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise SAEFileError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise SAEFileError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _read_safetensors(path: str) -> dict:
    from safetensors.numpy import load_file

    if not os.path.isfile(path):
        raise SAEFileError(f"{path} not found: an SAELens SAE directory holds {CONFIG} and {WEIGHTS}")
    try:
        return load_file(path)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise SAEFileError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from None


def _check(arrays: dict, want: dict, where: str) -> None:
    for name, shape in want.items():
        if name not in arrays:
            raise SAEFileError(
                f"{where} has no tensor {name!r} (has {sorted(arrays)}); expected {name} of shape {shape}"
            )
        if tuple(arrays[name].shape) != shape:
            raise SAEFileError(f"{where}: tensor {name!r} has shape {tuple(arrays[name].shape)}, expected {shape}")


def load_saelens(path: str, *, site: Optional[str] = None, layer: Optional[int] = None) -> SAE:
    """Load an SAELens-format SAE directory (``cfg.json`` + ``sae_weights.safetensors``).
    ``site`` / ``layer`` override the hook in the config (short site names)."""
    if not os.path.isdir(path):
        raise SAEFileError(f"{path} is not a directory: an SAELens SAE is a directory with {CONFIG} and {WEIGHTS}")
    cfg_path = os.path.join(path, CONFIG)
    cfg = _read_json(cfg_path)
    ours = cfg.get("jaxinterp")
    arrays = _read_safetensors(os.path.join(path, WEIGHTS))
    if ours is not None:
        try:
            c = SAEConfig.from_dict(ours["config"])
            kind, hyper = ours["kind"], dict(ours["hyperparameters"])
        except (KeyError, TypeError) as e:
            raise SAEFileError(f"{cfg_path}: malformed 'jaxinterp' section ({e})") from None
    else:
        missing = [k for k in ("architecture", "d_in", "d_sae") if k not in cfg]
        if missing:
            raise SAEFileError(f"{cfg_path} lacks {missing}: not an SAELens config")
        arch = cfg["architecture"]
        kind = _ARCH_TO_KIND.get(arch)
        if kind is None:
            raise SAEFileError(
                f"{cfg_path}: architecture {arch!r} is not supported; supported: {sorted(_ARCH_TO_KIND)}"
            )
        if cfg.get("normalize_activations", "none") not in ("none", None):
            raise SAEFileError(
                f"{cfg_path}: normalize_activations={cfg['normalize_activations']!r} needs a dataset-dependent scale "
                "that the file does not hold; only 'none' is supported"
            )
        meta = cfg.get("metadata") or {}
        hook = cfg.get("hook_name", meta.get("hook_name"))
        hook_out = cfg.get("hook_name_out", meta.get("hook_name_out"))
        if site is None or layer is None:
            parsed_site, parsed_layer = _parse_hook(hook, cfg_path)
            site = parsed_site if site is None else site
            layer = parsed_layer if layer is None else layer
        target = None if hook_out is None else _parse_hook(hook_out, cfg_path)[0]
        hyper = {}
        if kind in ("topk", "batchtopk"):
            k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
            if k is None:
                raise SAEFileError(f"{cfg_path}: architecture {arch!r} needs 'k' (or activation_fn_kwargs.k)")
            hyper["k"] = int(k)
        try:
            c = SAEConfig(
                d_in=int(cfg["d_in"]),
                d_sae=int(cfg["d_sae"]),
                site=site,
                layer=int(layer),
                target_site=target,
                d_out=cfg.get("d_out"),
                apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", False)),
                unit_norm_decoder=kind != "relu",
            )
        except SAEError as e:
            raise SAEFileError(f"{cfg_path}: {e}") from None
    want = {"W_enc": (c.d_in, c.d_sae), "b_enc": (c.d_sae,), "W_dec": (c.d_sae, c.out_dim), "b_dec": (c.out_dim,)}
    if kind == "jumprelu":
        want["threshold"] = (c.d_sae,)
    _check(arrays, want, os.path.join(path, WEIGHTS))
    return _build(kind, c, arrays, hyper, os.path.join(path, WEIGHTS))


def _build(kind, c, arrays, hyper, where):
    base = {k: jnp.asarray(arrays[k], jnp.float32) for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    threshold = None if "threshold" not in arrays else np.asarray(arrays["threshold"], np.float32)
    if threshold is not None:
        if (threshold < 0).any():
            raise SAEFileError(f"{where}: thresholds must be >= 0, found {threshold.min()}")
        # log-parameterised thresholds cannot be 0; the smallest normal float32 acts the same on real data
        threshold = np.maximum(threshold, np.finfo(np.float32).tiny)
    try:
        return from_arrays(kind, {**base, "cfg": c}, hyper, threshold=threshold)
    except SAEError as e:
        raise SAEFileError(f"{where}: {e}") from None


def load_gemma_scope(path: str, *, site: str, layer: int) -> SAE:
    """Load a Gemma Scope ``params.npz`` (JumpReLU; ``W_enc, W_dec, b_enc, b_dec,
    threshold``) as a `JumpReLUSAE` reading ``site`` of ``layer`` (not stored in the file)."""
    if not os.path.isfile(path):
        raise SAEFileError(f"{path} not found: expected a Gemma Scope params.npz")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:
        raise SAEFileError(f"{path} is not a readable .npz file ({type(e).__name__}: {e})") from None
    if "W_enc" not in arrays or np.ndim(arrays["W_enc"]) != 2:
        raise SAEFileError(f"{path} has no 2-d tensor 'W_enc' [d_model, d_sae] (has {sorted(arrays)})")
    d_in, d_sae = arrays["W_enc"].shape
    c = SAEConfig(d_in=int(d_in), d_sae=int(d_sae), site=site, layer=layer, apply_b_dec_to_input=False)
    want = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,), "threshold": (d_sae,)}
    _check(arrays, want, path)
    return _build("jumprelu", c, arrays, {}, path)
