"""`config_from_hf`: an HF ``config.json`` dict -> `ModelConfig`, validated in one place.

The families' converters read the fields they need (``hf["hidden_size"]``, ...). Before
they do, every width and count field a family may read is checked here (an int, not a
bool, positive; heads dividing the width when the head size is derived from it; query
heads a multiple of key/value heads), and whatever a converter or `ModelConfig` still
refuses (a missing field, a wrong type, an inconsistent combination) becomes a
`ConfigError` that names the field and the family, never a bare KeyError / TypeError /
ZeroDivisionError. Widths that do not match the tensors are found when the tensors are
converted (`jaxinterp.loading.hf.load_hf`: `CheckpointError`).
"""

from __future__ import annotations

import numbers
from types import ModuleType

from ..core.config import ModelConfig
from ..core.errors import ConfigError, JaxinterpError

# Fields that count or size something, under every name a family reads them by.
# None is allowed where the family falls back to a default (e.g. ``n_inner``: 4 * d_model).
_POSITIVE_INTS = (
    "hidden_size",
    "n_embd",
    "num_attention_heads",
    "n_head",
    "num_hidden_layers",
    "n_layer",
    "vocab_size",
    "intermediate_size",
    "n_inner",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
    "n_positions",
    "num_local_experts",
    "num_experts_per_tok",
    "type_vocab_size",
    "sliding_window",
)
_OPTIONAL = frozenset({"n_inner", "num_key_value_heads", "head_dim", "sliding_window", "type_vocab_size"})
_FLOATS = ("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "rope_theta")


def check_hf_fields(hf: dict, family: str) -> None:
    """Type and range checks of the width / count fields present in ``hf`` (one family's
    ``config.json``): `ConfigError` naming the field, its value, and what was expected."""
    if not isinstance(hf, dict):
        raise ConfigError(f"config.json must hold a JSON object, got {type(hf).__name__}")
    for key in _POSITIVE_INTS:
        if key not in hf or (hf[key] is None and key in _OPTIONAL):
            continue
        value = hf[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(
                f"config.json ({family}): {key} must be a positive int, got {value!r} ({type(value).__name__})"
            )
        if value <= 0 and not (key == "type_vocab_size" and value == 0):
            raise ConfigError(f"config.json ({family}): {key} must be positive, got {value}")
    for key in _FLOATS:
        value = hf.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise ConfigError(f"config.json ({family}): {key} must be a number, got {value!r}")
    width = hf.get("hidden_size", hf.get("n_embd"))
    heads = hf.get("num_attention_heads", hf.get("n_head"))
    if width is not None and heads is not None and not hf.get("head_dim") and width % heads:
        name_w = "hidden_size" if "hidden_size" in hf else "n_embd"
        name_h = "num_attention_heads" if "num_attention_heads" in hf else "n_head"
        raise ConfigError(
            f"config.json ({family}): {name_w}={width} is not divisible by {name_h}={heads} "
            "(the head size is derived from them; give head_dim or fix the counts)"
        )
    kv = hf.get("num_key_value_heads")
    if heads is not None and kv and heads % kv:
        raise ConfigError(
            f"config.json ({family}): num_attention_heads={heads} is not a multiple of num_key_value_heads={kv}"
        )


def config_from_hf(hf: dict, family: ModuleType, model_type: str) -> ModelConfig:
    """``family.config_from_hf(hf)`` with `check_hf_fields` first and every error a
    `ConfigError` naming the field and the family (``model_type``)."""
    check_hf_fields(hf, model_type)
    try:
        return family.config_from_hf(hf)
    except JaxinterpError:
        raise
    except KeyError as e:
        raise ConfigError(f"config.json ({model_type}) is missing the field {e.args[0]!r}") from e
    except (TypeError, ValueError, ZeroDivisionError, AttributeError, IndexError) as e:
        # (a run-time type checker's message runs to pages: its first lines say it all)
        brief = "\n".join(str(e).split("\n----")[0].splitlines()[:4])
        raise ConfigError(f"config.json ({model_type}) has a field of the wrong type or value: {brief}") from e
