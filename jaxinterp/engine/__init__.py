"""Sweep machinery shared by the techniques: memory-bounded vmapped chunks over locations
(optionally sharded over a mesh), and gradients of a metric w.r.t. sites."""

# The group's public modules (each has a page in the API reference).
__all__ = ["sweep", "grads"]
