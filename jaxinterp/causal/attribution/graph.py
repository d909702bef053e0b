"""Names of a transformer's computational-graph nodes, shared by edge attribution,
path patching and circuit evaluation.

Upstream nodes (what writes to the residual stream): ``"embed"`` (the summed input
embeddings), ``"a{l}.h{h}"`` (head ``h`` of layer ``l``: its ``z @ W_O``) and ``"m{l}"``
(the MLP of layer ``l``). Downstream nodes (what reads it): a head's query, key and
value inputs ``"a{l}.h{h}.q"``, ``"a{l}.h{h}.k"``, ``"a{l}.h{h}.v"`` (with grouped-query
attention keys and values belong to key/value heads: ``"a{l}.kv{g}.k"``), an MLP's
input ``"m{l}"`` and the final residual stream ``"logits"``.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Optional

__all__ = ["Component", "parse_component", "head_name", "mlp_name"]


class Component(NamedTuple):
    """A node: ``kind`` is ``"embed"``, ``"head"``, ``"kv_head"``, ``"mlp"`` or ``"logits"``;
    ``input`` is ``"q"``/``"k"``/``"v"`` for a head's input, else None."""

    kind: str
    layer: Optional[int] = None
    index: Optional[int] = None  # type: ignore[assignment]  # shadows tuple.index, as NamedTuple fields may
    input: Optional[str] = None

    @property
    def name(self) -> str:
        if self.kind in ("embed", "logits"):
            return self.kind
        if self.kind == "mlp":
            return mlp_name(self.layer)
        base = f"a{self.layer}.{'h' if self.kind == 'head' else 'kv'}{self.index}"
        return base if self.input is None else f"{base}.{self.input}"


def head_name(layer: int, head: int, input: Optional[str] = None) -> str:
    """The node name of a head (``"a3.h2"``), or of its ``"q"``/``"k"``/``"v"`` input (``"a3.h2.q"``)."""
    return Component("head", layer, head, input).name


def mlp_name(layer: int) -> str:
    """The node name of a layer's MLP (``"m5"``)."""
    return f"m{layer}"


_HEAD = re.compile(r"^a(\d+)\.(h|kv)(\d+)(?:\.([qkv]))?$")
_MLP = re.compile(r"^m(\d+)$")


def parse_component(name: str, cfg=None) -> Component:
    """Parse ``"a3.h2"``, ``"a3.h2.q"``, ``"a3.kv1.k"``, ``"m5"``, ``"embed"``, ``"logits"``;
    with ``cfg``, check the layer and head exist."""
    if not isinstance(name, str):
        raise ValueError(f"node names are strings like 'a3.h2' or 'm5', got {name!r}")
    if name in ("embed", "logits"):
        return Component(name)
    m = _HEAD.match(name)
    if m:
        comp = Component("head" if m.group(2) == "h" else "kv_head", int(m.group(1)), int(m.group(3)), m.group(4))
    else:
        m = _MLP.match(name)
        if not m:
            raise ValueError(
                f"unknown node {name!r}: expected 'embed', 'logits', 'a<layer>.h<head>' (optionally "
                f"'.q'/'.k'/'.v'), 'a<layer>.kv<kv_head>.k'/'.v' or 'm<layer>'"
            )
        comp = Component("mlp", int(m.group(1)))
    if cfg is not None:
        if not 0 <= comp.layer < cfg.n_layers:
            raise ValueError(f"node {name!r}: layer {comp.layer} out of range 0..{cfg.n_layers - 1}")
        n = cfg.n_heads if comp.kind == "head" else cfg.n_kv_heads
        if comp.kind in ("head", "kv_head") and comp.index is not None and not 0 <= comp.index < n:
            raise ValueError(f"node {name!r}: {comp.kind} {comp.index} out of range 0..{n - 1}")
        if comp.kind == "mlp" and not cfg.has_mlp:
            raise ValueError(f"node {name!r}: this model has no MLPs (attn_only)")
    return comp
