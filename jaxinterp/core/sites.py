"""The site and axis vocabulary: one `SITES` table and one `AXES` table.

Every activation the model exposes has a *short name* (``"resid_pre"``, ``"attn.z"``)
that addresses the layer-stacked array ``[layer, ...]``, and, for per-layer sites, a
*full name* in TransformerLens form (``"blocks.3.hook_resid_pre"``,
``"blocks.3.attn.hook_z"``) that addresses one layer. `SITES` lists each site once, in
execution order, with its dimension names (TransformerLens's, for one example and one
layer), its meaning and when a model has it; everything else (`layer_site_dims`, the
docs' site table, ``jaxinterp info``) derives from it. `AXES` says which dimensions each
intervention location field selects along.

MoE models compute ``mlp.pre``/``mlp.pre_linear``/``mlp.post`` per expert:
``[pos, expert, neuron]``. Post-norm (BERT) blocks normalise after each residual
addition: ``ln1`` reads ``resid_pre + attn_out`` and gives ``resid_mid``; ``ln2`` reads
``resid_mid + mlp_out`` and gives ``resid_post``.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Callable, NamedTuple, Optional, Union

import numpy as np

from .config import ModelConfig
from .errors import SiteError


class Site(NamedTuple):
    """A parsed site: its short name and, for a full per-layer name, the layer."""

    name: str
    layer: Optional[int]


class SiteSpec(NamedTuple):
    """One row of `SITES`. ``dims``: dimension names of one example's activation at one
    layer (a function of the config where it varies); ``present``: whether a model of
    this config has the site; ``top_level``: not per layer (embeddings, final norm)."""

    name: str
    dims: Union[tuple[str, ...], Callable[[ModelConfig], tuple[str, ...]]]
    meaning: str
    present: Callable[[ModelConfig], bool] = lambda cfg: True
    top_level: bool = False

    def dims_for(self, cfg: ModelConfig) -> tuple[str, ...]:
        return self.dims(cfg) if callable(self.dims) else self.dims


def _hidden(cfg: ModelConfig) -> tuple[str, ...]:
    return ("pos", "expert", "neuron") if cfg.is_moe else ("pos", "neuron")


def _rotary(cfg: ModelConfig) -> bool:
    return cfg.positional == "rotary"


def _split(cfg: ModelConfig) -> bool:
    return cfg.split_qkv_input


def _ln1(cfg: ModelConfig) -> bool:
    # With split inputs a pre-norm runs on each head's copy (no single ln1 activation);
    # a post-norm (BERT) still normalises the stream after the residual add.
    return cfg.pre_norm and (cfg.post_norm or not cfg.split_qkv_input)


def _mlp(cfg: ModelConfig) -> bool:
    return cfg.has_mlp


SITES: tuple[SiteSpec, ...] = (
    SiteSpec("embed", ("pos", "d_model"), "token embedding", top_level=True),
    SiteSpec(
        "pos_embed", ("pos", "d_model"), "learned positional embedding", lambda c: c.positional == "learned", True
    ),
    SiteSpec(
        "token_type_embed",
        ("pos", "d_model"),
        "segment (token type) embedding (BERT)",
        lambda c: bool(c.n_token_types),
        True,
    ),
    SiteSpec("resid_pre", ("pos", "d_model"), "residual stream into the block"),
    SiteSpec(
        "q_input",
        ("pos", "head", "d_model"),
        "one copy of resid_pre per query head, read only by that head's query (split_qkv_input)",
        _split,
    ),
    SiteSpec(
        "k_input",
        ("pos", "kv_head", "d_model"),
        "resid_pre per key head, read only by its keys (split_qkv_input)",
        _split,
    ),
    SiteSpec(
        "v_input",
        ("pos", "kv_head", "d_model"),
        "resid_pre per value head, read only by its values (split_qkv_input)",
        _split,
    ),
    SiteSpec("ln1.scale", ("pos", "one"), "the attention norm's divisor sqrt(mean(x^2)+eps)", _ln1),
    SiteSpec("ln1.normalized", ("pos", "d_model"), "attention input: the normalised residual (after w, b)", _ln1),
    SiteSpec("attn.q", ("pos", "head", "d_head"), "queries (the projection, before any QK-norm)"),
    SiteSpec("attn.k", ("pos", "kv_head", "d_head"), "keys / values (n_kv_heads heads; keys before any QK-norm)"),
    SiteSpec("attn.v", ("pos", "kv_head", "d_head"), "keys / values (n_kv_heads heads; keys before any QK-norm)"),
    SiteSpec("attn.rot_q", ("pos", "head", "d_head"), "rotated (QK-normed, if any) queries (rotary models)", _rotary),
    SiteSpec("attn.rot_k", ("pos", "kv_head", "d_head"), "rotated (QK-normed, if any) keys (rotary models)", _rotary),
    SiteSpec("attn.attn_scores", ("head", "query_pos", "key_pos"), "masked, scaled (soft-capped) QK^T"),
    SiteSpec("attn.pattern", ("head", "query_pos", "key_pos"), "attention pattern: softmax of the scores"),
    SiteSpec("attn.z", ("pos", "head", "d_head"), "pattern-weighted values"),
    SiteSpec("attn.result", ("pos", "head", "d_model"), "per-head output z @ W_O (computed only on request)"),
    SiteSpec(
        "ln1_post.scale", ("pos", "one"), "the post-attention norm's divisor (Gemma 2)", lambda c: c.post_attn_norm
    ),
    SiteSpec(
        "ln1_post.normalized", ("pos", "d_model"), "normalised attention output (Gemma 2)", lambda c: c.post_attn_norm
    ),
    SiteSpec("attn_out", ("pos", "d_model"), "attention output added to the residual stream"),
    SiteSpec(
        "resid_mid", ("pos", "d_model"), "residual stream between attention and MLP", lambda c: not c.parallel_attn_mlp
    ),
    SiteSpec("ln2.scale", ("pos", "one"), "the MLP norm's divisor", lambda c: c.has_mlp and c.pre_norm),
    SiteSpec(
        "ln2.normalized", ("pos", "d_model"), "MLP input: the normalised residual", lambda c: c.has_mlp and c.pre_norm
    ),
    SiteSpec("mlp.router_logits", ("pos", "expert"), "MoE router logits", lambda c: c.has_mlp and c.is_moe),
    SiteSpec(
        "mlp.expert_weights",
        ("pos", "expert"),
        "MoE mixing weights (0 off the top k)",
        lambda c: c.has_mlp and c.is_moe,
    ),
    SiteSpec("mlp.pre", _hidden, "MLP pre-activation (the gate of a gated MLP)", _mlp),
    SiteSpec("mlp.pre_linear", _hidden, "linear (up) branch of a gated MLP", lambda c: c.has_mlp and c.gated_mlp),
    SiteSpec("mlp.post", _hidden, "MLP hidden activation (the neurons)", _mlp),
    SiteSpec(
        "ln2_post.scale",
        ("pos", "one"),
        "the post-MLP norm's divisor (Gemma 2)",
        lambda c: c.has_mlp and c.post_mlp_norm,
    ),
    SiteSpec(
        "ln2_post.normalized",
        ("pos", "d_model"),
        "normalised MLP output (Gemma 2)",
        lambda c: c.has_mlp and c.post_mlp_norm,
    ),
    SiteSpec("mlp_out", ("pos", "d_model"), "MLP output added to the residual stream", _mlp),
    SiteSpec("resid_post", ("pos", "d_model"), "residual stream out of the block"),
    SiteSpec("ln_final.scale", ("pos", "one"), "the final norm's divisor", lambda c: not c.post_norm, True),
    SiteSpec(
        "ln_final.normalized",
        ("pos", "d_model"),
        "the final normalised residual (what the unembedding reads)",
        lambda c: not c.post_norm,
        True,
    ),
)
"""Every site, in execution order."""

SITE_SPECS: dict[str, SiteSpec] = {spec.name: spec for spec in SITES}

TOP_LEVEL_SITES = tuple(spec.name for spec in SITES if spec.top_level)
"""Top-level (not per-layer) sites, in execution order."""

AXES: dict[str, tuple[str, ...]] = {
    "layer": ("layer",),
    "pos": ("pos", "query_pos"),
    "key_pos": ("key_pos",),
    "head": ("head", "kv_head"),
    "neuron": ("neuron",),
    "expert": ("expert",),
}
"""Intervention location field -> the dimension names it selects along."""

LOCATION_FIELDS = tuple(AXES)

POSITION_DIMS = AXES["pos"] + AXES["key_pos"]
"""Dimensions that index token positions."""

COMPONENT_DIMS = AXES["head"] + AXES["neuron"] + AXES["expert"]
"""Dimensions that index a model component (a head, a neuron, an expert)."""

DIM_FIELD: dict[str, str] = {dim: field for field, dims in AXES.items() for dim in dims}
"""Dimension name -> the location field that selects along it."""

PATTERN_SITES = tuple(spec.name for spec in SITES if spec.dims == ("head", "query_pos", "key_pos"))
"""Sites whose activation is ``[head, query_pos, key_pos]`` rather than per position."""


def layer_site_dims(cfg: ModelConfig) -> dict[str, tuple[str, ...]]:
    """Per-layer sites of a model, in execution order, with their dimension names."""
    return {s.name: s.dims_for(cfg) for s in SITES if not s.top_level and s.present(cfg)}


def top_level_site_dims(cfg: ModelConfig) -> dict[str, tuple[str, ...]]:
    """Top-level (not per-layer) sites of a model, in execution order, with their dimension names."""
    return {s.name: s.dims_for(cfg) for s in SITES if s.top_level and s.present(cfg)}


def site_meaning(name: str) -> str:
    """One-line meaning of a short site name."""
    return SITE_SPECS[name].meaning


def dim_sizes(cfg: ModelConfig, n_pos: int) -> dict[str, Any]:
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


def to_full_name(short: str, layer: Union[int, str, None] = None) -> str:
    """``("attn.z", 3) -> "blocks.3.attn.hook_z"``; ``"embed" -> "hook_embed"``."""
    parts = short.split(".")
    parts[-1] = "hook_" + parts[-1]
    name = ".".join(parts)
    return name if layer is None else f"blocks.{layer}.{name}"


_FULL = re.compile(r"^blocks\.(\d+)\.(.+)$")


# TransformerLens's ``utils.get_act_name`` shorthands: alias -> its name, and which
# sublayer a bare name lives in.
_TL_ACT_ALIASES = {
    "attn": "pattern",
    "attn_logits": "attn_scores",
    "key": "k",
    "query": "q",
    "value": "v",
    "mlp_pre": "pre",
    "mlp_mid": "mid",
    "mlp_post": "post",
}
_TL_ATTN = ("k", "v", "q", "z", "rot_k", "rot_q", "result", "pattern", "attn_scores")
_TL_MLP = ("pre", "post", "mid", "pre_linear")
_TL_LAYER_TYPES = {"a": "attn", "attention": "attn", "m": "mlp", "b": "", "block": "", "blocks": ""}
_TL_SHORTHAND = re.compile(r"([a-z]+)(\d+)([a-z]?.*)")

# TransformerLens sites that are copies of another stream, read only the sublayer that
# follows them (so patching them is not patching the stream): readable from a cache as
# the stream they copy, not intervention sites here.
TL_READ_ONLY = {
    "attn_in": "the attention input per head, resid_pre repeated over heads [pos, head, d_model]",
    "mlp_in": "the MLP input before ln2: resid_mid (resid_pre in a parallel block)",
}


def get_act_name(name: str, layer: Optional[int] = None, layer_type: Optional[str] = None) -> str:
    """TransformerLens's ``utils.get_act_name``: a full hook name from a shorthand.

    ``get_act_name("pattern", 5) -> "blocks.5.attn.hook_pattern"``,
    ``get_act_name("resid_pre", 3) -> "blocks.3.hook_resid_pre"``,
    ``get_act_name("scale", 2, "ln1") -> "blocks.2.ln1.hook_scale"``,
    ``get_act_name("scale") -> "ln_final.hook_scale"``, ``get_act_name("k6") ->
    "blocks.6.attn.hook_k"``; a full name comes back unchanged. The same translation as
    TransformerLens's (aliases ``attn``, ``query``, ``mlp_post``, ...; layer types ``a``,
    ``m``, ``ln1``, ...). Every name it returns for a site the model has is accepted by
    `parse_site`, caches and interventions."""
    if not isinstance(name, str):
        raise SiteError(f"get_act_name: name must be a string such as 'pattern' or 'resid_pre', got {name!r}")
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, (int, np.integer))):
        raise SiteError(f"get_act_name: layer must be an int or None, got {layer!r}")
    if ("." in name or name.startswith("hook_")) and layer is None and layer_type is None:
        return name
    match = _TL_SHORTHAND.fullmatch(name)
    if match is not None:  # "k6" -> ("k", 6), "scale4ln1" -> ("scale", 4, "ln1")
        name, layer, layer_type = match.group(1), int(match.group(2)), match.group(3) or None
    name = _TL_ACT_ALIASES.get(name, name)
    full = "" if layer is None else f"blocks.{int(layer)}."
    if name in _TL_ATTN:
        layer_type = "attn"
    elif name in _TL_MLP:
        layer_type = "mlp"
    elif layer_type in _TL_LAYER_TYPES:
        layer_type = _TL_LAYER_TYPES[layer_type]
    if layer_type:
        full += f"{layer_type}."
    full += f"hook_{name}"
    if name in ("scale", "normalized") and layer is None:
        full = f"ln_final.{full}"
    return full


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
                raise SiteError(
                    f"site {name!r}: layer {layer} out of range, the model has {cfg.n_layers} layers (0..{cfg.n_layers - 1})"
                )
            return Site(short, layer)
    elif short in per_layer or short in top:
        return Site(short, None)
    if short in TL_READ_ONLY:
        raise SiteError(
            f"site {name!r}: TransformerLens's hook_{short} is {TL_READ_ONLY[short]}, a copy only the next "
            f"sublayer reads. Read it from a cache (cache[{name!r}]); to intervene, use "
            + (
                "'ln1.normalized' (attention's normalised input) or 'resid_pre'"
                if short == "attn_in"
                else "'ln2.normalized' (the MLP's normalised input) or 'resid_mid'"
            )
            + "."
        )
    candidates = list(per_layer) + list(top) + full_names(cfg)
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise SiteError(
        f"unknown site {name!r} for this {cfg.family} model.{hint} "
        f"Valid short names: {', '.join(list(top) + list(per_layer))}."
    )


class SiteRow(NamedTuple):
    """One hook site of a model: short name, TransformerLens name, dims, shape."""

    short: str
    full_name: str  # with "{l}" for the layer of per-layer sites
    dims: tuple[str, ...]
    shape: tuple  # ints, with the symbol "pos" for the sequence axes


def site_rows(cfg: ModelConfig) -> list[SiteRow]:
    """Every site of a model in execution order, with its dims and shape for one layer
    (sequence axes left symbolic as ``"pos"``)."""
    sizes = {**dim_sizes(cfg, 0), "pos": "pos", "query_pos": "pos", "key_pos": "pos"}
    out = []
    for name, dims in top_level_site_dims(cfg).items():
        if name.startswith("ln_final"):
            continue  # listed after the blocks, where it runs
        out.append(SiteRow(name, to_full_name(name), dims, tuple(sizes[d] for d in dims)))
    for name, dims in layer_site_dims(cfg).items():
        out.append(SiteRow(name, to_full_name(name, "{l}"), dims, tuple(sizes[d] for d in dims)))
    for name, dims in top_level_site_dims(cfg).items():
        if name.startswith("ln_final"):
            out.append(SiteRow(name, to_full_name(name), dims, tuple(sizes[d] for d in dims)))
    return out


def is_top_level(short: str) -> bool:
    """Whether a short name is a top-level site (embeddings, final norm) rather than a per-layer one."""
    return short in TOP_LEVEL_SITES
