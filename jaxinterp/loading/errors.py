"""Errors raised while loading checkpoints."""


class CheckpointError(ValueError):
    """A checkpoint that does not match what the architecture needs: missing,
    unexpected or mis-shaped tensors, a corrupt file, or an unsupported architecture."""


class UnsupportedArchitectureError(CheckpointError):
    """A checkpoint of an architecture (HF ``model_type`` or GGUF ``general.architecture``)
    that jaxinterp cannot load; the message lists the supported ones."""
