"""Causal techniques: activation patching (`patching`), attribution patching and EAP
(`attribution`), path patching (`path_patching`) and causal tracing (`causal_tracing`)."""

# The group's public modules (each has a page in the API reference).
__all__ = ["patching", "attribution", "path_patching", "causal_tracing"]
