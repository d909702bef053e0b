"""Reading weights and activations: circuits and factored matrices, head detectors,
lenses, the embedding-space view, and weight processing."""

# The group's public modules (each has a page in the API reference).
__all__ = ["circuits", "factored_matrix", "detectors", "lens", "embedding_space", "processing"]
