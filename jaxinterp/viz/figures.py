"""Matplotlib figures without pyplot: no global figure registry, no backend switching.

Every plotting function in `jaxinterp.viz` draws on a `matplotlib.figure.Figure` made
here (or on an Axes the caller passes) and can save it as PNG, so plotting is safe in
scripts, tests and threads alike.
"""

from __future__ import annotations

import base64
import io
from typing import Optional

from matplotlib.figure import Figure


def new_figure(width: float, height: float) -> Figure:
    """A figure ``width x height`` inches (capped at 24 x 18), not registered with pyplot."""
    return Figure(figsize=(min(max(width, 2.0), 24.0), min(max(height, 1.5), 18.0)), layout="constrained")


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """The figure rendered as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...``: an image embedded in HTML, no file or network."""
    if not png.startswith(b"\x89PNG"):
        raise ValueError("png_data_uri expects PNG bytes (they start with b'\\x89PNG')")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def save_figure(fig: Figure, path: Optional[str], dpi: int = 110) -> None:
    """Write the figure to ``path`` (PNG unless the suffix says otherwise); no-op for None."""
    if path:
        fig.savefig(str(path), dpi=dpi)
