"""The canonical hook sites, their shapes, and TransformerLens-style names.

Every activation the model exposes has a *short name* (``"resid_pre"``, ``"attn.z"``)
that addresses the layer-stacked array ``[layer, ...]``, and, for per-layer sites, a
*full name* in TransformerLens form (``"blocks.3.hook_resid_pre"``,
``"blocks.3.attn.hook_z"``) that addresses one layer.

Shapes are for one example (no batch axis). Dimension names follow TransformerLens:

=======================  ==================================  =============================
short name               shape (per layer)                   meaning
=======================  ==================================  =============================
embed                    pos d_model                         token embedding (top level)
pos_embed                pos d_model                         learned positional embedding
resid_pre                pos d_model                         residual stream into the block
ln1.scale                pos 1                               the norm's divisor sqrt(mean(x^2)+eps)
ln1.normalized           pos d_model                         normalised input (after w, b)
attn.q                   pos head d_head                     queries
attn.k / attn.v          pos kv_head d_head                  keys / values (n_kv_heads heads)
attn.rot_q / attn.rot_k  pos head|kv_head d_head             rotated q / k (rotary models)
attn.attn_scores         head query_pos key_pos              masked, scaled QK^T
attn.pattern             head query_pos key_pos              softmax of the scores
attn.z                   pos head d_head                     pattern-weighted values
attn.result              pos head d_model                    per-head output (z @ W_O)
attn_out                 pos d_model                         attention output added to resid
resid_mid                pos d_model                         residual after attention
ln2.scale / normalized   pos 1 / pos d_model                 norm before the MLP
mlp.pre                  pos d_mlp                           MLP pre-activation (gate for GLU)
mlp.pre_linear           pos d_mlp                           up projection of a gated MLP
mlp.post                 pos d_mlp                           MLP hidden activation
mlp.router_logits        pos expert                          MoE router logits
mlp.expert_weights       pos expert                          MoE mixing weights (0 off top-k)
mlp_out                  pos d_model                         MLP output added to resid
resid_post               pos d_model                         residual out of the block
ln_final.scale           pos 1                               final norm (top level)
ln_final.normalized      pos d_model                         final normalised residual
=======================  ==================================  =============================

MoE models compute ``mlp.pre``/``mlp.pre_linear``/``mlp.post`` per expert:
``[pos, expert, d_mlp]``. Parallel-block models (NeoX) have no ``resid_mid``.
Post-norm (BERT) blocks normalise after each residual addition: ``ln1`` reads
``resid_pre + attn_out`` and gives ``resid_mid``; ``ln2`` reads ``resid_mid + mlp_out``
and gives ``resid_post``.
"""

from __future__ import annotations

import difflib
import re
from typing import NamedTuple, Optional

from .config import ModelConfig
from .errors import SiteError




class Site(NamedTuple):
    """A parsed site: its short name and, for a full per-layer name, the layer."""

    name: str
    layer: Optional[int]


# Top-level (not per-layer) sites and the order they occur in.
TOP_LEVEL_SITES = ("embed", "pos_embed", "token_type_embed", "ln_final.scale", "ln_final.normalized")


def layer_site_dims(cfg: ModelConfig) -> dict[str, tuple[str, ...]]:
    """Per-layer sites of a model, in execution order, with their dimension names."""
    d: dict[str, tuple[str, ...]] = {"resid_pre": ("pos", "d_model")}
    d["ln1.scale"] = ("pos", "one")
    d["ln1.normalized"] = ("pos", "d_model")
    d["attn.q"] = ("pos", "head", "d_head")
    d["attn.k"] = ("pos", "kv_head", "d_head")
    d["attn.v"] = ("pos", "kv_head", "d_head")
    if cfg.positional == "rotary":
        d["attn.rot_q"] = ("pos", "head", "d_head")
        d["attn.rot_k"] = ("pos", "kv_head", "d_head")
    d["attn.attn_scores"] = ("head", "query_pos", "key_pos")
    d["attn.pattern"] = ("head", "query_pos", "key_pos")
    d["attn.z"] = ("pos", "head", "d_head")
    d["attn.result"] = ("pos", "head", "d_model")
    if cfg.post_attn_norm:
        d["ln1_post.scale"] = ("pos", "one")
        d["ln1_post.normalized"] = ("pos", "d_model")
    d["attn_out"] = ("pos", "d_model")
    if not cfg.parallel_attn_mlp:
        d["resid_mid"] = ("pos", "d_model")
    if cfg.has_mlp:
        d["ln2.scale"] = ("pos", "one")
        d["ln2.normalized"] = ("pos", "d_model")
        hidden = ("pos", "expert", "neuron") if cfg.is_moe else ("pos", "neuron")
        if cfg.is_moe:
            d["mlp.router_logits"] = ("pos", "expert")
            d["mlp.expert_weights"] = ("pos", "expert")
        d["mlp.pre"] = hidden
        if cfg.gated_mlp:
            d["mlp.pre_linear"] = hidden
        d["mlp.post"] = hidden
        if cfg.post_mlp_norm:
            d["ln2_post.scale"] = ("pos", "one")
            d["ln2_post.normalized"] = ("pos", "d_model")
        d["mlp_out"] = ("pos", "d_model")
    d["resid_post"] = ("pos", "d_model")
    return d


