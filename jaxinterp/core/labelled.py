"""`LabelledArray`: an array with named axes and per-axis labels (e.g. token strings).

What sweeps and attributions return. ``np.asarray(result)`` is the plain array; the
names and labels make printing and plotting self-explanatory::

    result.dims            # ("layer", "pos")
    result.labels["pos"]   # ["<bos>", "When", " Mary", ...]
    result.plot()          # heatmap with labelled axes
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .labels import token_labels


class LabelledArray:
    """A numpy array with axis names (``dims``) and optional labels per axis."""

    __array_priority__ = 10

    def __init__(self, values, dims: Sequence[str], labels: Optional[dict] = None, name: str = ""):
        self.values = np.asarray(values)
        self.dims = tuple(dims)
        if len(self.dims) != self.values.ndim:
            raise ValueError(f"{len(self.dims)} axis names {self.dims} for an array of shape {self.values.shape}")
        self.labels = {k: list(v) for k, v in (labels or {}).items() if v is not None}
        for dim, lab in self.labels.items():
            if dim not in self.dims:
                raise ValueError(f"labels for unknown axis {dim!r}; axes are {self.dims}")
            size = self.values.shape[self.dims.index(dim)]
            if len(lab) != size:
                raise ValueError(f"{len(lab)} labels for axis {dim!r} of size {size}")
        self.name = name

    def __array__(self, dtype=None, copy=None):
        return self.values if dtype is None else self.values.astype(dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape

    @property
    def ndim(self) -> int:
        return self.values.ndim

    def __getitem__(self, idx):
        return self.values[idx]

    def __repr__(self) -> str:
        dims = ", ".join(f"{d}={n}" for d, n in zip(self.dims, self.values.shape))
        return f"LabelledArray({self.name or 'values'}: {dims})\n{np.array2string(self.values, precision=3, max_line_width=120)}"

    def axis_labels(self, dim: str) -> list[str]:
        if dim in self.labels:
            return [str(x) for x in self.labels[dim]]
        return [str(i) for i in range(self.values.shape[self.dims.index(dim)])]

    def with_token_labels(
        self, tokens: Sequence[str], axes: Sequence[str] = ("pos", "query_pos", "key_pos")
    ) -> "LabelledArray":
        """A copy whose position axes (those of ``axes`` it has) are labelled with the
        prompt's tokens (``"3: Mary"``: the index keeps repeats apart)."""
        labels = dict(self.labels)
        for dim in self.dims:
            if dim in axes:
                labels[dim] = token_labels(tokens)
        return LabelledArray(self.values, self.dims, labels, self.name)

    def argmax(self) -> dict[str, int]:
        """The location of the largest value, as ``{axis name: index}``."""
        idx = np.unravel_index(int(np.argmax(self.values)), self.values.shape)
        return {d: int(i) for d, i in zip(self.dims, idx)}

    def plot(self, ax=None, title: Optional[str] = None, cmap: str = "RdBu", path: Optional[str] = None):
        """A heatmap (2-D) or bar chart (1-D) with labelled axes; diverging colours
        centred on zero. Saves to ``path`` if given. Returns the matplotlib Axes
        (`jaxinterp.viz.labelled_plot.plot_labelled`)."""
        from ..viz.labelled_plot import plot_labelled  # plots live in viz; loaded on use (matplotlib)

        return plot_labelled(self, ax=ax, title=title, cmap=cmap, path=path)
