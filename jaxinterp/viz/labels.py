"""Readable token labels (`jaxinterp.core.labels`, re-exported for plotting code)."""

from ..core.labels import token_labels, visible_token

__all__ = ["token_labels", "visible_token"]
