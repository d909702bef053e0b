"""Per-family conversion: HF ``config.json`` -> `ModelConfig`, HF tensors -> params.

Each family module exposes ``MODEL_TYPES`` (HF ``model_type`` values it handles),
``config_from_hf(hf: dict) -> ModelConfig`` and
``convert(src: TensorSource, cfg) -> dict[str, np.ndarray]``, plus ``IGNORED``
(glob patterns of checkpoint tensors that are legitimately unused).
"""

from __future__ import annotations

from types import ModuleType

from ...core.errors import UnsupportedArchitectureError
from . import bert, gemma, gpt2, gptj, llama, mixtral, neox, olmo2, opt, phi, phi3, qwen3, qwen3_moe

FAMILIES: tuple[ModuleType, ...] = (
    gpt2,
    neox,
    llama,
    gemma,
    mixtral,
    bert,
    qwen3,
    olmo2,
    phi3,
    gptj,
    opt,
    phi,
    qwen3_moe,
)


def family_for(model_type: str) -> ModuleType:
    for fam in FAMILIES:
        if model_type in fam.MODEL_TYPES:
            return fam
    supported = sorted(t for f in FAMILIES for t in f.MODEL_TYPES)
    raise UnsupportedArchitectureError(
        f"unsupported architecture model_type={model_type!r}; supported: {', '.join(supported)}"
    )
