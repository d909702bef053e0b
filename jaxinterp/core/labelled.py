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

    def argmax(self) -> dict[str, int]:
        """The location of the largest value, as ``{axis name: index}``."""
        idx = np.unravel_index(int(np.argmax(self.values)), self.values.shape)
        return {d: int(i) for d, i in zip(self.dims, idx)}

    def plot(self, ax=None, title: Optional[str] = None, cmap: str = "RdBu", path: Optional[str] = None):
        """A heatmap (2-D) or bar chart (1-D) with labelled axes; diverging colours
        centred on zero. Saves to ``path`` if given. Returns the matplotlib Axes."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        vals = self.values
        if vals.ndim > 2:
            raise ValueError(f"plot() draws 1-D or 2-D arrays; this one has axes {self.dims}: index it first")
        if ax is None:
            w = 2.5 + 0.45 * (vals.shape[-1] if vals.ndim == 2 else 1)
            h = 2 + 0.28 * (vals.shape[0] if vals.ndim == 2 else 6)
            _, ax = plt.subplots(figsize=(min(w, 18), min(h, 14)))
        if vals.ndim == 1:
            ax.bar(range(len(vals)), vals)
            ax.set_xticks(range(len(vals)), self.axis_labels(self.dims[0]), rotation=90)
            ax.set_xlabel(self.dims[0])
        else:
            lim = float(np.nanmax(np.abs(vals))) or 1.0
            im = ax.imshow(vals, cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
            ax.figure.colorbar(im, ax=ax)
            ax.set_yticks(range(vals.shape[0]), self.axis_labels(self.dims[0]))
            ax.set_xticks(range(vals.shape[1]), self.axis_labels(self.dims[1]), rotation=90)
            ax.set_ylabel(self.dims[0])
            ax.set_xlabel(self.dims[1])
        ax.set_title(title or self.name)
        if path:
            ax.figure.tight_layout()
            ax.figure.savefig(path, dpi=120)
        return ax
