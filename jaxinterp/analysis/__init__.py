"""Reading weights and activations: circuits and factored matrices, head detectors,
lenses, the embedding-space view, and weight processing."""
