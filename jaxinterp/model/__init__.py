"""Equinox modules of the generic transformer."""

from .attention import Attention
from .block import Block
from .embed import Embed, PosEmbed, TokenTypeEmbed, Unembed
from .hooks import Hooks, Plan
from .kv_cache import CachedAttention, KVCache
from .mlp import MLP, MoE
from .norms import Norm
from .transformer import Transformer, check_pair, check_tokens

__all__ = [
    "Attention",
    "Block",
    "Embed",
    "PosEmbed",
    "TokenTypeEmbed",
    "Unembed",
    "Hooks",
    "Plan",
    "KVCache",
    "CachedAttention",
    "MLP",
    "MoE",
    "Norm",
    "Transformer",
    "check_pair",
    "check_tokens",
]
