"""Readable token labels for plot axes and HTML."""

from __future__ import annotations

from typing import Sequence

_VISIBLE = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def visible_token(token: str) -> str:
    """A token string with control whitespace spelled out (``"\\n"``) so it shows on an axis."""
    return "".join(_VISIBLE.get(ch, ch) for ch in str(token))


def token_labels(tokens: Sequence[str], index: bool = True) -> list[str]:
    """Axis labels for a token sequence: ``"3: Mary"`` (the index keeps repeats apart)."""
    return [f"{i}: {visible_token(t)}" if index else visible_token(t) for i, t in enumerate(tokens)]
