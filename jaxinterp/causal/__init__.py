"""Causal techniques: activation patching (`patching`), attribution patching and EAP
(`attribution`), path patching (`path_patching`) and causal tracing (`causal_tracing`)."""
