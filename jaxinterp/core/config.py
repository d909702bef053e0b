"""`ModelConfig`: one declarative description of every supported architecture.

A family (GPT-2, NeoX, Llama, Gemma, ...) is a `ModelConfig` plus a weight-name
mapping in `jaxinterp.loading`; the model code itself has no per-family branches,
only per-feature ones (rotary or learned positions, gated MLP, parallel blocks, ...).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Literal, Optional, get_args

from .errors import ConfigError

# Where QK-norm normalises queries and keys (after the projection, before rotary):
# "head": an RMSNorm over each head's d_head features (Qwen3, Gemma 3); "projection": over
# the whole projection, n_heads * d_head features (OLMo-2).
QKNorm = Literal["none", "head", "projection"]

Activation = Literal["gelu", "gelu_new", "relu", "silu", "gelu_pytorch_tanh", "gelu_fast", "quick_gelu"]

# A sliding window larger than any sequence means "global attention". Stored as an int
# so that per-layer windows stack into one array (no Python branch per layer).
GLOBAL_WINDOW = 2**30


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of a transformer. Frozen and hashable: used as static data.

    Dimension names follow TransformerLens: `d_model`, `n_heads`, `d_head`, `d_mlp`,
    `d_vocab`, `n_ctx`, `n_layers`.
    """

    d_model: int
    n_layers: int
    n_heads: int
    d_head: int
    d_vocab: int
    n_ctx: int
    d_mlp: int = 0  # 0 with attn_only=True
    n_kv_heads: Optional[int] = None  # None -> n_heads (MHA); 1 -> MQA; else GQA
    act_fn: Activation = "gelu"
    normalization: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
    norm_weight_offset: float = 0.0  # Gemma's RMSNorm scales by (1 + w)
    positional: Literal["learned", "rotary", "none"] = "learned"
    rotary_dim: Optional[int] = None  # None -> d_head (partial rotary when smaller)
    rotary_base: float = 10000.0
    # GPT-J: rotary pairs adjacent features (2i, 2i+1) rather than i and i + rotary_dim/2.
    rotary_interleaved: bool = False
    # Rope scaling as a sorted tuple of (key, value) pairs so the config stays hashable.
    rope_scaling: Optional[tuple] = None
    # Gemma 3: the rope base of the layers with a sliding window (unscaled rope); the
    # global layers keep rotary_base and rope_scaling. None: one rope for every layer.
    rotary_local_base: Optional[float] = None
    parallel_attn_mlp: bool = False  # NeoX / GPT-J: attn and MLP both read resid_pre
    post_norm: bool = False  # BERT: normalise after each residual addition
    # False: attention and MLP read the raw residual stream, no ln1/ln2 (OLMo-2, which
    # normalises their outputs instead: post_attn_norm / post_mlp_norm).
    pre_norm: bool = True
    gated_mlp: bool = False  # SwiGLU / GeGLU
    attn_only: bool = False
    n_experts: int = 0  # >0 -> top-k mixture of experts MLP
    experts_per_token: int = 0
    # Whether the router's top-k probabilities are renormalised to sum to 1 (Mixtral,
    # Qwen3-MoE's norm_topk_prob=True) or used as they come from the softmax over all experts.
    moe_renormalize: bool = True
    causal: bool = True
    # TransformerLens's use_split_qkv_input: attention reads a copy of its input per head
    # (sites q_input, k_input, v_input), so one head's query, key or value input can be
    # patched alone. Costs [pos, head, d_model] per layer; the ln1 sites are then absent
    # (the norm runs on each head's copy, as in TransformerLens).
    split_qkv_input: bool = False
    attn_scale: Optional[float] = None  # multiplier on QK^T; None -> 1/sqrt(d_head)
    attn_logit_softcap: Optional[float] = None
    qk_norm: QKNorm = "none"  # RMSNorm on queries and keys before rotary (weights attn.q_norm / attn.k_norm)
    final_logit_softcap: Optional[float] = None
    # One entry per layer: window size, or None for global attention.
    layer_windows: Optional[tuple] = None
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    unembed_bias: bool = False
    norm_bias: Optional[bool] = None  # None -> True for layernorm, False for rmsnorm
    embed_scale: Optional[float] = None  # Gemma multiplies embeddings by sqrt(d_model)
    embed_norm: bool = False  # BERT: LayerNorm right after the embeddings
    n_token_types: int = 0  # BERT segment embeddings
    post_attn_norm: bool = False  # Gemma 2: norm on attn output before the residual add
    post_mlp_norm: bool = False  # Gemma 2: norm on MLP output before the residual add
    has_unembed: bool = True  # False for encoders loaded without an LM head
    tied_embeddings: bool = False
    family: str = "custom"
    architecture: str = ""

    def __post_init__(self):
        self._check_sizes()
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if self.norm_bias is None:
            object.__setattr__(self, "norm_bias", self.normalization == "layernorm")
        if self.rotary_dim is None and self.positional == "rotary":
            object.__setattr__(self, "rotary_dim", self.d_head)
        if self.layer_windows is not None:
            object.__setattr__(self, "layer_windows", tuple(self.layer_windows))
            if len(self.layer_windows) != self.n_layers:
                raise ConfigError(
                    f"layer_windows has {len(self.layer_windows)} entries, expected one per layer ({self.n_layers})"
                )
        if self.rope_scaling is not None:  # hashable: sorted pairs, lists (longrope factors) as tuples
            items = self.rope_scaling.items() if isinstance(self.rope_scaling, dict) else self.rope_scaling
            object.__setattr__(
                self, "rope_scaling", tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in items))
            )
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        if not self.attn_only and self.d_mlp <= 0:
            raise ConfigError("d_mlp must be positive unless attn_only=True")
        if self.n_experts and not (0 < self.experts_per_token <= self.n_experts):
            raise ConfigError(f"experts_per_token must be in 1..n_experts, got {self.experts_per_token}")
        if self.post_norm and self.parallel_attn_mlp:
            raise ConfigError("post_norm and parallel_attn_mlp cannot be combined")
        if self.post_norm and not self.pre_norm:
            raise ConfigError("post_norm (BERT) places ln1/ln2 after the residual adds, so it needs pre_norm=True")
        if self.rotary_interleaved and self.positional != "rotary":
            raise ConfigError("rotary_interleaved needs positional='rotary'")
        if self.rotary_local_base is not None and self.positional != "rotary":
            raise ConfigError("rotary_local_base needs positional='rotary'")
        if self.qk_norm not in ("none", "head", "projection"):
            raise ConfigError(f"qk_norm must be 'none', 'head' or 'projection', got {self.qk_norm!r}")

    def _check_sizes(self) -> None:
        """Every size is an int (not a bool) of the allowed range: a `ConfigError` naming
        the field, the family and the value otherwise (zero heads would divide by zero later)."""
        where = f" ({self.family})" if self.family != "custom" else ""
        positive = ("d_model", "n_heads", "d_head", "d_vocab", "n_ctx")
        non_negative = (
            "n_layers",
            "d_mlp",
            "n_experts",
            "experts_per_token",
            "n_token_types",
        )  # 0 layers: a bigram toy
        for name in positive + non_negative + ("n_kv_heads", "rotary_dim"):
            value = getattr(self, name)
            if value is None and name in ("n_kv_heads", "rotary_dim"):
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ConfigError(f"ModelConfig{where}: {name} must be an int, got {value!r} ({type(value).__name__})")
            low = 0 if name in non_negative else 1
            if value < low:
                raise ConfigError(
                    f"ModelConfig{where}: {name} must be {'>= 0' if low == 0 else 'positive'}, got {value}"
                )
        for name, kind in (("norm_eps", "non-negative"), ("rotary_base", "positive")):
            number = getattr(self, name)
            bad = isinstance(number, bool) or not isinstance(number, numbers.Real)
            if bad or number < 0 or (kind == "positive" and number == 0):
                raise ConfigError(f"ModelConfig{where}: {name} must be a {kind} number, got {number!r}")
        choices = {
            "act_fn": get_args(Activation),
            "normalization": ("layernorm", "rmsnorm"),
            "positional": ("learned", "rotary", "none"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"ModelConfig{where}: {name} must be one of {', '.join(map(repr, allowed))}, got {getattr(self, name)!r}"
                )
        if self.rotary_dim is not None and self.rotary_dim > self.d_head:
            raise ConfigError(f"ModelConfig{where}: rotary_dim={self.rotary_dim} exceeds d_head={self.d_head}")

    @property
    def scale(self) -> float:
        """The multiplier applied to QK^T before the softmax."""
        return self.attn_scale if self.attn_scale is not None else 1.0 / math.sqrt(self.d_head)

    @property
    def rope_scaling_dict(self) -> dict:
        return dict(self.rope_scaling or ())

    @property
    def windows(self) -> tuple:
        """Per-layer window sizes as ints (GLOBAL_WINDOW for global attention)."""
        ws = self.layer_windows or (None,) * self.n_layers
        return tuple(GLOBAL_WINDOW if w is None else int(w) for w in ws)

    @property
    def has_mlp(self) -> bool:
        return not self.attn_only

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def first_layers(self, n_layers: int) -> "ModelConfig":
        """The config of this model's first ``n_layers`` blocks (per-layer settings cut to
        match); `ConfigError` unless ``1 <= n_layers <= self.n_layers``."""
        if isinstance(n_layers, bool) or not isinstance(n_layers, numbers.Integral) or not 1 <= n_layers <= self.n_layers:
            raise ConfigError(f"n_layers must be an int in 1..{self.n_layers}, got {n_layers!r}")
        windows = None if self.layer_windows is None else self.layer_windows[:n_layers]
        return dataclasses.replace(self, n_layers=int(n_layers), layer_windows=windows)
