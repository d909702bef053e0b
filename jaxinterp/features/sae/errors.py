"""The SAE room's error: bad SAE arguments, configurations and files."""

from __future__ import annotations

from jaxinterp.errors import JaxinterpError

__all__ = ["SAEError"]


class SAEError(JaxinterpError):
    """A bad SAE argument, configuration or file; the message names what and what was expected."""
