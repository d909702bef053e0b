"""`PatchGrid`: the set of single patches a sweep makes, from a site and the axes swept.

``over=("layer", "pos")`` on ``resid_pre`` means one patch per (layer, position): the
grid is the outer product of the swept axes, every other axis of the site is either
fixed to one index (``pos=-1``) or patched entirely. Each patch is described by one
integer per intervention location field (`jaxinterp.Patch`'s ``layer``, ``pos``,
``head``, ...), with ``-1`` standing for "every index" in the engines' data.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from ...core.config import ModelConfig
from ...core.errors import PatchingError
from ...core.sites import (
    AXES,
    DIM_FIELD,
    LOCATION_FIELDS,
    dim_sizes,
    layer_site_dims,
    parse_site,
    top_level_site_dims,
)

# Sweep axis name -> intervention location field. TransformerLens calls the query and
# key positions of an attention pattern "dest" and "src".
AXIS_FIELD = {**DIM_FIELD, "dest": "pos", "src": "key_pos"}

# Location field -> the site dimensions it selects along (`jaxinterp.core.sites.AXES`).
FIELD_DIMS = {field: dims for field, dims in AXES.items() if field != "layer"}

FIELDS = LOCATION_FIELDS


@dataclasses.dataclass(frozen=True, eq=False)
class PatchGrid:
    """All single patches of a sweep, in row-major order of the result grid.

    ``site``: short site name. ``dims`` / ``shape``: the result's axis names and sizes
    (the swept axes, in the order given). ``fields``: location field -> ``[n_patches]``
    int indices (non-negative), for fields that are swept or fixed; a field absent
    from ``fields`` covers its whole axis. ``start_pos``: ``[n_patches]`` the first
    position a patch can change (the query position for attention patterns, else the
    patched position, 0 when every position is patched).
    """

    site: str
    dims: tuple
    shape: tuple
    fields: dict
    swept: tuple  # the location field of each result axis
    start_pos: np.ndarray

    @property
    def n_patches(self) -> int:
        return int(np.prod(self.shape))

    @property
    def layer(self) -> np.ndarray:
        return self.fields["layer"]

    def subset(self, keep: np.ndarray) -> "PatchGrid":
        """The patches where ``keep`` (``[n_patches]`` bool) is True, as a flat grid."""
        n = int(keep.sum())
        return dataclasses.replace(
            self, shape=(n,), fields={f: v[keep] for f, v in self.fields.items()}, start_pos=self.start_pos[keep]
        )

    def engine_fields(self) -> dict:
        """Every location field as ``[n_patches]`` ints, ``-1`` for "whole axis"."""
        return {f: self.fields.get(f, np.full(self.n_patches, -1, np.int32)) for f in FIELDS}


def patch_grid(cfg: ModelConfig, n_pos: int, site: str, over, fixed: Optional[dict] = None) -> PatchGrid:
    """Build the grid of patches for ``site`` swept over the axes ``over``.

    ``fixed``: location field -> one index (negative counts from the end) for axes
    that are not swept, e.g. ``{"pos": -1}`` to patch neurons at the last position.
    """
    fixed = {k: v for k, v in (fixed or {}).items() if v is not None}
    parsed = parse_site(site, cfg)
    if parsed.name in top_level_site_dims(cfg):
        raise PatchingError(
            f"site {site!r} is not a per-layer site; activation patching sweeps per-layer sites such as "
            f"'resid_pre', 'attn_out', 'mlp_out', 'attn.z' (valid: {', '.join(layer_site_dims(cfg))})"
        )
    site_dims = layer_site_dims(cfg)[parsed.name]
    sizes = dim_sizes(cfg, n_pos)
    if parsed.layer is not None:
        if "layer" in fixed:
            raise PatchingError(f"site {site!r} already names layer {parsed.layer}; do not also pass layer=")
        fixed["layer"] = parsed.layer

    if isinstance(over, str):
        over = (over,)
    over = tuple(over)
    if not over:
        raise PatchingError("over= needs at least one axis to sweep, e.g. ('layer', 'pos')")

    def field_size(field: str, axis: str) -> int:
        if field == "layer":
            return cfg.n_layers
        dims = [d for d in site_dims if d in FIELD_DIMS[field]]
        if not dims:
            valid = ["layer"] + [
                a for a, f in AXIS_FIELD.items() if f != "layer" and any(d in FIELD_DIMS[f] for d in site_dims)
            ]
            raise PatchingError(
                f"site {parsed.name!r} has axes {site_dims}: it cannot be patched by {axis!r}. "
                f"Axes this site can be swept over: {', '.join(dict.fromkeys(valid))}"
            )
        return sizes[dims[0]]

    swept, shape = [], []
    for axis in over:
        if axis not in AXIS_FIELD:
            raise PatchingError(f"unknown sweep axis {axis!r}; known axes: {', '.join(AXIS_FIELD)}")
        field = AXIS_FIELD[axis]
        if field in swept:
            raise PatchingError(f"over={over} sweeps the {field!r} location twice")
        if field in fixed:
            raise PatchingError(f"{field}= is fixed to {fixed[field]} but over={over} also sweeps it")
        swept.append(field)
        shape.append(field_size(field, axis))

    values = {}
    for field, index in fixed.items():
        if field not in FIELDS:
            raise PatchingError(f"unknown location {field!r}; locations are {', '.join(FIELDS)}")
        size = field_size(field, field)
        if not isinstance(index, (int, np.integer)):
            raise PatchingError(f"{field}= takes one int index (or None for the whole axis), got {index!r}")
        if not -size <= index < size:
            raise PatchingError(f"{field}={index} is out of range for an axis of size {size}")
        values[field] = int(index) % size

    if "layer" not in swept and "layer" not in values:
        raise PatchingError(
            "a sweep patches one layer at a time: include 'layer' in over= (e.g. over=('layer', 'pos')) or fix layer="
        )

    grids = np.meshgrid(*[np.arange(s, dtype=np.int32) for s in shape], indexing="ij")
    n = int(np.prod(shape))
    fields = {f: g.reshape(-1) for f, g in zip(swept, grids)}
    fields.update({f: np.full(n, v, np.int32) for f, v in values.items()})
    start_pos = fields["pos"] if "pos" in fields else np.zeros(n, np.int32)
    return PatchGrid(parsed.name, over, tuple(shape), fields, tuple(swept), start_pos.astype(np.int32))
