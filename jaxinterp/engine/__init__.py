"""Sweep machinery shared by the techniques: memory-bounded vmapped chunks over locations
(optionally sharded over a mesh, optionally checkpointed to a directory and resumable),
gradients of a metric w.r.t. sites, and JAX's persistent compilation cache."""

# The group's public modules (each has a page in the API reference).
__all__ = ["sweep", "grads", "checkpoint", "compile_cache"]