def top_level_site_dims(cfg: ModelConfig) -> dict[str, tuple[str, ...]]:
    """Top-level (not per-layer) sites of a model, in execution order, with their dimension names."""
    d = {"embed": ("pos", "d_model")}
    if cfg.positional == "learned":
        d["pos_embed"] = ("pos", "d_model")
    if cfg.n_token_types:
        d["token_type_embed"] = ("pos", "d_model")
    if not cfg.post_norm:
        d["ln_final.scale"] = ("pos", "one")
        d["ln_final.normalized"] = ("pos", "d_model")
    return d


def dim_sizes(cfg: ModelConfig, n_pos: int) -> dict[str, int]:
    """The size of every dimension name (``"d_model"``, ``"kv_head"``, ...) for ``n_pos`` tokens."""
    return {
        "pos": n_pos,
        "query_pos": n_pos,
        "key_pos": n_pos,
        "d_model": cfg.d_model,
        "one": 1,
        "head": cfg.n_heads,
        "kv_head": cfg.n_kv_heads,
        "d_head": cfg.d_head,
        "neuron": cfg.d_mlp,
        "expert": cfg.n_experts,
    }


def site_shape(cfg: ModelConfig, name: str, n_pos: int) -> tuple[int, ...]:
    """Shape of one layer's activation at a site (short name) for `n_pos` tokens."""
    dims = {**layer_site_dims(cfg), **top_level_site_dims(cfg)}[name]
    sizes = dim_sizes(cfg, n_pos)
    return tuple(sizes[d] for d in dims)


def full_names(cfg: ModelConfig) -> list[str]:
    """Every TransformerLens-style full name of the model, layer by layer."""
    names = [to_full_name(s) for s in top_level_site_dims(cfg)]
    for layer in range(cfg.n_layers):
        names += [to_full_name(s, layer) for s in layer_site_dims(cfg)]
    return names


def to_full_name(short: str, layer: Optional[int] = None) -> str:
    """``("attn.z", 3) -> "blocks.3.attn.hook_z"``; ``"embed" -> "hook_embed"``."""
    parts = short.split(".")
    parts[-1] = "hook_" + parts[-1]
    name = ".".join(parts)
    return name if layer is None else f"blocks.{layer}.{name}"


_FULL = re.compile(r"^blocks\.(\d+)\.(.+)$")


def parse_site(name: str, cfg: ModelConfig) -> Site:
    """Parse a short or full site name; raise `SiteError` naming the closest valid ones.

    Accepts ``"resid_pre"``, ``"hook_resid_pre"``, ``"attn.z"``, ``"attn.hook_z"``,
    ``"blocks.3.hook_resid_pre"``, ``"blocks.3.attn.hook_z"``, ``"hook_embed"``,
    ``"ln_final.hook_normalized"``.
    """
    if not isinstance(name, str):
        raise SiteError(f"site names are strings, got {type(name).__name__}: {name!r}")
    layer = None
    rest = name
    m = _FULL.match(name)
    if m:
        layer, rest = int(m.group(1)), m.group(2)
    short = ".".join(p[5:] if p.startswith("hook_") else p for p in rest.split("."))
    per_layer, top = layer_site_dims(cfg), top_level_site_dims(cfg)
    if layer is not None:
        if short in per_layer:
            if not 0 <= layer < cfg.n_layers:
                raise SiteError(f"site {name!r}: layer {layer} out of range, the model has {cfg.n_layers} layers (0..{cfg.n_layers - 1})")
            return Site(short, layer)
    elif short in per_layer or short in top:
        return Site(short, None)
    candidates = list(per_layer) + list(top) + full_names(cfg)
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise SiteError(
        f"unknown site {name!r} for this {cfg.family} model.{hint} "
        f"Valid short names: {', '.join(list(top) + list(per_layer))}."
    )


def is_top_level(short: str) -> bool:
    """Whether a short name is a top-level site (embeddings, final norm) rather than a per-layer one."""
    return short in TOP_LEVEL_SITES
