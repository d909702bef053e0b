"""One error family: every error jaxinterp raises for a bad argument or a bad file is a
`JaxinterpError`, whose message names what is wrong and what was expected."""

from __future__ import annotations

__all__ = ["JaxinterpError"]


class JaxinterpError(ValueError):
    """Base of every jaxinterp error (a `ValueError`, so ``except ValueError`` keeps working)."""
