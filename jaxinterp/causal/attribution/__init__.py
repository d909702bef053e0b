"""Gradient-based attribution: attribution patching (nodes) and edge attribution patching.

- `attribution_patch`: a first-order estimate of activation patching at every location
  of every requested site from one forward+backward (or integrated gradients).
- `edge_attribution_patch`: EAP / EAP-IG scores for every edge between heads, MLPs and
  embeddings (writers) and head q/k/v inputs, MLP inputs and logits (readers), with
  helpers that pick the top edges as a circuit.
- `attribution_cost` / `matmul_flops`: what they cost, in forward passes.
"""

from .cost import attribution_cost, matmul_flops
from .edges import Circuit, Edge, EdgeAttribution, edge_attribution_patch, edge_scores, graph_nodes, valid_edges
from .graph import Component, head_name, mlp_name, parse_component
from .nodes import attribution_patch, attribution_scores, default_over

__all__ = [
    "attribution_patch",
    "attribution_scores",
    "default_over",
    "edge_attribution_patch",
    "edge_scores",
    "graph_nodes",
    "valid_edges",
    "EdgeAttribution",
    "Edge",
    "Circuit",
    "Component",
    "parse_component",
    "head_name",
    "mlp_name",
    "attribution_cost",
    "matmul_flops",
]
